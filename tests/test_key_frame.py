"""An inference key frame keeps only what the delta frames read (nothing for a `full` layer,
the output alone for a `zero` one, the output and the pooled input for a half-resolution one)
and runs in place the activations whose input is not kept; every output stays what a key frame
that keeps everything gives (bitwise, but for the pooled layers' float rounding)."""

import pytest
import torch

from nas.delta.liveness import NO_CHANGE
from nas.delta.model import DeltaModel, Phase
from nas.graph.layers import layer_graph
from search_spaces import build_candidate
from tests.delta_models import delta_model

SIZE = (64, 96)
ZEROS = {"backbone.5.block.3.0", "backbone.9.block.2.0", "classifier.0.convs.2.0"}
LOWRANK = {"backbone.7.block.0.0", "backbone.13.block.3.0", "classifier.0.project.0"}
DOWN = {"backbone.4.block.0.0", "backbone.14.block.3.0", "classifier.0.convs.1.0"}


def _pick(path: str, down: bool = False) -> str:
    if path in ZEROS:
        return NO_CHANGE
    if down and path in DOWN:
        return "down2_lowrank_r8"
    return "lowrank_r4" if path in LOWRANK or path.startswith("classifier.4") else "full"


def _model(teacher, *, replay: bool, down: bool = False) -> DeltaModel:
    picks = {layer.path: _pick(layer.path, down) for layer in layer_graph(teacher.module, SIZE)}
    return delta_model(teacher, picks, SIZE, replay=replay)


def _frames(memory_format):
    g = torch.Generator().manual_seed(1)
    key = torch.randn(1, 3, *SIZE, generator=g)
    frames = [key] + [key + 0.3 * torch.randn(1, 3, *SIZE, generator=g) for _ in range(3)]
    return [x.to(memory_format=memory_format) for x in frames]


def _features(model):
    """The backbone's last features on every frame, to check that delta frames change them."""
    seen = []
    model.net.get_submodule("backbone.16").register_forward_hook(
        lambda m, a, out: seen.append(out.clone())
    )
    return seen


def _run(model, frames, *, inference_key: bool):
    """Two key frames, each followed by delta frames; the key frames in inference mode or not
    (outside it a key frame keeps every layer's input and output)."""
    outputs = []
    for key, deltas in ((frames[0], frames[1:]), (frames[1], frames[2:])):
        with torch.inference_mode(inference_key):
            outputs.append(model.key_frame(key).clone())
        with torch.inference_mode():
            outputs += [model.delta_frame(x).clone() for x in deltas]
    return outputs


