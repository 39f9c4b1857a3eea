"""Latency: warm-up then median of repeats, threads fixed and restored, a disk table per device."""

import json

import pytest
import torch
from torch import nn

from nas.core.errors import NasError
from nas.cost.latency import (
    LatencyTable,
    conv_key,
    conv_latencies,
    device_fingerprint,
    measure,
    parse_device,
    time_module,
)
from nas.graph.layers import layer_graph


def test_measure_counts_calls_and_restores_threads():
    calls = []
    before = torch.get_num_threads()
    timing = measure(lambda: calls.append(torch.get_num_threads()), warmup=2, repeats=5, threads=1)
    assert len(calls) == 7 and set(calls) == {1}
    assert torch.get_num_threads() == before
    assert (
        timing.low <= timing.median <= timing.high and timing.repeats == 5 and timing.threads == 1
    )


def test_time_module_scales_with_work():
    """A conv with 16x the multiply-adds is measurably slower: the timer times the work."""
    small = nn.Conv2d(8, 8, 3, padding=1)
    large = nn.Conv2d(32, 32, 3, padding=1)
    t_small = time_module(small, (1, 8, 64, 64), repeats=7, threads=1).median
    t_large = time_module(large, (1, 32, 64, 64), repeats=7, threads=1).median
    assert 0 < t_small < t_large


def test_time_module_times_the_channels_last_layout_when_asked():
    seen = []
    conv = nn.Conv2d(4, 8, 3, padding=1)
    conv.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    time_module(conv, (1, 4, 16, 16), warmup=1, repeats=1, threads=1)
    time_module(conv, (1, 4, 16, 16), warmup=1, repeats=1, threads=1, channels_last=True)
    assert seen == [False, False, True, True]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_table_measures_once_and_persists(tmp_path):
    path = tmp_path / "lat.json"
    table = LatencyTable(path)
    calls = []
    assert table.get("op@1x2x3", lambda: calls.append(1) or 0.5) == 0.5
    assert table.get("op@1x2x3", lambda: calls.append(1) or 0.7) == 0.5
    assert calls == [1]
    reloaded = LatencyTable(path)
    assert reloaded.get("op@1x2x3", lambda: pytest.fail("should come from disk")) == 0.5
    assert json.loads(path.read_text())["entries"] == {"op@1x2x3": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["lat.json"]  # no temp files left behind


def test_damaged_table_is_rebuilt(tmp_path):
    path = tmp_path / "lat.json"
    path.write_text("{not json")
    table = LatencyTable(path)
    assert table.get("k", lambda: 0.25) == 0.25
    assert json.loads(path.read_text())["entries"] == {"k": 0.25}


def test_conv_latencies_per_layer_cached(tiny_net, tmp_path):
    layers = layer_graph(tiny_net, (32, 32))
    table = LatencyTable(tmp_path / "t.json")
    first = conv_latencies(layers, table=table, threads=1, repeats=2, warmup=1)
    assert set(first) == {layer.path for layer in layers} and all(v > 0 for v in first.values())
    assert set(table.entries) == {conv_key(layer) for layer in layers}
    again = conv_latencies(layers, table=LatencyTable(tmp_path / "t.json"), threads=1)
    assert again == first  # read back from disk, not re-measured
    conv_latencies(layers, table=table, threads=1, repeats=2, warmup=1, channels_last=True)
    assert set(table.entries) == {
        conv_key(layer) + suffix for layer in layers for suffix in ("", ":nhwc")
    }


def test_conv_key_names_shape_and_input():
    (stem, *_) = layer_graph(
        nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)), (32, 48)
    )
    assert conv_key(stem) == "conv2d_c3_c8_k3x3_s2x2_p1x1_d1x1_g1@3x32x48"


def test_fingerprint_and_devices():
    assert device_fingerprint("cpu", 2).startswith("cpu-") and device_fingerprint(
        "cpu", 2
    ).endswith("-t2")
    assert parse_device("cpu") == torch.device("cpu")
    with pytest.raises(NasError, match="expected cpu, cuda or cuda:N"):
        parse_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(NasError, match="not available here"):
            parse_device("cuda")
