"""Canonical candidate strings: one name per candidate block, with an encoder and a decoder.

Tokens joined by "_":

    candidate := [down] kind [rank]
    down      := "down2"       run on the 2x average-pooled delta, upsample the output
    kind      := "full" | "zero" | "sep" | "lowrank"      (the kinds registered in CANDIDATES)
    rank      := "r" N         N >= 1, no leading zeros; sep and lowrank need one, others take none

    full               the teacher conv itself, without bias
    zero               predicts no change (reuses the key frame's output); free
    sep_r16            kh x 1 conv to 16 channels, then 1 x kw conv to c_out
    lowrank_r32        kh x kw conv to 32 channels, then 1 x 1 conv to c_out
    down2_sep_r8       sep_r8 on the 2x average-pooled delta, output upsampled bilinearly
    down2_lowrank_r16  down2_full

`down2_zero` is refused (zero at half resolution is still zero), and so is anything else not in
the grammar, with an error naming the bad token:

    >>> Candidate.decode("down2_sep_r8")
    Candidate(kind='sep', rank=8, down=2)
    >>> Candidate("lowrank", 32).encode()
    'lowrank_r32'
    >>> decode("sep_r0")
    Traceback (most recent call last):
    NasError: bad candidate 'sep_r0': token 'r0' is not a rank ('r' and an integer >= 1, e.g.
    r16) (candidates look like full, zero, sep_r16, lowrank_r32, down2_sep_r8)

`encode(decode(s)) == s` for every valid string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nas.core.errors import NasError
from search_spaces._blocks import CANDIDATES

DOWN_FACTORS = (2,)  # the `downN_` prefixes there are
_DOWN = re.compile(r"down([1-9][0-9]*)")
_RANK = re.compile(r"r([1-9][0-9]*)")
_EXAMPLES = "full, zero, sep_r16, lowrank_r32, down2_sep_r8"


@dataclass(frozen=True)
class Candidate:
    """One candidate block: a registered kind, its rank (ranked kinds only), its downsampling."""

    kind: str
    rank: int | None = None
    down: int = 1  # the delta is average-pooled by this factor first: 1 (no) or 2

    def __post_init__(self) -> None:
        if self.kind not in CANDIDATES:
            raise NasError(f"unknown candidate kind {self.kind!r}; known: {_kinds()}")
        block = CANDIDATES.get(self.kind)
        if not block.ranked and self.rank is not None:
            raise NasError(f"candidate kind '{self.kind}' takes no rank (got {self.rank!r})")
        if block.ranked and (
            isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1
        ):
            raise NasError(f"candidate kind '{self.kind}' needs a rank >= 1 (got {self.rank!r})")
        if self.down != 1 and self.down not in DOWN_FACTORS:
            raise NasError(f"candidate down factor must be 1 or one of {DOWN_FACTORS}")
        if self.down != 1 and not block.downsampled:
            raise NasError(f"candidate kind '{self.kind}' cannot be downsampled")

    def encode(self) -> str:
        """The canonical string, e.g. `down2_sep_r8`."""
        down = f"down{self.down}_" if self.down != 1 else ""
        rank = f"_r{self.rank}" if self.rank is not None else ""
        return f"{down}{self.kind}{rank}"

    def __str__(self) -> str:
        return self.encode()

    @classmethod
    def decode(cls, text: str) -> Candidate:
        """Parse a canonical string; raises `NasError` (a `ValueError`) naming the bad token."""
        if not isinstance(text, str):
            raise NasError(f"a candidate is a string like {_EXAMPLES}; got {text!r}")
        tokens = text.split("_")
        kind, down, pos = _head(text, tokens)
        rank = None
        if CANDIDATES.get(kind).ranked:
            if pos == len(tokens):
                _bad(text, kind, f"needs a rank, e.g. '{text}_r16'")
            match = _RANK.fullmatch(tokens[pos])
            if match is None:
                _bad(text, tokens[pos], "is not a rank ('r' and an integer >= 1, e.g. r16)")
            rank, pos = int(match[1]), pos + 1
        if pos < len(tokens):
            if rank is None and _RANK.fullmatch(tokens[pos]):
                _bad(text, tokens[pos], f"is unexpected ('{kind}' takes no rank)")
            _bad(text, tokens[pos], f"is unexpected (nothing may follow '{tokens[pos - 1]}')")
        return cls(kind, rank, down)


def decode(text: str) -> Candidate:
    """`Candidate.decode`: the candidate a canonical string names."""
    return Candidate.decode(text)


def encode(candidate: Candidate | str) -> str:
    """The canonical string of a candidate (a string is decoded first, so it is also checked)."""
    return as_candidate(candidate).encode()


def as_candidate(candidate: Candidate | str) -> Candidate:
    return candidate if isinstance(candidate, Candidate) else Candidate.decode(candidate)


def parse_kind(text: str) -> tuple[str, int]:
    """`[down]kind` without a rank (as preset files write it) -> (kind, down factor)."""
    tokens = text.split("_")
    kind, down, pos = _head(text, tokens)
    if pos < len(tokens):
        _bad(text, tokens[pos], "is unexpected (write the kind without a rank)")
    return kind, down


def _head(text: str, tokens: list[str]) -> tuple[str, int, int]:
    """The optional down token and the kind: (kind, down factor, position after them)."""
    down, pos = 1, 0
    match = _DOWN.fullmatch(tokens[0])
    if tokens[0].startswith("down"):
        if match is None or int(match[1]) not in DOWN_FACTORS:
            known = ", ".join(f"down{f}" for f in DOWN_FACTORS)
            _bad(text, tokens[0], f"is not a known downsampling (known: {known})")
        down, pos = int(match[1]), 1
        if pos == len(tokens):
            _bad(text, tokens[0], "must be followed by a kind, e.g. down2_full")
    kind = tokens[pos]
    if kind not in CANDIDATES:
        _bad(text, kind, f"is not a candidate kind (known: {_kinds()})")
    if down != 1 and not CANDIDATES.get(kind).downsampled:
        _bad(text, tokens[0], f"cannot apply to '{kind}'")
    return CANDIDATES.canonical(kind), down, pos + 1


def _bad(text: str, token: str, why: str):
    raise NasError(
        f"bad candidate {text!r}: token {token!r} {why} (candidates look like {_EXAMPLES})"
    )


def _kinds() -> str:
    return ", ".join(CANDIDATES.names())