@pytest.mark.parametrize("replay", [False, True])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_inference_key_frame_keeps_less_and_changes_no_output(teachers, replay, memory_format):
    teacher = teachers("deeplabv3")
    frames = _frames(memory_format)
    reference = _model(teacher, replay=replay).to(memory_format=memory_format)
    model = _model(teacher, replay=replay).to(memory_format=memory_format)
    inplace_runs = []  # (path, whether it ran in place) on key frames
    first = model.delta_convs()[0][1]

    def note(module, args, out, path):
        if first.phase is Phase.KEY:
            inplace_runs.append((path, module.inplace))

    for path, sub in model.net.named_modules():
        if sub in model._inplace:
            sub.register_forward_hook(lambda m, a, o, p=path: note(m, a, o, p))

    seen_reference, seen = _features(reference), _features(model)

    expected = _run(reference, frames, inference_key=False)
    inplace_runs.clear()
    got = _run(model, frames, inference_key=True)

    assert len(got) == 7
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert len(seen) == len(seen_reference) >= 7
    assert all(torch.equal(a, b) for a, b in zip(seen_reference, seen, strict=True))
    assert not torch.equal(seen[-1], seen[-2])  # the delta frames do predict a change
    for layer, conv in model.delta_convs():
        kind = _pick(layer.path)
        assert (conv.a_key is None) == (kind in ("full", NO_CHANGE)), layer.path
        assert (conv.z_key is None) == (kind == "full"), layer.path
    for layer, conv in reference.delta_convs():
        assert conv.a_key is not None and conv.z_key is not None, layer.path
    ran_in_place = {path for path, inplace in inplace_runs if inplace}
    assert ran_in_place and len(ran_in_place) < len({path for path, _ in inplace_runs})
    # The activation after a kept output (a low-rank layer's) must not write into it.
    assert "backbone.7.block.0.2" not in ran_in_place


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_half_resolution_layers_keep_the_pooled_input(teachers, memory_format):
    teacher = teachers("deeplabv3")
    frames = _frames(memory_format)
    reference = _model(teacher, replay=True, down=True).to(memory_format=memory_format)
    model = _model(teacher, replay=True, down=True).to(memory_format=memory_format)
    seen_reference, seen = _features(reference), _features(model)
    expected = _run(reference, frames, inference_key=False)
    got = _run(model, frames, inference_key=True)
    for a, b in zip(expected + seen_reference, got + seen, strict=True):
        # pool(a) - pool(a_k) against pool(a - a_k): float32 rounding, at the tensor's scale
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().amax()))
    assert not torch.equal(seen[-1], seen[-2])
    for layer, conv in model.delta_convs():
        if layer.path in DOWN:
            assert conv.a_key is None and conv.z_key is not None
            assert conv.pooled_key.shape[-2:] == tuple(-(-n // 2) for n in layer.in_hw)
        else:
            assert conv.pooled_key is None


def test_training_needs_a_key_frame_run_outside_inference_mode(teachers):
    teacher = teachers("deeplabv3")
    model = _model(teacher, replay=False)
    frames = _frames(torch.contiguous_format)
    with torch.inference_mode():
        model.key_frame(frames[0])
    with pytest.raises(RuntimeError, match="run it outside to train"):
        model.delta_frame(frames[1])


class _ReluFirst(torch.nn.Module):
    """An in-place activation on the network's input itself."""

    def __init__(self) -> None:
        super().__init__()
        self.act = torch.nn.ReLU(inplace=True)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(x))


def test_inference_frames_never_write_into_the_frame():
    net = _ReluFirst().eval()
    layers = layer_graph(net, (16, 16))
    model = DeltaModel.build(
        net, layers, lambda layer, conv: build_candidate("lowrank_r2", layer, weight=conv.weight)
    )
    g = torch.Generator().manual_seed(0)
    frames = [torch.randn(1, 3, 16, 16, generator=g) for _ in range(2)]
    before = [frame.clone() for frame in frames]
    with torch.inference_mode():
        out = model.key_frame(frames[0])
        model.delta_frame(frames[1])
    assert all(torch.equal(a, b) for a, b in zip(frames, before, strict=True))
    assert torch.allclose(out, net.conv(torch.relu(before[0])), atol=1e-6)


def test_delta_frames_hand_on_kept_outputs_without_copies(teachers):
    """After an inference key frame, a `zero` layer's delta output is its kept key output itself
    (no copy: the key frame's tensors are guarded from the in-place activations) unless the
    network changes it in place; what the caller gets is never a kept tensor."""
    teacher = teachers("deeplabv3")
    model = _model(teacher, replay=False)
    frames = _frames(torch.contiguous_format)
    handed = {}
    for layer, conv in model.delta_convs():
        if layer.path in ZEROS:
            conv.register_forward_hook(
                lambda m, a, out, p=layer.path: handed.__setitem__(p, (out, m.z_key))
            )
    with torch.inference_mode():
        model.key_frame(frames[0])
        handed.clear()
        out = model.delta_frame(frames[1])
        again = model.delta_frame(frames[1])
    assert set(handed) == ZEROS
    # a layer whose output the network changes in place (`out += identity`) must copy it
    plain = {layer.path for layer, conv in model.delta_convs() if not conv.copy_cache} & ZEROS
    assert plain and all(handed[p][0] is handed[p][1] for p in plain)
    assert all(handed[p][0] is not handed[p][1] for p in ZEROS - plain)
    assert torch.equal(out, again)  # nothing kept was written into by the first delta frame
