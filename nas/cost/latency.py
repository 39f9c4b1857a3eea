"""Measured latency: warm-up, then the median of repeats, with the thread count fixed.

Per-layer latencies are kept in a look-up table on disk, one JSON file per device (its model
name and thread count), keyed by each op's canonical string and input shape, so a layer is
timed once per device and input size.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nas.core.errors import NasError
from nas.core.io import atomic_write_json, cache_dir
from nas.core.layout import in_layout
from nas.graph.layers import ConvLayer, conv_for


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median and the spread of `repeats` timed calls after warm-up."""

    median: float
    low: float  # fastest call
    high: float  # slowest call
    repeats: int
    device: str
    threads: int


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_device(name: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:N`, checked against what this machine has."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise NasError(f"unknown device '{name}': expected cpu, cuda or cuda:N") from exc
    if device.type not in ("cpu", "cuda"):
        raise NasError(f"unsupported device '{name}': expected cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NasError(f"device '{name}' is not available here (no CUDA): use --device cpu")
    return device


def resolve_device(name: str | None) -> torch.device:
    """`parse_device`, with None meaning CUDA when it is available, else the CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return parse_device(name)


@contextmanager
def fixed_threads(threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so a clock reads what it ran."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[], object],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    threads: int | None = None,
) -> Timing:
    """Time `fn()`: `warmup` untimed calls, then `repeats` timed ones (device synchronised)."""
    device = torch.device(device)
    threads = threads or default_threads()
    times = []
    with fixed_threads(threads), torch.inference_mode():
        for _ in range(warmup):
            fn()
        sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), min(times), max(times), repeats, str(device), threads)


def time_module(
    module: nn.Module,
    input_shape: tuple[int, ...],
    *,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    **kw,
) -> Timing:
    """Latency of one forward pass of `module` on a random input of `input_shape`;
    `channels_last`: module (converted in place) and input in that layout."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(input_shape, generator=generator).to(device)
    if channels_last:
        module.to(memory_format=torch.channels_last)
        x = in_layout(x, channels_last)
    return measure(lambda: module(x), device=device, **kw)


def device_fingerprint(device: torch.device | str, threads: int) -> str:
    """A file-name-safe name for the hardware behind `device` and the thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1]
                    break
        except OSError:
            pass
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return f"{device.type}-{slug}-t{threads}"


class LatencyTable:
    """Seconds per op, keyed by `canonical op string @ input shape`, persisted as JSON."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, float] = {}
        if self.path.is_file():
            try:
                self.entries = dict(json.loads(self.path.read_text())["entries"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                self.entries = {}  # a damaged cache is rebuilt, never trusted

    @classmethod
    def for_device(cls, device: torch.device | str, threads: int, root: Path | None = None):
        root = root or cache_dir() / "latency"
        return cls(root / f"{device_fingerprint(device, threads)}.json")

    def get(self, key: str, measure_fn: Callable[[], float]) -> float:
        """The stored latency of `key`, measuring (and saving) it first if it is new."""
        if key not in self.entries:
            self.entries[key] = float(measure_fn())
            atomic_write_json(self.path, {"format": 1, "entries": self.entries})
        return self.entries[key]


def conv_key(layer: ConvLayer) -> str:
    """Canonical string of a conv op and its input shape.

    E.g. `conv2d_c16_c32_k3x3_s1x1_p1x1_d1x1_g1@16x130x130`.
    """
    k, s, p, d = (
        f"{a}x{b}" for a, b in (layer.kernel, layer.stride, layer.padding, layer.dilation)
    )
    bias = "_b" if layer.bias else ""
    return (
        f"conv2d_c{layer.c_in}_c{layer.c_out}_k{k}_s{s}_p{p}_d{d}_g{layer.groups}{bias}"
        f"@{layer.c_in}x{layer.in_hw[0]}x{layer.in_hw[1]}"
    )


def conv_latencies(
    layers: Iterable[ConvLayer],
    *,
    device: torch.device | str = "cpu",
    threads: int | None = None,
    table: LatencyTable | None = None,
    warmup: int = 2,
    repeats: int = 5,
    channels_last: bool = False,
) -> dict[str, float]:
    """Seconds per call of every conv layer on `device`, from (and into) the disk table;
    `channels_last`: timed in that layout (entries ending in `:nhwc`)."""
    device = torch.device(device)
    threads = threads or default_threads()
    table = table or LatencyTable.for_device(device, threads)
    layout = ":nhwc" if channels_last else ""
    result = {}
    for layer in layers:

        def timed(layer=layer) -> float:
            conv = conv_for(layer, bias=layer.bias, device=device)
            shape = (1, layer.c_in, *layer.in_hw)
            return time_module(
                conv, shape, device=device, warmup=warmup, repeats=repeats, threads=threads,
                channels_last=channels_last,
            ).median  # fmt: skip

        result[layer.path] = table.get(conv_key(layer) + layout, timed)
    return result
