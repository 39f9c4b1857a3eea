"""The spec of a searched student: per layer its chosen candidate with exact costs, the totals,
what the search was given, and its metrics (`nas.spec`)."""

from __future__ import annotations

from nas.cost.amortised import CostTable, amortised
from nas.cost.budget import Budget
from nas.data import videos_or_default
from nas.graph.layers import ConvLayer
from nas.searching.options import SearchOptions
from nas.spec import (
    BudgetRef,
    LayerShape,
    Mode,
    SearchRecord,
    Spec,
    SpecLayer,
    TeacherRef,
    Totals,
)
from nas.teachers import Teacher
from search_spaces import candidate_params


def make_spec(
    teacher: Teacher,
    layers: list[ConvLayer],
    picks: dict[str, str],
    table: CostTable,
    budget: Budget,
    size: tuple[int, int],
    options: SearchOptions,
    metrics: dict[str, float],
    *,
    student_size: tuple[int, int] | None = None,
    teacher_macs: int | None = None,
    limit: Budget | None = None,
) -> Spec:
    """The spec of a student: per layer its chosen candidate with exact costs. `size` is the
    frames' (the teacher's) size, `student_size` the student's input where it differs; `limit`
    the resolved `--max-latency` (recorded in seconds beside the text given)."""
    spec_layers = [
        SpecLayer(
            path=layer.path,
            shape=LayerShape.of(layer),
            candidate=picks[layer.path],
            macs=int(table.candidates[layer.path][picks[layer.path]]),
            params=candidate_params(picks[layer.path], layer),
            calls=layer.calls,
        )
        for layer in layers
    ]
    delta = int(table.delta(picks))
    k = options.interval
    student_size = student_size or size
    return Spec(
        teacher=TeacherRef(
            name=teacher.name,
            weights_id=teacher.weights_id,
            num_classes=teacher.num_classes,
            output_kind=teacher.output_kind.value,
        ),
        input_size=student_size,
        mode=options.mode,
        keyframe_interval=k or 1,
        teacher_input_size=size if options.mode == Mode.RESOLUTION else None,
        budget=BudgetRef(
            kind=budget.kind.value,
            value=budget.value,
            text=budget.given,
            relative=budget.relative.fraction if budget.relative else None,
        ),
        layers=spec_layers,
        totals=Totals(
            teacher_macs=int(teacher_macs if teacher_macs is not None else table.keyframe),
            delta_frame_macs=delta,
            amortised_macs=amortised(table.keyframe, delta, k),
            student_params=sum(layer.params for layer in spec_layers),
        ),
        search=SearchRecord(
            **options.search_config().model_dump(),
            search_space=options.search_space,
            video=videos_or_default(options.video, teacher.output_kind),
            input_scale=options.input_scale,
            layout=options.layout,
            max_latency=options.max_latency or None,
            max_latency_s=None if limit is None else limit.value,
        ),
        seed=options.seed,
        metrics=metrics,
    )
