"""The teacher zoo: every entry builds, says how to feed and read it, and loads weights safely."""

import hashlib

import pytest
import torch

from nas.core.errors import NasError
from nas.graph.trace import traced_forward
from nas.teachers import TEACHERS, OutputKind, load_teacher
from nas.teachers.base import select_output
from nas.teachers.weights import weights_id


@pytest.mark.parametrize("name", TEACHERS.names())
def test_every_registered_teacher(name):
    teacher = load_teacher(name, device="meta")
    spec = teacher.input_spec
    assert not teacher.module.training
    assert all(h % spec.size_multiple == 0 for h in spec.default_size)
    assert len(spec.mean) == len(spec.std) == 3 and min(spec.std) > 0
    out, _ = traced_forward(teacher.module, (1, 3, *spec.default_size), torch.no_grad)
    out = select_output(out, teacher.output_key)
    if teacher.output_kind is OutputKind.IMAGE_LOGITS:
        assert tuple(out.shape) == (1, teacher.num_classes)
    else:
        assert tuple(out.shape) == (1, teacher.num_classes, *spec.default_size)
        assert (teacher.output_kind is OutputKind.PROB_MAP) == (teacher.num_classes == 1)


def test_aliases_resolve():
    assert load_teacher("deeplabv3", device="meta").name == "deeplabv3_mobilenet_v3_large"
    assert load_teacher("ppocr", device="meta").name == "ppocrv4_det"
    assert load_teacher("u2net", device="meta").name == "u2netp"


def test_unknown_teacher_lists_known():
    with pytest.raises(NasError) as info:
        load_teacher("resnet9000")
    message = str(info.value)
    assert (
        "deeplabv3_resnet50" in message and "onnx:PATH" in message and "module:callable" in message
    )


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = load_teacher("lraspp_mobilenet_v3_large")
    b = load_teacher("lraspp_mobilenet_v3_large")
    assert torch.rand(1) == expected
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.module.state_dict().values(), b.module.state_dict().values(), strict=True)
    )
    assert a.weights_id == weights_id(None) and a.weights_id.startswith("init:seed=0;")


def test_call_returns_the_main_output_only():
    teacher = load_teacher("lraspp_mobilenet_v3_large", num_classes=4)
    with torch.no_grad():
        out = teacher(torch.randn(1, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 4, 64, 64)


@pytest.fixture(scope="module")
def lraspp_weights(tmp_path_factory):
    """A torchvision-format checkpoint: a different seed than the zoo's, 5 classes."""
    torch.manual_seed(7)
    state = load_teacher("lraspp_mobilenet_v3_large", num_classes=5).module.state_dict()
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path_factory.mktemp("weights") / "lraspp.pth"
    torch.save(state, path)
    return path, state


def test_weights_load_exactly_and_infer_classes(lraspp_weights):
    path, state = lraspp_weights
    teacher = load_teacher("lraspp_mobilenet_v3_large", weights=path)
    assert teacher.num_classes == 5
    assert all(torch.equal(teacher.module.state_dict()[k], v) for k, v in state.items())
    assert teacher.weights_id == hashlib.sha256(path.read_bytes()).hexdigest()


def test_wrapped_checkpoint_and_aux_keys(tmp_path):
    """Reference-script checkpoints ({"model": ...}) load; aux keys are dropped without --aux."""
    with_aux = load_teacher("deeplabv3", aux=True, num_classes=3, device="meta")
    state = {k: torch.zeros(v.shape) for k, v in with_aux.module.state_dict().items()}
    assert any(k.startswith("aux_classifier.") for k in state)
    path = tmp_path / "ckpt.pth"
    torch.save({"model": state, "epoch": 3}, path)
    teacher = load_teacher("deeplabv3", weights=path, device="meta")
    assert teacher.num_classes == 3
    assert not any(n.startswith("aux_classifier") for n, _ in teacher.module.named_children())


def test_weights_for_another_architecture_name_the_keys(lraspp_weights):
    path, _ = lraspp_weights
    with pytest.raises(NasError) as info:
        load_teacher("deeplabv3", weights=path)
    message = str(info.value)
    assert "\n" not in message and "does not fit teacher deeplabv3_mobilenet_v3_large" in message
    assert "missing keys: " in message and "unexpected keys: classifier.cbr" in message


def test_shape_mismatch_named(lraspp_weights):
    path, _ = lraspp_weights
    with pytest.raises(
        NasError, match=r"shape mismatch: classifier\.low_classifier\.weight \(5, 40, 1, 1\) vs"
    ):
        load_teacher("lraspp_mobilenet_v3_large", weights=path, num_classes=7)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_unreadable_weights(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(NasError, match=r"cannot read weights file .*expected a state dict"):
        load_teacher("deeplabv3", weights=path)


def test_missing_weights_file(tmp_path):
    with pytest.raises(NasError, match=r"does not exist"):
        load_teacher("deeplabv3", weights=tmp_path / "nope.pth")


def test_pickled_code_is_refused(tmp_path):
    """weights_only=True: a checkpoint that would run code on load is refused, not executed."""
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "hook": print}, path)
    with pytest.raises(NasError, match="cannot read weights file"):
        load_teacher("deeplabv3", weights=path)


def test_module_callable_teacher():
    teacher = load_teacher("tests.conftest:build_tiny")
    assert teacher.output_kind is OutputKind.PIXEL_LOGITS and teacher.num_classes == 3
    assert not teacher.module.training
    teacher7 = load_teacher("tests.conftest:build_tiny", num_classes=7)
    assert teacher7.num_classes == 7


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.conftest:nope", "has no callable 'nope'"),
        ("no_such_module_xyz:build", "cannot import module 'no_such_module_xyz'"),
        ("tests.conftest:REPO", "is not callable"),
    ],
)
def test_module_callable_errors(target, message):
    with pytest.raises(NasError, match=message):
        load_teacher(target)
