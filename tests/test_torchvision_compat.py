"""The torchvision shim: models import on a CPU-only torch; nothing is touched where ops load."""

import subprocess
import sys

from tests.conftest import REPO


def _python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_models_import_and_build():
    out = _python(
        "from nas.core.torchvision_compat import import_torchvision\n"
        "tv = import_torchvision()\n"
        "seg = tv.models.segmentation\n"
        "m = seg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)\n"
        "print(type(m).__name__)"
    )
    assert out == "LRASPP"


def test_schemas_defined_only_when_compiled_ops_fail():
    """Here the shim defines schemas iff torchvision's compiled library fails to load."""
    out = _python(
        "import nas.core.torchvision_compat as c\n"
        "loads = c._compiled_ops_load()\n"
        "c.ensure_torchvision_importable()\n"
        "print(loads, c._library is not None)"
    )
    loads, defined = out.split()
    assert defined == str(loads == "False")


def test_does_nothing_where_ops_load():
    out = _python(
        "import nas.core.torchvision_compat as c\n"
        "c._compiled_ops_load = lambda: True\n"
        "c.ensure_torchvision_importable()\n"
        "print(c._library is None)"
    )
    assert out == "True"
