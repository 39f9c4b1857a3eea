"""ONNX models as teachers, converted to PyTorch with onnx2torch.

`onnx:PATH` takes any ONNX file. Exporters such as paddle2onnx store weights as `Constant`
nodes, which onnx2torch does not turn into parameters; they are moved into the graph's
initializers first. The converted graph is then simplified (`nas.graph.simplify`: affines and
batch norms folded into the convs, spelled-out hard-swishes fused), exactly, so that a frame
does not spend most of its time on elementwise passes; a teacher so rewritten names its weights
by the file's SHA-256 and the rewrite's version (`+simplify1`), so a spec or student made on the
graph as converted before is refused rather than misread.

The built-in `ppocrv4_det` is the PP-OCRv4 text detector that the `rapidocr-onnxruntime` package
ships: a real trained dense-prediction CNN.

ONNX teachers are always materialised on a real device: their converted graphs read constants
(resize scales, shapes) at run time, which shape-only `meta` tensors cannot give.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from nas.core.errors import NasError
from nas.core.packaged import packaged_file
from nas.core.torchvision_compat import ensure_torchvision_importable
from nas.graph.simplify import SIMPLIFY_TAG, simplify
from nas.teachers.base import (
    UNIT_RANGE,
    InputSpec,
    OutputKind,
    Teacher,
    file_teacher,
)
from nas.teachers.registry import TEACHERS

DEFAULT_SIZE = (480, 640)

# onnx2torch's Slice indexes with a list, which torch warns about on every converted model's
# first pass; the indexing works, and users cannot act on the warning.
warnings.filterwarnings(
    "ignore",
    message="Using a non-tuple sequence for multidimensional indexing",
    category=UserWarning,
)


def constants_to_initializers(model) -> int:
    """Move tensor-valued `Constant` nodes into initializers, in place; return how many."""
    graph = model.graph
    kept, moved = [], 0
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and len(node.output) == 1 and set(attrs) == {"value"}:
            tensor = type(attrs["value"].t)()
            tensor.CopyFrom(attrs["value"].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            moved += 1
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return moved


def _static_hw(model) -> tuple[int, int] | None:
    dims = model.graph.input[0].type.tensor_type.shape.dim  # callers check there is an input
    if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
        return int(dims[2].dim_value), int(dims[3].dim_value)
    return None


def convert_onnx(path: str | Path) -> tuple[torch.nn.Module, tuple[int, int] | None, int]:
    """An ONNX file as an eval-mode torch module (simplified), its static input size if it has
    one, and how many rewrites the simplification made."""
    path = Path(path)
    if not path.is_file():
        raise NasError(f"ONNX file '{path}' does not exist: use onnx:PATH with a .onnx file")
    import onnx

    ensure_torchvision_importable()  # onnx2torch imports torchvision
    import onnx2torch

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends with no common base
        raise NasError(f"cannot read ONNX file '{path}': {str(exc)[:160]}") from exc
    if not model.graph.input or not model.graph.output:
        raise NasError(f"ONNX file '{path}' has no graph inputs or outputs: is it a whole model?")
    constants_to_initializers(model)
    try:
        module = onnx2torch.convert(model)
    except Exception as exc:  # onnx2torch reports unsupported or broken graphs many ways
        reason = f"{type(exc).__name__}: {str(exc)[:160]}"
        raise NasError(f"cannot convert ONNX file '{path}' to PyTorch ({reason})") from exc
    module.eval()
    return module, _static_hw(model), simplify(module)


def onnx_teacher(
    path: str | Path,
    *,
    name: str | None = None,
    input_spec: InputSpec | None = None,
    output_kind: OutputKind | None = None,
    device: str = "cpu",
) -> Teacher:
    """A teacher from an ONNX file; unknown feeding details default to [0, 1] RGB inputs."""
    module, static, rewrites = convert_onnx(path)
    spec = input_spec or InputSpec(
        **UNIT_RANGE, size_multiple=1, default_size=static or DEFAULT_SIZE
    )
    return file_teacher(
        module,
        path,
        name=name or f"onnx:{path}",
        input_spec=spec,
        output_kind=output_kind,
        device=device,
        conversion=SIMPLIFY_TAG if rewrites else None,
    )


def check_no_weight_options(name: str, weights, num_classes) -> None:
    if weights is not None:
        raise NasError(
            f"teacher {name} takes its weights from its model file: drop --teacher-weights"
        )
    if num_classes is not None:
        raise NasError(
            f"--num-classes applies to the torchvision teachers (DeepLabV3 family, "
            f"classifiers), not to {name}"
        )


# PaddleOCR trains on OpenCV (BGR) images, and RapidOCR feeds its detector BGR.
PPOCR_INPUT = InputSpec(
    mean=(0.5,) * 3,
    std=(0.5,) * 3,
    size_multiple=32,
    default_size=DEFAULT_SIZE,
    channel_order="bgr",
)


def ppocr_det_path() -> Path:
    """The PP-OCRv4 detector inside the installed `rapidocr-onnxruntime` package."""
    return packaged_file(
        "rapidocr_onnxruntime",
        "models/ch_PP-OCRv4_det_infer.onnx",
        needed_by="teacher ppocrv4_det",
        install="pip install --no-deps rapidocr-onnxruntime==1.4.4",
    )


@TEACHERS.register("ppocrv4_det", aliases=("ppocr",))
def ppocrv4_det(
    *,
    weights: Path | None = None,
    num_classes: int | None = None,
    aux: bool = False,
    device: str = "cpu",
) -> Teacher:
    """PP-OCRv4 text detector (1.17 M params, Apache-2.0): a one-channel text-probability map."""
    check_no_weight_options("ppocrv4_det", weights, num_classes)
    return onnx_teacher(
        ppocr_det_path(),
        name="ppocrv4_det",
        input_spec=PPOCR_INPUT,
        output_kind=OutputKind.PROB_MAP,
        device=device,
    )
