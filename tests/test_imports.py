"""Every public package imports first, in a fresh interpreter (an import cycle shows only there:
the rest of the suite imports `nas` before anything else), and `import nas` alone loads none of
the heavy dependencies its facade names."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

PACKAGES = [
    "nas",
    "nas.core",
    "nas.data",
    "nas.graph",
    "nas.teachers",
    "nas.cost",
    "search_spaces",
    "evaluators",
    "nas.spec",
    "nas.delta",
    "nas.student",
    "nas.searching",
    "nas.study",
    "nas.dashboard",
    "nas.cli",
]


def fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_first(package):
    result = fresh(f"import {package}")
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1:]


def test_import_nas_is_lazy():
    result = fresh(
        "import sys, nas\n"
        "heavy = [m for m in ('optuna', 'plotly', 'torchvision', 'torch') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
        "nas.SearchOptions\n"
        "print('optuna' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    heavy, loaded = result.stdout.split("\n")[:2]
    assert heavy == ""
    assert loaded == "False"  # the search's options need no Optuna either


def test_the_facade_names_what_it_exports():
    import nas

    for name in nas.__all__:
        assert getattr(nas, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        nas.nothing  # noqa: B018
