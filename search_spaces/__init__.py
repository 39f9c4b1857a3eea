"""Candidate student blocks for delta mode: canonical strings, one registry, costs, presets.

In delta mode each teacher conv (BatchNorm folded in, so linear) is stood in for by a linear,
bias-free block that maps the change of its input to the change of its output, initialised from
the folded teacher weight. A candidate is named by a canonical string (`full`, `zero`, `sep_r16`,
`lowrank_r32`, `down2_sep_r8`, ...; grammar in `search_spaces._strings`), built through one
registry (`CANDIDATES`) with one factory signature, costed exactly without being built, and
offered per layer by a YAML preset (`paper`, `default` or a user's file; grammar in
`search_spaces._presets`).

    layer = layer_graph(teacher, (520, 520))[i]
    names = resolve_candidates("paper", layer)               # e.g. ['sep_r16', 'full']
    block = build_candidate(names[0], layer, weight=folded_weight)
    candidate_macs(names[0], layer) * layer.calls            # multiply-adds per frame
"""

from search_spaces._blocks import (
    CANDIDATES,
    CandidateBlock,
    DownBlock,
    FullBlock,
    LowRankBlock,
    SepBlock,
    ZeroBlock,
    balance_factors,
)
from search_spaces._candidates import (
    build_candidate,
    candidate_macs,
    candidate_params,
    check_candidate,
    max_rank,
)
from search_spaces._presets import (
    PRESETS,
    CandidateRule,
    Preset,
    load_preset,
    rank_value,
    resolve_candidates,
)
from search_spaces._strings import Candidate, decode, encode
from search_spaces._whiten import InputStats

__all__ = [
    "CANDIDATES",
    "PRESETS",
    "Candidate",
    "CandidateBlock",
    "CandidateRule",
    "DownBlock",
    "FullBlock",
    "InputStats",
    "LowRankBlock",
    "Preset",
    "SepBlock",
    "ZeroBlock",
    "balance_factors",
    "build_candidate",
    "candidate_macs",
    "candidate_params",
    "check_candidate",
    "decode",
    "encode",
    "load_preset",
    "max_rank",
    "rank_value",
    "resolve_candidates",
]
