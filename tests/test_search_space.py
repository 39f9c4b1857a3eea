"""The search space: candidate strings, the block registry, exact costs, initialisers, presets."""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas.core.errors import NasError
from nas.graph.layers import ConvLayer, layer_graph
from search_spaces import (
    CANDIDATES,
    PRESETS,
    Candidate,
    build_candidate,
    candidate_macs,
    candidate_params,
    decode,
    encode,
    load_preset,
    max_rank,
    rank_value,
    resolve_candidates,
)


def _layer(in_hw: tuple[int, int], *args, **kwargs) -> ConvLayer:
    """The `ConvLayer` of `nn.Conv2d(*args, **kwargs)` at `in_hw`, traced on `meta`."""
    conv = nn.Conv2d(*args, device="meta", **kwargs)
    model = conv
    if conv.in_channels != 3:  # layer_graph feeds 3 channels: adapt them first
        model = nn.Sequential(nn.Conv2d(3, conv.in_channels, 1, device="meta"), conv)
    return layer_graph(model, in_hw)[-1]


LAYERS = {
    "3x3": _layer((9, 11), 8, 12, 3, padding=1),
    "3x3_s2_odd": _layer((17, 23), 8, 16, 3, stride=2, padding=1),
    "3x3_valid": _layer((7, 8), 4, 6, 3),
    "1x1": _layer((8, 10), 12, 6, 1),
    "1x1_s2": _layer((17, 23), 8, 16, 1, stride=2),
    "3x1": _layer((9, 11), 6, 8, (3, 1), padding=(1, 0)),
    "3x3_dil2": _layer((17, 23), 8, 8, 3, padding=2, dilation=2),
    "5x5": _layer((13, 9), 6, 10, 5, padding=2),
    "3x5_s12": _layer((11, 17), 6, 8, (3, 5), stride=(1, 2), padding=(1, 2)),
    "stem": _layer((17, 23), 3, 8, 3, stride=2, padding=1),
    "depthwise": _layer((9, 11), 8, 8, 3, padding=1, groups=8),
    "grouped": _layer((9, 11), 8, 12, 3, padding=1, groups=4),
}
DENSE = [name for name, layer in LAYERS.items() if layer.groups == 1]
GROUPED = [name for name, layer in LAYERS.items() if layer.groups != 1]
ONE_COLUMN = [name for name in DENSE if LAYERS[name].kernel[1] == 1]
RANKED = [kind for kind in CANDIDATES if CANDIDATES.get(kind).ranked]


def _candidates(layer: ConvLayer) -> list[str]:
    """Every registered kind that applies to `layer`, at a small and a clipped rank, +/- down2."""
    names = []
    for kind in CANDIDATES:
        block = CANDIDATES.get(kind)
        if layer.groups != 1 and not block.grouped:
            continue
        downs = [1, 2] if block.downsampled and layer.groups == 1 else [1]
        for rank in [3, 10_000] if block.ranked else [None]:
            names += [Candidate(kind, rank, down).encode() for down in downs]
    return names


CASES = [
    pytest.param(layer_id, name, id=f"{layer_id}-{name}")
    for layer_id, layer in LAYERS.items()
    for name in _candidates(layer)
]


