"""Search-space presets: which candidates a layer is offered, from a small YAML file.

Packaged presets are `search_spaces/presets/<name>.yaml` (`paper`, `default`); a user's own file
is given by path. The grammar (repeated at the top of every preset file):

    name: a name                       optional; defaults to the file's stem
    description: one line              optional
    candidates:                        a non-empty list of rules; `full` must be one of them
      - kind: full                     zero | full | down2_full: no ranks
      - kind: sep                      sep | lowrank | down2_sep | down2_lowrank
        ranks: [c_out/4, max/2, 16]    required for these kinds, at least one

    RANK := N          an absolute rank, e.g. 16
          | REF        the layer's value itself
          | REF/N      that divided by N, rounded down, at least 1
    REF  := c_out | c_in | max         max: the kind's maximal (exact) rank on the layer

`resolve_candidates(preset, layer)` turns the rules into canonical strings for one layer: ranks
are evaluated and clipped to the kind's maximal rank; on a conv whose kernel is one column wide
(1x1, kx1) `sep` is the same block as `lowrank` (and dearer when strided), so it is offered as
`lowrank`; duplicates go; candidates that are not strictly cheaper than `full` go, and so do
`down2_` ones whose pooled input is too small; `full` always stays. The result is sorted by
multiply-adds, then parameters, then name. Grouped and depthwise convs get `zero` and `full`
whatever the preset says. `allow_zero=False` (per-frame mode: no key frame to reuse) drops `zero`.

    resolve_candidates("paper", layer)     # e.g. ['sep_r16', 'full']
"""

from __future__ import annotations

import functools
import os
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)

from nas.core.errors import NasError
from nas.core.registry import Registry
from nas.graph.layers import ConvLayer
from search_spaces._blocks import CANDIDATES, Geometry, pooled_hw
from search_spaces._candidates import candidate_macs, candidate_params
from search_spaces._strings import DOWN_FACTORS, Candidate, parse_kind

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

_RANK = re.compile(r"(?:(c_in|c_out|max)(?:/([1-9][0-9]*))?|([1-9][0-9]*))")
_RANK_HELP = "N, c_out/N, c_in/N or max/N (N an integer >= 1)"


def _rank_text(value: object) -> str:
    """A rank expression, normalised (spaces removed); YAML gives `16` as an int."""
    text = "".join(str(value).split()) if isinstance(value, int | str) else ""
    if isinstance(value, bool) or _RANK.fullmatch(text) is None:
        raise ValueError(f"{value!r} is not a rank; expected {_RANK_HELP}")
    return text


RankText = Annotated[str, BeforeValidator(_rank_text)]


def _kinds() -> str:
    """Every kind a preset may name: the registered kinds and their downsampled versions."""
    down = [
        f"down{f}_{k}" for f in DOWN_FACTORS for k in CANDIDATES if CANDIDATES.get(k).downsampled
    ]
    return ", ".join([*CANDIDATES, *down])


