"""The spec: a versioned JSON document from which a trainer rebuilds the student.

    {"format": 1, "teacher": {"name": "deeplabv3_mobilenet_v3_large", "weights_id": "...", ...},
     "input_size": [520, 520], "mode": "delta", "keyframe_interval": 3,
     "budget": {"kind": "macs", "value": 5e9, "text": "5GFLOPs"},
     "layers": [{"path": "backbone.0.0", "shape": {...}, "candidate": "sep_r4", "macs": ..., ...}],
     "totals": {...}, "search": {...}, "seed": 0, "metrics": {...}}

Validated on load (pydantic); an invalid file is a one-line error naming the field.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from nas.core.errors import NasError
from nas.core.io import atomic_write_text

if TYPE_CHECKING:
    from nas.graph.layers import ConvLayer

FORMAT = 1


# The temporal-consistency loss's default weight (`nas.student.tc_loss`): the authors' published
# training configuration (`config/cityscapes/cityscapes_pspnet18_flow.yaml`: `st_weight: 0.1`,
# frame gap 3), added to the cross-entropy there; taken from that code, not confirmed against the
# paper's text. That code's loss is a mean over logits rather than `tc_loss`'s probability
# distance, so 0.1 is the authors' weight, not a calibrated equivalent: tune it against the
# distillation loss it joins.
DEFAULT_TC_WEIGHT = 0.1


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LayerShape(_Frozen):
    """The teacher conv's shape at the spec's input size (what the student block must match)."""

    c_in: int = Field(ge=1)
    c_out: int = Field(ge=1)
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int = Field(ge=1)
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    bn_folded: bool

    @classmethod
    def of(cls, layer: ConvLayer) -> LayerShape:
        return cls(
            c_in=layer.c_in,
            c_out=layer.c_out,
            kernel=layer.kernel,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            in_hw=layer.in_hw,
            out_hw=layer.out_hw,
            bn_folded=layer.bn_path is not None,
        )


class SpecLayer(_Frozen):
    path: str
    shape: LayerShape
    candidate: str
    macs: int = Field(ge=0)  # per frame (all calls)
    params: int = Field(ge=0)
    calls: int = Field(default=1, ge=1)

    @field_validator("candidate")
    @classmethod
    def _known_candidate(cls, value: str) -> str:
        from search_spaces import decode

        decode(value)  # raises ValueError naming the bad token
        return value


class SearchConfig(BaseModel):
    """The inner search's hyperparameters, declared once: the search reads them
    (`nas.searching.supernet.run_search`), `nas.searching.options.SearchOptions` extends them
    with everything else `nas search` takes, the CLI takes its defaults from them, and a spec
    records them (`Spec.search`). They live with the spec, below the search, because the spec
    that records them is read by stages that come before the search (building a student)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(default=150, ge=1)
    batch_size: int = Field(default=2, ge=1)
    lr_weights: float = Field(default=1e-4, gt=0)
    lr_arch: float = Field(default=0.05, gt=0)
    tau_start: float = Field(default=2.0, gt=0)
    tau_end: float = Field(default=0.2, gt=0)
    dual_lr: float = Field(default=0.5, gt=0)
    penalty: str = Field(default="constraint", pattern="^(constraint|fixed)$")  # or the paper's
    beta: float = Field(default=1.0, ge=0)  # the fixed penalty's weight, per budget's worth
    layer_weight: float = Field(default=1.0, ge=0)
    output_weight: float = Field(default=1.0, ge=0)
    task_weight: float = Field(default=1.0, ge=0)
    tc_weight: float = Field(default=DEFAULT_TC_WEIGHT, ge=0)  # temporal consistency (per-frame)
    # Per-frame modes: the share of steps with layer terms only (blockwise).
    blockwise_fraction: float = Field(default=0.5, ge=0, le=1)
    # Weigh each layer's error by its measured output sensitivity (False: a plain mean of layer
    # errors, the objective before it, kept to measure what the weighting is worth).
    sensitivity: bool = True
    seed: int = 0

    @classmethod
    def of(cls, options: BaseModel) -> SearchConfig:
        """The hyperparameters among `options`' fields (a `SearchOptions`, or a record)."""
        return cls(**options.model_dump(include=set(cls.model_fields)))