def _weight(layer: ConvLayer, seed: int = 0) -> torch.Tensor:
    shape = (layer.c_out, layer.c_in // layer.groups, *layer.kernel)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _input(layer: ConvLayer, hw: tuple[int, int] | None = None, batch: int = 2) -> torch.Tensor:
    shape = (batch, layer.c_in, *(hw or layer.in_hw))
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


def _teacher(x: torch.Tensor, layer: ConvLayer, weight: torch.Tensor) -> torch.Tensor:
    """The teacher conv with its folded weight and no bias (a bias cancels in a delta)."""
    return F.conv2d(x, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


# --- canonical strings ---------------------------------------------------------------------


def test_registry_holds_the_four_kinds_and_refuses_duplicates():
    assert CANDIDATES.names() == ["full", "zero", "sep", "lowrank"]
    with pytest.raises(ValueError, match="already registered"):
        CANDIDATES.register("sep", CANDIDATES.get("sep"))
    assert {decode(name).kind for _, name in (case.values for case in CASES)} == set(CANDIDATES)


EXAMPLES = ["full", "zero", "sep_r16", "lowrank_r32", "down2_sep_r8", "down2_lowrank_r16"]


@pytest.mark.parametrize(
    "text", sorted({*EXAMPLES, "down2_full", *(n for c in CASES for n in c.values[1:])})
)
def test_encode_decode_round_trip(text):
    candidate = decode(text)
    assert candidate.encode() == encode(candidate) == encode(text) == str(candidate) == text
    assert Candidate.decode(candidate.encode()) == candidate


def test_decoded_fields():
    assert decode("down2_sep_r8") == Candidate("sep", 8, 2)
    assert decode("lowrank_r32") == Candidate("lowrank", 32, 1)
    assert decode("full") == Candidate("full") and decode("zero").rank is None


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("sep", "sep"),
        ("lowrank", "lowrank"),
        ("zero_r4", "r4"),
        ("full_r4", "r4"),
        ("down3_full", "down3"),
        ("down_full", "down"),
        ("down2_zero", "down2"),
        ("down2", "down2"),
        ("sep_r0", "r0"),
        ("sep_r07", "r07"),
        ("sep_16", "16"),
        ("sep_r-1", "r-1"),
        ("full_x", "x"),
        ("sep_r4_x", "x"),
        ("down2_full_r4", "r4"),
        ("Full", "Full"),
        ("bogus_r4", "bogus"),
        ("", ""),
        ("down2__full", ""),
    ],
)
def test_decoder_names_the_bad_token(text, token):
    with pytest.raises(ValueError, match=re.escape(f"token {token!r}")) as info:
        decode(text)
    assert isinstance(info.value, NasError) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kind", "rank", "down"),
    [
        ("sep", None, 1),
        ("sep", 0, 1),
        ("sep", True, 1),
        ("zero", 4, 1),
        ("full", None, 3),
        ("zero", None, 2),
        ("nope", None, 1),
    ],
)
def test_candidate_constructor_validates(kind, rank, down):
    with pytest.raises(NasError):
        Candidate(kind, rank, down)


def test_decoder_refuses_non_strings():
    with pytest.raises(NasError, match="string"):
        decode(16)


# --- built blocks: shapes, exact costs -----------------------------------------------------


