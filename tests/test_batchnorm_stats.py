"""Built-in teachers without a weights file get BatchNorm statistics measured on real frames, so
their output depends on their input (torchvision's random init alone gives DeepLabV3 the same
output on every frame)."""

import torch
from torch import nn

from nas.data import load_frames, open_video
from nas.teachers import load_teacher
from nas.teachers.batchnorm_stats import CLIP, FRAMES, STRIDE, _frames
from nas.teachers.weights import weights_id


def _inputs(teacher, size):
    frames = load_frames(open_video("sample:bikes", max_frames=2, stride=40), size=size).frames
    return teacher.input_spec.normalize(frames)


def test_the_random_teacher_responds_to_its_input():
    teacher = load_teacher("deeplabv3")
    seen = []
    head = teacher.module.classifier[4]
    hook = head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        out = teacher(_inputs(teacher, (128, 128)))
    hook.remove()
    # Without measured statistics the head's input is about 1e-10 and its output its bias.
    assert seen[0].abs().mean() > 1e-2
    flipped = (out[0].argmax(0) != out[1].argmax(0)).float().mean()
    assert flipped > 0.05


def test_running_statistics_are_those_of_each_batchnorms_input_on_the_clip_frames():
    teacher = load_teacher("deeplabv3")
    norms = {n: m for n, m in teacher.module.named_modules() if isinstance(m, nn.BatchNorm2d)}
    moments = {}

    def keep(name):
        def hook(module, args):
            x = args[0].double()
            moments[name] = (x.mean((0, 2, 3)), x.transpose(0, 1).flatten(1).var(1, correction=0))

        return hook

    hooks = [m.register_forward_pre_hook(keep(n)) for n, m in norms.items()]
    frames = _frames(tuple(teacher.input_spec.default_size))
    assert len(frames) == FRAMES
    with torch.no_grad():  # eval mode, as measured: every BatchNorm sees what it saw then
        teacher(teacher.input_spec.normalize(frames))
    for hook in hooks:
        hook.remove()
    assert len(moments) == len(norms) > 40
    for name, norm in norms.items():
        mean, var = moments[name]
        scale = var.mean().sqrt()  # float32 sums against float64 ones: relative to the spread
        torch.testing.assert_close(norm.running_mean.double(), mean, rtol=0, atol=1e-5 * scale)
        torch.testing.assert_close(norm.running_var.double(), var, rtol=1e-4, atol=1e-5 * scale)


def test_a_weights_file_keeps_its_own_statistics(tmp_path):
    teacher = load_teacher("lraspp_mobilenet_v3_large", num_classes=3)
    state = teacher.module.state_dict()
    marked = next(k for k in state if k.endswith("running_mean"))
    state[marked] = torch.full_like(state[marked], 7.0)
    path = tmp_path / "teacher.pt"
    torch.save(state, path)
    loaded = load_teacher("lraspp_mobilenet_v3_large", weights=path)
    assert torch.equal(loaded.module.state_dict()[marked], state[marked])
    assert loaded.weights_id == weights_id(path) != teacher.weights_id
    assert teacher.weights_id == f"init:seed=0;bn-stats:{CLIP}:{FRAMES}/{STRIDE}"
