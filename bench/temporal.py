"""Are delta models more temporally consistent than their teachers? (The Delta Distillation claim.)

Teacher: the PP-OCRv4 text detector (real weights). A delta student is searched at half the
teacher's multiply-adds (key frame every 3) on the built-in `sample:bikes` clip, retrained on
it, then the teacher and the student run over each built-in real clip: temporal consistency TC
(the prediction of frame t+1 warped to frame t by DIS optical flow, mIoU with frame t's
prediction, maps thresholded at 0.3) of both, and the student's agreement with the teacher;
beside them the baseline every delta model must beat, the key frame's prediction repeated
(every layer `zero`).

    python bench/temporal.py [--search-steps 100] [--train-steps 200] [--frames 120]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import torch

from nas.core.sizes import parse_size
from nas.cost.macs import count_macs
from nas.delta.liveness import NO_CHANGE
from nas.searching.options import SearchOptions
from nas.searching.pipeline import search
from nas.student.build import build_student, idle_layers_of, teacher_for
from nas.student.clips import clip_batches, video_clips
from nas.student.evaluate import evaluate
from nas.student.train import TrainConfig, train_student
from nas.teachers import load_teacher

CLIPS = ("sample:bikes", "sample:carphone", "sample:bigbuckbunny")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search-steps", type=int, default=100)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", default="288x640")
    args = parser.parse_args()
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        size = parse_size(args.size)
        teacher_macs = count_macs(load_teacher("ppocrv4_det").module, size)
        options = SearchOptions(
            teacher="ppocrv4_det", budget=str(teacher_macs / 2), input_size=args.size,
            video="sample:bikes", keyframe_interval=3, steps=args.search_steps, max_frames=250,
            device="cpu", out=str(Path(tmp) / "search"),
        )  # fmt: skip
        spec = search(options).spec
        teacher = teacher_for(spec, device="cpu")
        student = build_student(spec, teacher)
        train_clips, _ = video_clips(
            teacher, "sample:bikes", size=size, interval=3, max_frames=250, val_fraction=0.2
        )
        batches = clip_batches(train_clips, teacher, batch_size=2, device=device)
        weights = train_student(
            student, teacher, batches, out=Path(tmp) / "train",
            config=TrainConfig(steps=args.train_steps, checkpoint_every=args.train_steps),
        )  # fmt: skip
        untrained = build_student(spec, teacher)
        # The baseline a delta model must beat: every layer `zero`, the key frame repeated.
        repeated = build_student(
            spec.model_copy(
                update={
                    "layers": [
                        layer.model_copy(update={"candidate": NO_CHANGE, "macs": 0, "params": 0})
                        for layer in spec.layers
                    ]
                }
            ),
            teacher,
        )
        trained = build_student(spec, teacher)
        trained.load_state_dict(torch.load(weights, weights_only=True))
    print(
        f"PP-OCRv4 at {args.size}, delta student at {spec.totals.amortised_macs / 1e9:.3f} of "
        f"{spec.totals.teacher_macs / 1e9:.3f} GFLOPs per frame (key frame every 3), "
        f"{args.search_steps} search + {args.train_steps} training steps on sample:bikes"
    )
    idle = idle_layers_of(spec, trained)
    print(
        f"{len(spec.layers) - len(idle)} of {len(spec.layers)} layers run a block on delta "
        "frames: "
        + ", ".join(
            f"{name} {count}"
            for name, count in Counter(
                layer.candidate.split("_r")[0] for layer in spec.layers if layer.path not in idle
            ).most_common()
        )
    )
    print(f"{'clip':22} {'model':12} {'TC':>7} {'agreement':>9}")
    for clip in CLIPS:
        models = (("key repeated", repeated), ("searched", untrained), ("retrained", trained))
        for label, model in models:
            result = evaluate(
                spec, teacher, model, clip, interval=3, max_frames=args.frames, device=device,
                baselines=False,  # teacher and student only: the columns read below
            )  # fmt: skip
            rows = {name: (t, s) for name, t, s, _ in result.rows}
            tc_teacher, tc_student = rows["temporal consistency TC"]
            agreement = rows["agreement with the teacher (frames between key frames)"][1]
            if label == models[0][0]:
                print(f"{clip:22} {'teacher':12} {tc_teacher:7.4f} {1.0:9.4f}")
            print(f"{clip:22} {label:12} {tc_student:7.4f} {agreement:9.4f}")


if __name__ == "__main__":
    main()
