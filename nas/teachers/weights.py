"""A teacher's weights: a user's state dict, loaded with errors that say what does not fit, or
the seeded random init that built-in teachers get when no weights file is given (nothing can be
downloaded here), with BatchNorm statistics measured on real frames (`batchnorm_stats`)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from nas.core.errors import NasError
from nas.teachers.base import RANDOM_INIT, file_sha256
from nas.teachers.batchnorm_stats import CLIP, FRAMES, STRIDE

_SHOWN = 5  # keys listed per kind of mismatch
INIT_SEED = 0  # the random init of built-in teachers without a weights file


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from `torch.save`, read with `weights_only=True` (no code is run).

    Checkpoints that wrap the state dict (`{"model": ...}` or `{"state_dict": ...}`, as the
    torchvision reference scripts write them) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise NasError(
            f"weights file '{path}' does not exist: pass a state dict saved with torch.save"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasError(
            f"cannot read weights file '{path}' ({reason[:160]}): expected a state dict saved "
            "with torch.save"
        ) from exc
    for key in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise NasError(
            f"weights file '{path}' holds a {type(data).__name__}, not a state dict of tensors"
        )
    return data


def _listing(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def load_into(module: nn.Module, state: dict[str, torch.Tensor], *, who: str, source: str) -> None:
    """Load `state` into `module` strictly; on a mismatch name the first offending keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if wrong:
        problems.append(f"shape mismatch: {_listing(wrong)}")
    if problems:
        raise NasError(
            f"weights file '{source}' does not fit teacher {who}; " + "; ".join(problems)
        )
    if not any(t.is_meta for t in own.values()):  # a shape-only module has nothing to copy into
        module.load_state_dict(state, strict=True)


def class_count(
    state: dict[str, torch.Tensor] | None, head_key: str, *, given: int | None, default: int
) -> int:
    """The classes of a teacher's head: `given` (`--num-classes`), else the rows of the
    checkpoint's `head_key` weight, else `default`."""
    if given is None:
        rows = state.get(head_key) if state is not None else None
        given = int(rows.shape[0]) if rows is not None else default
    if given < 1:
        raise NasError(f"--num-classes must be at least 1, got {given}")
    return given


def seeded_init(factory: Callable[[], nn.Module], *, device: str) -> nn.Module:
    """`factory()` built on `device` with torch seeded to INIT_SEED; the global RNG is left as
    it was, so building a teacher does not change what the caller draws next."""
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(INIT_SEED)
        return factory()


def weights_id(path: Path | None) -> str:
    """The `Teacher.weights_id` of a weights file (its SHA-256), or of the seeded init with its
    BatchNorm statistics measured on frames of the built-in clip (`batchnorm_stats`)."""
    if path is not None:
        return file_sha256(path)
    return f"{RANDOM_INIT}seed={INIT_SEED};bn-stats:{CLIP}:{FRAMES}/{STRIDE}"