@pytest.mark.parametrize(("layer_id", "name"), CASES)
def test_block_shape_macs_params(layer_id, name):
    layer = LAYERS[layer_id]
    weight = _weight(layer)
    block = build_candidate(name, layer, weight=weight)
    x = _input(layer, batch=1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = block(x)
    assert y.shape == _teacher(x, layer, weight).shape == (1, layer.c_out, *layer.out_hw)
    # Multiply-adds count the convs, as torchvision does: a down2_ block's pooling and resizing
    # (matrix products on the CPU, see nas.core.resample) are not multiply-adds of the model.
    flops = sum(
        n for op, n in counter.get_flop_counts().get("Global", {}).items() if "conv" in str(op)
    )
    assert flops % 2 == 0 and candidate_macs(name, layer) == flops // 2
    assert candidate_params(name, layer) == sum(p.numel() for p in block.parameters())
    assert all(pname.endswith("weight") for pname, _ in block.named_parameters())  # no bias
    other = _input(layer, (layer.in_hw[0] + 3, layer.in_hw[1] + 2))  # works at any size
    with torch.no_grad():
        assert block(other).shape == _teacher(other, layer, weight).shape


@pytest.mark.parametrize("layer_id", GROUPED)
@pytest.mark.parametrize("name", ["sep_r4", "lowrank_r4", "down2_full", "down2_sep_r2"])
def test_grouped_convs_take_only_full_and_zero(layer_id, name):
    layer = LAYERS[layer_id]
    for use in (build_candidate, candidate_macs, candidate_params):
        with pytest.raises(NasError, match=rf"groups={layer.groups}, which takes only full, zero"):
            use(name, layer)


@pytest.mark.parametrize("layer_id", DENSE)
def test_ranks_above_the_maximum_are_clipped(layer_id):
    layer = LAYERS[layer_id]
    for kind in RANKED:
        top = max_rank(kind, layer)
        assert candidate_macs(f"{kind}_r10000", layer) == candidate_macs(f"{kind}_r{top}", layer)
        block = build_candidate(f"{kind}_r10000", layer)
        assert sum(p.numel() for p in block.parameters()) == candidate_params(
            f"{kind}_r{top}", layer
        )
    kh, kw = layer.kernel
    assert max_rank("sep", layer) == min(layer.c_in * kh, layer.c_out * kw)
    assert max_rank("lowrank", layer) == min(layer.c_out, layer.c_in * kh * kw)
    assert max_rank("full", layer) is None


# --- initialisers --------------------------------------------------------------------------


@pytest.mark.parametrize("layer_id", LAYERS)
def test_full_copies_the_teacher_exactly(layer_id):
    layer = LAYERS[layer_id]
    weight = _weight(layer)
    block = build_candidate("full", layer, weight=weight)
    x = _input(layer)
    assert torch.equal(block.conv.weight, weight) and block.conv.bias is None
    with torch.no_grad():
        assert torch.equal(block(x), _teacher(x, layer, weight))


@pytest.mark.parametrize("layer_id", LAYERS)
def test_zero_predicts_no_change(layer_id):
    layer = LAYERS[layer_id]
    x = _input(layer)
    y = build_candidate("zero", layer, weight=_weight(layer))(x)
    assert y.shape == (2, layer.c_out, *layer.out_hw) and not y.any() and y.dtype == x.dtype


@pytest.mark.parametrize("down", [1, 2])
@pytest.mark.parametrize("kind", RANKED)
@pytest.mark.parametrize("layer_id", DENSE)
def test_full_rank_svd_reproduces_the_teacher(layer_id, kind, down):
    layer = LAYERS[layer_id]
    weight = _weight(layer)
    block = build_candidate(Candidate(kind, max_rank(kind, layer), down), layer, weight=weight)
    x = _input(layer)
    if down == 1:
        expected = _teacher(x, layer, weight)
    else:  # initialised like the inner kind, run on the pooled delta, upsampled
        pooled = F.avg_pool2d(x, 2, ceil_mode=True)
        expected = F.interpolate(
            _teacher(pooled, layer, weight), size=layer.out_hw, mode="bilinear"
        )
    with torch.no_grad():
        assert _relative(block(x), expected) < 1e-5


def _effective_kernel(block: nn.Module) -> torch.Tensor:
    """The single conv kernel a two-conv block equals."""
    if hasattr(block, "vertical"):  # sep: W[o,i,y,x] = sum_r H[o,r,x] V[r,i,y]
        h, v = block.horizontal.weight[:, :, 0, :], block.vertical.weight[:, :, :, 0]
        return torch.einsum("orx,riy->oiyx", h, v)
    return torch.einsum("or,rikl->oikl", block.expand.weight[:, :, 0, 0], block.reduce.weight)


@pytest.mark.parametrize("kind", RANKED)
@pytest.mark.parametrize("layer_id", ["3x3", "1x1", "5x5", "3x5_s12"])
def test_truncation_error_decreases_with_rank(layer_id, kind):
    layer = LAYERS[layer_id]
    weight = _weight(layer)
    errors = [
        _relative(_effective_kernel(build_candidate(f"{kind}_r{r}", layer, weight=weight)), weight)
        for r in range(1, max_rank(kind, layer) + 1)
    ]
    assert all(b < a for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 1e-5 < errors[0]


def test_initialiser_sees_inplace_weight_updates():
    """The memoised SVD is keyed by the tensor and its version: an in-place change is seen."""
    layer = LAYERS["3x3"]
    weight, x = _weight(layer), _input(layer)
    with torch.no_grad():
        before = build_candidate("lowrank_r2", layer, weight=weight)(x)
        weight.mul_(2)
        after = build_candidate("lowrank_r2", layer, weight=weight)(x)
        other = build_candidate("lowrank_r2", layer, weight=_weight(layer, seed=5))(x)
    assert _relative(after, 2 * before) < 1e-5 and _relative(other, before) > 0.1


@pytest.mark.parametrize("layer_id", ONE_COLUMN)
def test_sep_is_lowrank_on_one_column_kernels(layer_id):
    layer = LAYERS[layer_id]
    weight, x = _weight(layer), _input(layer)
    with torch.no_grad():
        sep = build_candidate("sep_r2", layer, weight=weight)(x)
        low = build_candidate("lowrank_r2", layer, weight=weight)(x)
    assert _relative(sep, low) < 1e-5
    assert candidate_macs("lowrank_r2", layer) <= candidate_macs("sep_r2", layer)


def test_weight_of_the_wrong_shape_is_refused():
    layer = LAYERS["3x3"]
    with pytest.raises(
        NasError, match=r"weight has shape \(12, 8, 1, 1\), expected \(12, 8, 3, 3\)"
    ):
        build_candidate("sep_r2", layer, weight=torch.zeros(12, 8, 1, 1))


def test_layer_whose_sizes_disagree_is_refused():
    layer = dataclasses.replace(LAYERS["3x3"], out_hw=(8, 11))
    with pytest.raises(NasError, match="does not follow"):
        candidate_macs("full", layer)


def test_down2_on_a_too_small_input_is_refused_and_not_offered():
    layer = _layer((3, 3), 4, 4, 3)  # pooled to 2x2, a 3x3 valid conv has nothing left
    with pytest.raises(NasError, match="too small for 'down2_full'"):
        candidate_macs("down2_full", layer)
    assert not any(n.startswith("down2") for n in resolve_candidates("default", layer))


# --- presets -------------------------------------------------------------------------------


def _cost(name: str, layer: ConvLayer) -> tuple[int, int, str]:
    return candidate_macs(name, layer), candidate_params(name, layer), name


def test_packaged_presets_load_and_document_their_grammar():
    assert PRESETS.names() == ["default", "paper"]
    for name in PRESETS:
        preset = load_preset(name)
        assert preset.name == name and preset.description
        text = PRESETS.get(name).read_text()
        assert text.startswith("#") and "RANK:" in text and "c_out/4" in text


@pytest.mark.parametrize("layer_id", DENSE)
def test_paper_offers_full_and_the_c_out_over_4_compression(layer_id):
    layer = LAYERS[layer_id]
    kind = "lowrank" if layer.kernel[1] == 1 else "sep"
    rank = min(max(1, layer.c_out // 4), max_rank(kind, layer))
    assert resolve_candidates("paper", layer) == [f"{kind}_r{rank}", "full"]
    assert resolve_candidates("paper", layer, allow_zero=False) == [f"{kind}_r{rank}", "full"]


@pytest.mark.parametrize("preset", ["paper", "default"])
@pytest.mark.parametrize("layer_id", GROUPED)
def test_grouped_convs_get_zero_and_full(preset, layer_id):
    layer = LAYERS[layer_id]
    assert resolve_candidates(preset, layer) == ["zero", "full"]
    assert resolve_candidates(preset, layer, allow_zero=False) == ["full"]


@pytest.mark.parametrize("allow_zero", [True, False])
@pytest.mark.parametrize("layer_id", DENSE)
def test_default_is_sorted_cheaper_than_full_and_deduplicated(layer_id, allow_zero):
    layer = LAYERS[layer_id]
    names = resolve_candidates("default", layer, allow_zero=allow_zero)
    assert len(names) == len(set(names)) >= 4
    assert names[-1] == "full" and (names[0] == "zero") == allow_zero
    assert ("zero" in names) == allow_zero
    costs = [_cost(name, layer) for name in names]
    assert costs == sorted(costs)
    assert all(macs < layer.macs for macs, _, name in costs if name != "full")
    assert {decode(n).kind for n in names} >= {"full", "lowrank"}
    assert any(decode(n).down == 2 for n in names)
    if layer.kernel[1] == 1:
        assert not any(decode(n).kind == "sep" for n in names)
    for name in names:
        candidate = decode(name)
        if candidate.rank is not None:
            assert candidate.rank <= max_rank(candidate.kind, layer)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16", 16),
        ("c_out/4", 4),
        ("c_out", 16),
        ("c_in/2", 4),
        ("max/2", 12),
        ("c_out/100", 1),
        ("1000", 24),
        ("max", 24),
        (" c_out / 8 ", 2),
    ],
)
def test_rank_expressions(text, expected):
    layer = LAYERS["3x3_s2_odd"]  # c_in 8, c_out 16, 3x3: sep's maximal rank 24
    assert rank_value(text, "sep", layer) == expected


def test_user_preset_by_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "# my own\ncandidates:\n  - kind: full\n  - kind: lowrank\n    ranks: [2, c_out/4, 2]\n"
    )
    for given in (path, str(path)):
        preset = load_preset(given)
        assert preset.name == "mine" and preset.description == ""
    layer = LAYERS["3x3_s2_odd"]
    assert resolve_candidates(path, layer) == ["lowrank_r2", "lowrank_r4", "full"]
    assert resolve_candidates(preset, layer) == ["lowrank_r2", "lowrank_r4", "full"]


FULL = "  - kind: full\n"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("candidates:\n" + FULL + "  - kind: sep\n    ranks: [c_out/0]\n", "candidates.1.ranks.0"),
        ("candidates:\n" + FULL + "  - kind: sep\n    ranks: [true]\n", "candidates.1.ranks.0"),
        ("candidates:\n" + FULL + "  - kind: seps\n    ranks: [4]\n", "candidates.1.kind"),
        ("candidates:\n" + FULL + "  - kind: down2_zero\n", "candidates.1.kind"),
        ("candidates:\n" + FULL + "  - kind: sep_r4\n", "candidates.1.kind"),
        ("candidates:\n" + FULL + "  - kind: sep\n", "candidates.1: kind 'sep' needs 'ranks'"),
        ("candidates:\n  - kind: full\n    ranks: [4]\n", "candidates.0: kind 'full' takes no"),
        ("candidates:\n  - kind: full\n    rank: 4\n", "candidates.0.rank"),
        ("candidates:\n  - kind: sep\n    ranks: [4]\n", "candidates: 'full' must be listed"),
        ("candidates: []\n", "candidates: 'full' must be listed"),
        ("candidatez:\n" + FULL, "candidatez"),
        ("descripton: x\ncandidates:\n" + FULL, "descripton"),
        ("- kind: full\n", "must be a mapping"),
        ("candidates: [\n", "not valid YAML"),
    ],
)
def test_bad_user_preset_names_the_field(tmp_path, body, field):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(NasError, match=re.escape(field)) as info:
        load_preset(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unknown_preset_lists_the_known_ones(tmp_path):
    with pytest.raises(
        NasError, match=r"unknown search-space preset 'nope'; known: default, paper"
    ):
        load_preset("nope")
    with pytest.raises(NasError, match="known: default, paper"):
        resolve_candidates("nope", LAYERS["3x3"])
    with pytest.raises(NasError, match="cannot be read"):
        load_preset(tmp_path / "missing.yaml")
