"""Shared fixtures: tiny teachers and a runner for the real `nas` command."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]


class TinySegNet(nn.Module):
    """A small conv net with the shapes of a segmentation teacher (BN, depthwise, dilation)."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8)
        )
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.dilated = nn.Conv2d(16, 16, 3, padding=2, dilation=2)
        self.head = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = torch.relu(self.stem(x))
        x = torch.relu(self.pw(self.dw(x)))
        x = torch.relu(self.dilated(x))
        return nn.functional.interpolate(self.head(x), size=size, mode="bilinear")


def build_tiny(num_classes: int = 3) -> TinySegNet:
    """A `module:callable` factory for tests: `tests.conftest:build_tiny`."""
    generator_state = torch.random.fork_rng(devices=[])
    with generator_state:
        torch.manual_seed(0)
        return TinySegNet(num_classes)


@pytest.fixture(scope="module")
def teachers():
    """Teachers by (name, device), each built once per test module."""
    from nas.teachers import load_teacher

    built = {}

    def get(name: str, device: str = "cpu"):
        if (name, device) not in built:
            built[name, device] = load_teacher(name, device=device)
        return built[name, device]

    return get


@pytest.fixture
def tiny_net() -> TinySegNet:
    return build_tiny()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_nas(tmp_path):
    """Run the installed `nas` command in a subprocess, as a user would."""

    def run(*args: str, timeout: float = 300) -> Result:
        env = dict(os.environ, NAS_CACHE_DIR=str(tmp_path / "cache"), COLUMNS="200")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        proc = subprocess.run(
            [sys.executable, "-m", "nas", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=tmp_path,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


class NanNet(TinySegNet):
    """A teacher whose outputs are NaN: a search on it must stop, not export."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * float("nan")


def build_nan() -> NanNet:
    """A `module:callable` factory for tests: `tests.conftest:build_nan`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return NanNet()


def tiny_multi_output_onnx(path: Path) -> Path:
    """A small ONNX saliency net with two outputs, written to `path`: the fused map first (a
    sigmoid, upsampled by a `Resize` whose scales onnx2torch reads at run time, as U²-Net's
    graph does), then a half-resolution side output."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4,
                         strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], kernel_shape=[1, 1]),
        helper.make_node("Resize", ["c3", "", "scales"], ["up"], mode="linear"),
        helper.make_node("Sigmoid", ["up"], ["fused"]),
        helper.make_node("Conv", ["r2", "w4"], ["c4"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["c4"], ["side"]),
    ]  # fmt: skip
    inits = [weight("w1", 8, 3, 3, 3), weight("w2", 8, 8, 3, 3), weight("w3", 1, 8, 1, 1)]
    inits += [weight("w4", 1, 8, 1, 1)]
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales"))
    dims = ["N", 3, "H", "W"]
    graph = helper.make_graph(
        nodes,
        "tiny_multi_output",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [
            helper.make_tensor_value_info("fused", TensorProto.FLOAT, ["N", 1, "H", "W"]),
            helper.make_tensor_value_info("side", TensorProto.FLOAT, ["N", 1, "h", "w"]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def build_multi_output():
    """A `module:callable` factory for tests: `tests.conftest:build_multi_output`, returning the
    tiny two-output ONNX net as a `Teacher` through `onnx_teacher`, ImageNet-normalised, as a
    user would wrap their own exported model."""
    import tempfile

    from nas.teachers.base import IMAGENET, InputSpec
    from nas.teachers.onnx import onnx_teacher

    folder = Path(tempfile.mkdtemp(prefix="nas-multi-output-"))
    return onnx_teacher(
        tiny_multi_output_onnx(folder / "tiny.onnx"),
        name="tiny_multi_output",
        input_spec=InputSpec(**IMAGENET, size_multiple=8, default_size=(64, 96)),
    )


TINY_SEARCH = dict(
    teacher="tests.conftest:build_tiny",
    video="synthetic:frames=24,size=64x96",
    input_size="64x96",
    max_frames=24,
    steps=6,
    val_batches=2,
    device="cpu",
    threads=1,
)


def uniform_spec(run, path: Path, candidate: str | None) -> Path:
    """The spec, saved to `path`, of a prepared search (`nas.searching.pipeline.prepare`) with every
    layer at `candidate` (None: each layer's cheapest candidate other than `zero`)."""
    from nas.searching.make_spec import make_spec
    from nas.spec import save_spec

    picks = {}
    for layer, costs in run.macs.candidates.items():
        names = sorted(costs, key=costs.get)
        picks[layer] = candidate or next(n for n in names if n != "zero")
    spec = make_spec(
        run.teacher, run.layers, picks, run.macs, run.budget, run.size, run.options, {}
    )
    return save_spec(spec, path)


# Real services (.ci/services, started by `make test`; see tests/services.py). Skipped locally
# when missing, failed under CI.


@pytest.fixture
def postgres_db():
    """A fresh, empty PostgreSQL database for this test (a ``postgresql+psycopg://`` URL, as
    SQLAlchemy and Optuna's RDBStorage want it), dropped after the test."""
    from tests.services import postgres_url, temporary_database

    with temporary_database(postgres_url()) as url:
        yield url


@pytest.fixture
def chromium() -> str:
    """The path of Debian's headless-capable Chromium, for `tests.services.open_page`."""
    from tests.services import chromium_path

    return chromium_path()