class SearchRecord(SearchConfig):
    """What a spec records of its search: the hyperparameters, and what else it was given.
    Other keys are kept as they are (benchmarks mark the specs they derive)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    search_space: str = "default"
    video: list[str] | None = None  # the clips searched on
    input_scale: float = 1.0
    layout: str = "auto"  # the layout latencies were measured in
    max_latency: str | None = None  # as given, beside a FLOPs budget
    max_latency_s: float | None = None  # the same in seconds


class TeacherRef(_Frozen):
    name: str
    weights_id: str
    num_classes: int = Field(ge=1)
    output_kind: str


class BudgetRef(_Frozen):
    kind: Literal["macs", "latency"]
    value: float = Field(gt=0)  # absolute: multiply-adds, or seconds
    text: str  # as given: "5GFLOPs", "40ms", or relative to the teacher, "50%", "2x"
    relative: float | None = Field(default=None, gt=0, lt=1)  # "50%" and "2x": 0.5 of the teacher


class Totals(_Frozen):
    teacher_macs: int = Field(ge=0)  # one full teacher frame (the key frame)
    delta_frame_macs: int = Field(ge=0)  # one frame between key frames
    amortised_macs: float = Field(ge=0)  # (teacher + extra + (K-1) * delta) / K
    student_params: int = Field(ge=0)  # parameters of the student blocks
    # What a key frame runs beyond the teacher: the blocks' c_k = z_k - g(a_k), in the linear
    # form (`DeltaForm.LINEAR`); 0 in the recurrence.
    keyframe_extra_macs: int = Field(default=0, ge=0)


class DeltaForm(str, Enum):
    """How a delta frame computes each layer (`nas.delta.model.DeltaConv`): the recurrence
    z_k + g(a_t - a_k), or, g being linear, c_k + g(a_t) with c_k = z_k - g(a_k) computed on
    every key frame (no subtraction pass on delta frames, one block call more on key frames)."""

    RECURRENCE = "recurrence"
    LINEAR = "linear"

    def __str__(self) -> str:
        return self.value


class Mode(str, Enum):
    """How a student runs (DESIGN.md): `delta`, key frames and each layer's change between them;
    `perframe`, a student block on every frame's features; `resolution`, the same on frames
    downscaled to the student's size."""

    DELTA = "delta"
    PERFRAME = "perframe"
    RESOLUTION = "resolution"

    def __str__(self) -> str:  # the value in f-strings and messages, on every Python
        return self.value


MODES = tuple(mode.value for mode in Mode)


class Spec(_Frozen):
    format: Literal[1] = FORMAT
    teacher: TeacherRef
    input_size: tuple[int, int]  # the student's input (and the size of every layer shape)
    mode: Mode
    keyframe_interval: int = Field(ge=1)  # 1 in the per-frame modes: no key frames
    # Resolution mode: the frames' (and the teacher's) size, which the student downscales.
    teacher_input_size: tuple[int, int] | None = None
    budget: BudgetRef
    layers: list[SpecLayer]
    totals: Totals
    search: SearchRecord = Field(default_factory=SearchRecord)
    seed: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)
    delta_form: DeltaForm = DeltaForm.RECURRENCE

    @model_validator(mode="after")
    def _mode_fits(self) -> Spec:
        if self.mode == Mode.DELTA and self.keyframe_interval < 2:
            raise ValueError("a delta spec needs keyframe_interval >= 2")
        if self.mode != Mode.DELTA and self.keyframe_interval != 1:
            raise ValueError(f"a {self.mode} spec has no key frames: keyframe_interval must be 1")
        if self.mode != Mode.DELTA and any(layer.candidate == "zero" for layer in self.layers):
            raise ValueError(f"`zero` predicts nothing in {self.mode} mode: no layer may use it")
        if (self.mode == Mode.RESOLUTION) != (self.teacher_input_size is not None):
            raise ValueError("teacher_input_size is given exactly in resolution mode")
        if self.mode != Mode.DELTA and self.delta_form != DeltaForm.RECURRENCE:
            raise ValueError(f"a {self.mode} spec has no key frames: no linear form")
        if self.totals.keyframe_extra_macs != self._keyframe_extra(self.delta_form):
            raise ValueError(
                f"totals.keyframe_extra_macs must be {self._keyframe_extra(self.delta_form)} "
                f"in the {self.delta_form} form (the blocks' multiply-adds, on every key frame)"
            )
        return self

    def _keyframe_extra(self, form: DeltaForm) -> int:
        """The multiply-adds a key frame adds in `form`: in the linear form, every layer that
        runs a block (neither `full`, which reruns its conv, nor `zero`, which keeps z_k)."""
        if form == DeltaForm.RECURRENCE:
            return 0
        return sum(layer.macs for layer in self.layers if layer.candidate not in ("full", "zero"))

    def in_form(self, form: DeltaForm) -> Spec:
        """The same student run in `form`, its totals counting what that form's key frame adds."""
        extra = self._keyframe_extra(form)
        totals = self.totals
        amortised = totals.amortised_macs + (extra - totals.keyframe_extra_macs) / (
            self.keyframe_interval
        )
        return self.model_copy(
            update={
                "delta_form": DeltaForm(form),
                "totals": totals.model_copy(
                    update={"keyframe_extra_macs": extra, "amortised_macs": amortised}
                ),
            }
        )

    @property
    def interval(self) -> int | None:
        """The key-frame interval, None when there are no key frames (per-frame modes)."""
        return self.keyframe_interval if self.mode == Mode.DELTA else None

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"

    def candidates(self) -> dict[str, str]:
        return {layer.path: layer.candidate for layer in self.layers}


def save_spec(spec: Spec, path: str | Path) -> Path:
    """Write the spec atomically (a reader never sees half a file)."""
    atomic_write_text(path, spec.to_json())
    return Path(path)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    return f"{where}: {error['msg']}"


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec; errors name the file and the offending field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise NasError(f"spec file '{path}' does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NasError(f"spec file '{path}' is not readable JSON ({exc})") from exc
    if isinstance(data, dict) and data.get("format") not in (None, FORMAT):
        raise NasError(
            f"spec file '{path}' has format {data.get('format')!r}; this nas reads {FORMAT}"
        )
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise NasError(f"spec file '{path}' is invalid: {_first_error(exc)}") from exc