def rank_value(text: str, kind: str, layer: ConvLayer) -> int:
    """The absolute rank a preset's rank expression gives a `kind` block on `layer`, clipped."""
    match = _RANK.fullmatch("".join(text.split()))
    if match is None:
        raise NasError(f"{text!r} is not a rank; expected {_RANK_HELP}")
    top = CANDIDATES.get(kind).max_rank(layer)
    if top is None:
        raise NasError(f"candidate kind '{kind}' takes no rank")
    if match[3]:
        value = int(match[3])
    else:
        ref = {"c_in": layer.c_in, "c_out": layer.c_out, "max": top}[match[1]]
        value = max(1, ref // int(match[2] or 1))
    return min(value, top)


class CandidateRule(BaseModel):
    """One entry of a preset: a kind (`sep`, `down2_full`, ...) and, for ranked kinds, ranks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    ranks: tuple[RankText, ...] | None = None

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        try:
            parse_kind(value)
        except NasError:
            raise ValueError(f"{value!r} is not a kind; expected one of {_kinds()}") from None
        return value

    @model_validator(mode="after")
    def _ranks_match_kind(self) -> CandidateRule:
        ranked = CANDIDATES.get(parse_kind(self.kind)[0]).ranked
        if ranked and not self.ranks:
            raise ValueError(f"kind '{self.kind}' needs 'ranks', e.g. ranks: [c_out/4]")
        if not ranked and self.ranks is not None:
            raise ValueError(f"kind '{self.kind}' takes no 'ranks'")
        return self

    def expand(self, layer: ConvLayer) -> list[Candidate]:
        """The candidates this rule gives `layer` (ranks absolute and clipped)."""
        kind, down = parse_kind(self.kind)
        if self.ranks is None:
            return [Candidate(kind, None, down)]
        return [Candidate(kind, rank_value(r, kind, layer), down) for r in self.ranks]


class Preset(BaseModel):
    """A validated preset; `name` is the file's stem unless the file sets it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    candidates: tuple[CandidateRule, ...]

    @field_validator("candidates")
    @classmethod
    def _has_full(cls, rules: tuple[CandidateRule, ...]) -> tuple[CandidateRule, ...]:
        if not any(parse_kind(rule.kind) == ("full", 1) for rule in rules):
            raise ValueError("'full' must be listed (every layer keeps its exact option)")
        return rules


PRESETS: Registry[Traversable] = Registry("search-space preset")
for _entry in sorted(
    (resources.files("search_spaces") / "presets").iterdir(), key=lambda e: e.name
):
    if _entry.name.endswith(".yaml"):
        PRESETS.register(_entry.name.removesuffix(".yaml"), _entry)


def load_preset(name_or_path: str | os.PathLike) -> Preset:
    """A packaged preset by name (`paper`, `default`) or a user's YAML file by path, validated."""
    if isinstance(name_or_path, str) and name_or_path in PRESETS:
        return _packaged(PRESETS.canonical(name_or_path))
    path = Path(name_or_path)
    if (
        isinstance(name_or_path, os.PathLike)
        or path.suffix in (".yaml", ".yml")
        or len(path.parts) > 1
        or path.is_file()
    ):
        try:
            text = path.read_text()
        except OSError as exc:
            raise NasError(f"preset file '{path}' cannot be read ({exc.strerror})") from exc
        return _parse(text, source=f"file '{path}'", name=path.stem)
    try:
        PRESETS.get(str(name_or_path))
    except NasError as exc:
        raise NasError(f"{exc} (or give a path to a .yaml file)") from None
    raise AssertionError("unreachable")


@functools.cache
def _packaged(name: str) -> Preset:
    return _parse(PRESETS.get(name).read_text(), source=f"'{name}'", name=name)


def _parse(text: str, *, source: str, name: str) -> Preset:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise NasError(f"preset {source} is not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict):
        raise NasError(
            f"preset {source} must be a mapping with 'candidates', got {type(data).__name__}"
        )
    try:
        return Preset.model_validate({"name": name, **data})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: "
            + error["msg"].removeprefix("Value error, ")
            for error in exc.errors()
        )
        raise NasError(f"preset {source} is invalid: {problems}") from exc


def resolve_candidates(
    preset: Preset | str | os.PathLike, layer: ConvLayer, *, allow_zero: bool = True
) -> list[str]:
    """The canonical candidate strings `preset` offers `layer`, cheapest first (see module doc)."""
    if not isinstance(preset, Preset):
        preset = load_preset(preset)
    full = Candidate("full")
    if layer.groups != 1:
        wanted = [Candidate("zero"), full]
    else:
        wanted = [full, *(c for rule in preset.candidates for c in rule.expand(layer))]
    full_macs = candidate_macs(full, layer)  # also checks the layer's geometry
    costs: dict[str, tuple[int, int, str]] = {}
    for candidate in wanted:
        if candidate.kind == "zero" and not allow_zero:
            continue
        if candidate.kind == "sep" and layer.kernel[1] == 1:
            candidate = Candidate("lowrank", candidate.rank, candidate.down)
        if candidate.down != 1 and not _fits(candidate.down, layer):
            continue
        macs = candidate_macs(candidate, layer)
        if candidate != full and macs >= full_macs:
            continue
        name = candidate.encode()
        costs[name] = (macs, candidate_params(candidate, layer), name)
    return sorted(costs, key=costs.__getitem__)


def _fits(down: int, layer: ConvLayer) -> bool:
    """Whether the layer's conv still gives a non-empty output on the pooled input."""
    return min(Geometry.of(layer).out_hw(pooled_hw(layer.in_hw, down))) >= 1
