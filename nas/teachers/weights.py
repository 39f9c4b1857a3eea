"""Loading a user's state dict into a teacher, with errors that say what does not fit."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from nas.errors import NasError

_SHOWN = 5  # keys listed per kind of mismatch


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
