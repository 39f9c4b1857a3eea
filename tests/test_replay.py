"""Replay: on delta frames the modules that a `zero` leaves unchanged return the key frame's
output without running, and the delta model's outputs stay bitwise what it computes in full."""

from types import SimpleNamespace

import pytest
import torch

from nas.delta.liveness import NO_CHANGE
from nas.delta.model import DeltaModel
from nas.graph.layers import layer_graph
from nas.searching.tables import block_latencies, latency_table
from tests.delta_models import delta_model

SIZE = (64, 96)
# Residual branches closed by their projection, an ASPP branch and the pooling branch.
ZEROS = {
    "backbone.3.block.2.0",
    "backbone.5.block.3.0",
    "backbone.9.block.2.0",
    "backbone.15.block.3.0",
    "classifier.0.convs.2.0",
    "classifier.0.convs.4.1",
}


def _picks(layers, zeros):
    return {
        layer.path: NO_CHANGE
        if layer.path in zeros
        else ("lowrank_r4" if layer.path.startswith("classifier") else "full")
        for layer in layers
    }


def _model(teacher, picks, *, replay: bool) -> DeltaModel:
    return delta_model(teacher, picks, SIZE, replay=replay)


def _stream(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    key = torch.randn(1, 3, *SIZE, generator=g)
    return [key] + [key + 0.3 * torch.randn(1, 3, *SIZE, generator=g) for _ in range(n - 1)]


def _outputs(model, frames, memory_format):
    """Key frame, delta frames, a second key frame and a delta frame after it."""
    model.to(memory_format=memory_format)
    xs = [x.to(memory_format=memory_format) for x in frames]
    with torch.inference_mode():
        out = [model.key_frame(xs[0]).clone()]
        out += [model.delta_frame(x).clone() for x in xs[1:]]
        out += [model.key_frame(xs[1]).clone(), model.delta_frame(xs[2]).clone()]
    return out


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_replay_changes_no_output(teachers, memory_format):
    teacher = teachers("deeplabv3")
    picks = _picks(layer_graph(teacher.module, SIZE), ZEROS)
    full, replayed = _model(teacher, picks, replay=False), _model(teacher, picks, replay=True)
    assert replayed.replay.paths == (
        "backbone.3.block",
        "backbone.5.block",
        "backbone.9.block",
        "backbone.15.block",
        "classifier.0.convs.2",
        "classifier.0.convs.4",
    )
    seen = []  # the backbone's last features: the delta frames do change them
    replayed.net.get_submodule("backbone.16").register_forward_hook(
        lambda module, args, out: seen.append(out.clone())
    )
    frames = _stream()
    expected, got = _outputs(full, frames, memory_format), _outputs(replayed, frames, memory_format)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert not torch.equal(seen[2], seen[1])  # key frame (checked: seen twice), delta frame
    # The residual adds write into the branches' outputs: those are kept as copies.
    assert replayed.replay.copied == {p for p in replayed.replay.paths if p.startswith("backbone")}


def test_replayed_modules_do_not_run_on_delta_frames(teachers):
    teacher = teachers("deeplabv3")
    picks = _picks(layer_graph(teacher.module, SIZE), ZEROS)
    model = _model(teacher, picks, replay=True)
    calls = {"inside": 0, "open": 0}
    inside = model.net.get_submodule("backbone.5.block.1")  # the depthwise conv of a closed branch
    opened = model.net.get_submodule("backbone.7.block.1")
    inside.register_forward_hook(lambda *_: calls.__setitem__("inside", calls["inside"] + 1))
    opened.register_forward_hook(lambda *_: calls.__setitem__("open", calls["open"] + 1))
    frames = _stream()
    with torch.inference_mode():
        model.key_frame(frames[0])
        after_key = dict(calls)
        for x in frames[1:]:
            model.delta_frame(x)
    assert after_key["inside"] >= 1
    assert calls["inside"] == after_key["inside"]  # skipped on every delta frame
    assert calls["open"] == after_key["open"] + len(frames) - 1
    # In training every layer runs: its prediction is what the loss reads.
    with torch.enable_grad():
        model.key_frame(frames[0])
        before = calls["inside"]
        model.delta_frame(frames[1])
    assert calls["inside"] == before + 1


def test_all_zero_model_replays_the_whole_network(teachers):
    teacher = teachers("deeplabv3")
    layers = layer_graph(teacher.module, SIZE)
    model = _model(teacher, _picks(layers, {layer.path for layer in layers}), replay=True)
    assert model.replay.paths == ("",)
    frames = _stream()
    with torch.inference_mode():
        key = model.key_frame(frames[0]).clone()
        delta = model.delta_frame(frames[1])
        assert torch.equal(delta, key)
        delta += 1  # a copy: the kept output is untouched
        assert torch.equal(model.delta_frame(frames[2]), key)
        with pytest.raises(RuntimeError, match="matching key frame"):
            model.delta_frame(torch.randn(1, 3, 32, 48))


def test_latency_table_shares_what_runs_outside_the_convs(tiny_net, tmp_path, monkeypatch):
    """Every candidate but `zero` carries its layer's share of the key frame's time outside the
    searched convs, and the shares add up to all of it."""
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    size = (32, 32)
    layers = layer_graph(tiny_net, size)
    names = {layer.path: [NO_CHANGE, "full"] for layer in layers}
    device = torch.device("cpu")
    raw = block_latencies(layers, names, device=device, threads=1)
    teacher = SimpleNamespace(module=tiny_net.eval())  # all the table reads of a teacher
    table = latency_table(teacher, layers, names, size, device=device, threads=1)
    assert table.other == 0.0
    for path, costs in table.candidates.items():
        assert costs[NO_CHANGE] == raw[path][NO_CHANGE]
        assert costs["full"] > raw[path]["full"]
    shared = sum(table.candidates[p]["full"] - raw[p]["full"] for p in raw)
    outside = table.keyframe - sum(raw[p]["full"] for p in raw)
    assert shared == pytest.approx(max(outside, 0.0))
