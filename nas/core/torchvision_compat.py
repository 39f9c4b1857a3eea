"""Make torchvision's pure-Python parts importable on a CPU-only torch.

The registry's torchvision wheel that pairs with torch 2.13.0 is built for CUDA: its compiled
ops fail to load against the CPU torch, and `import torchvision` then dies registering fake
kernels for `torchvision::nms`. Defining the missing op schemas first lets the models import;
only the compiled ops themselves (nms, roi_align, ...) stay unavailable, and this toolkit does
not use them. Where torchvision's compiled library loads, this does nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None  # kept alive: dropping it unregisters the schemas


def _compiled_ops_load() -> bool:
    """True when torchvision's own compiled library loads (what its import would do anyway)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    for location in spec.submodule_search_locations:
        for lib in Path(location).glob("_C*.so"):
            try:
                torch.ops.load_library(str(lib))
                return True
            except OSError:
                return False
    return False


def _op_exists(name: str) -> bool:
    return bool(torch._C._jit_get_schemas_for_operator(f"torchvision::{name}"))


def ensure_torchvision_importable() -> None:
    """Define torchvision's missing op schemas if (and only if) its compiled ops cannot load."""
    global _library
    if "torchvision" in sys.modules or _library is not None or _compiled_ops_load():
        return
    missing = [name for name in _SCHEMAS if not _op_exists(name)]
    if missing:
        _library = torch.library.Library("torchvision", "DEF")
        for name in missing:
            _library.define(_SCHEMAS[name])


def import_torchvision():
    """Import torchvision after making sure it can be imported here."""
    ensure_torchvision_importable()
    import torchvision

    return torchvision
