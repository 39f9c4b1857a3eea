"""From a spec back to a working model: the student, initialised from the teacher's weights.

    spec = load_spec("results/demo/spec.json")
    teacher = load_teacher(spec.teacher.name)
    student = build_student(spec, teacher)          # a DeltaModel, eval mode

A spec is only ever built on the teacher it was searched for: same registry name, same weights
(file hash), same conv layers with the same shapes at the spec's input size.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nas.core.errors import NasError
from nas.cost.latency import resolve_device
from nas.delta.liveness import NO_CHANGE, idle_layers, layer_sources, read_wiring
from nas.delta.model import DeltaModel
from nas.delta.replay import replay_for
from nas.graph.layers import layer_graph
from nas.spec import DeltaForm, LayerShape, Mode, Spec, load_spec
from nas.teachers import Teacher, load_teacher
from nas.teachers.weights import load_into, read_state_dict
from search_spaces import InputStats, build_candidate


def check_teacher(spec: Spec, teacher: Teacher) -> None:
    """Refuse a teacher that is not the one the spec was made for."""
    if teacher.name != spec.teacher.name:
        raise NasError(
            f"the spec was made for teacher {spec.teacher.name}, not {teacher.name}: "
            f"pass --teacher {spec.teacher.name}"
        )
    if teacher.weights_id != spec.teacher.weights_id:
        made, _, made_how = spec.teacher.weights_id.partition("+")
        now, _, now_how = teacher.weights_id.partition("+")
        if made == now:  # the same file, converted by another version of the rewrite
            raise NasError(
                f"the spec was made on {spec.teacher.name} as converted by another version "
                f"of the toolkit ({made_how or 'as read'}, now {now_how or 'as read'}), whose "
                "convs differ: search again"
            )
        raise NasError(
            f"the spec was made for {spec.teacher.name} with weights "
            f"{spec.teacher.weights_id[:16]}, not {teacher.weights_id[:16]}: pass the same "
            "--teacher-weights file as the search"
        )


def teacher_for(spec: Spec, *, weights: str | Path | None = None, device: str = "cpu") -> Teacher:
    """Load the teacher a spec was made for (its class count too), and check it is that one."""
    teacher = load_teacher(spec.teacher.name, weights=weights, device=device)
    if teacher.num_classes != spec.teacher.num_classes:
        teacher = load_teacher(
            spec.teacher.name, weights=weights, num_classes=spec.teacher.num_classes, device=device
        )
    check_teacher(spec, teacher)
    return teacher


def build_student(
    spec: Spec, teacher: Teacher, *, stats: dict[str, InputStats] | None = None
) -> DeltaModel:
    """The delta model the spec describes, each block initialised from the teacher's weights.

    With `stats` (`nas.student.statistics`), low-rank blocks start from the data-aware SVD; without,
    from the plain truncated SVD of the weights.
    """
    check_teacher(spec, teacher)
    layers = layer_graph(teacher.module, tuple(spec.input_size))
    by_path = {layer.path: layer for layer in spec.layers}
    found = {layer.path for layer in layers}
    if found != set(by_path):
        missing = sorted(set(by_path) - found) or sorted(found - set(by_path))
        raise NasError(
            f"the spec's layers do not match teacher {teacher.name}'s convs (first difference: "
            f"{missing[0]}): was the spec made for another architecture?"
        )
    for layer in layers:
        if LayerShape.of(layer) != by_path[layer.path].shape:
            raise NasError(
                f"layer {layer.path} of teacher {teacher.name} has shape {LayerShape.of(layer)} "
                f"at {spec.input_size[0]}x{spec.input_size[1]}, but the spec says "
                f"{by_path[layer.path].shape}"
            )

    def make_block(layer, conv):
        candidate = by_path[layer.path].candidate
        layer_stats = (stats or {}).get(layer.path)
        return build_candidate(candidate, layer, weight=conv.weight.detach(), stats=layer_stats)

    model = DeltaModel.build(
        teacher.module,
        layers,
        make_block,
        output_key=teacher.output_key,
        per_frame=spec.mode != Mode.DELTA,
        student_size=tuple(spec.input_size) if spec.mode == Mode.RESOLUTION else None,
    )
    picks = {layer.path: layer.candidate for layer in spec.layers}
    if NO_CHANGE in picks.values() and not model.per_frame:  # what zeros leave need not run
        model.use_replay(replay_for(model, read_wiring(model, tuple(spec.input_size)), picks))
    model.use_linear(spec.delta_form == DeltaForm.LINEAR)
    return model.eval()


def load_student(
    spec_path: str | Path,
    *,
    weights: str | Path | None = None,
    teacher_weights: str | Path | None = None,
    device: str | None = None,
) -> tuple[Spec, Teacher, DeltaModel, torch.device]:
    """Spec file (and trained weights, if any) to a ready student on a device, with its teacher."""
    spec = load_spec(spec_path)
    dev = resolve_device(device)
    teacher = teacher_for(spec, weights=teacher_weights, device=str(dev))
    student = build_student(spec, teacher).to(dev)
    if weights is not None:
        load_student_weights(student, weights)
    return spec, teacher, student, dev


def load_student_weights(student: DeltaModel, path: str | Path) -> DeltaModel:
    """Load weights saved by `nas train` (a state dict, read with `weights_only=True`)."""
    state = read_state_dict(path)
    load_into(student, state, who="student of the spec", source=str(path))
    return student


def idle_layers_of(spec: Spec, student: DeltaModel) -> set[str]:
    """The spec's layers that pass no change to the output on delta frames (`nas.delta.liveness`):
    its `zero`s and the layers they leave with nothing to do. All of them: the student repeats
    the key frame's output. Per-frame specs have none."""
    if student.per_frame:
        return set()
    picks = {layer.path: layer.candidate for layer in spec.layers}
    sources = layer_sources(student, student.student_size or tuple(spec.input_size))
    return idle_layers(sources, {path for path, name in picks.items() if name == NO_CHANGE})
