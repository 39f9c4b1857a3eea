"""Atomic writes (`nas.core.io`): readers never see a part, and the file gets the permissions a
plain `open(path, "w")` would have given it (the temporary file's 0600 would lock out a trainer
under another account, or a web server serving the dashboard)."""

from __future__ import annotations

import os
import stat

import pytest

from nas.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    def use(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    os.umask(old)
    yield use
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
@pytest.mark.parametrize("write", [atomic_write_bytes, atomic_write_text, atomic_write_json])
def test_a_new_file_has_the_mode_a_plain_write_gives(tmp_path, umask, mask, write):
    umask(mask)
    plain = tmp_path / "plain"
    with open(plain, "w") as handle:
        handle.write("x")
    target = tmp_path / "sub" / "spec.json"
    write(
        target, b"{}" if write is atomic_write_bytes else "{}" if write is atomic_write_text else {}
    )
    assert mode_of(target) == mode_of(plain) == 0o666 & ~mask
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]


def test_an_existing_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "spec.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and mode_of(target) == 0o640
