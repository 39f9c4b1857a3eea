"""A spec with some layers' candidates changed by hand, its costs and totals recounted.

To ask what an allocation the search did not choose is worth: write the variant, then score it
beside the cheap answers as a searched one is (`bench/quality.py --spec`). The variant must
still meet the spec's budget (refused otherwise, in one line).

    python bench/respec.py SPEC.json --set p2o/Conv/61=down2_full --set p2o/Conv/10=lowrank_r24 \\
        --out VARIANT.json
"""

from __future__ import annotations

import argparse
import sys

from nas.core.errors import NasError
from nas.cost.amortised import amortised
from nas.searching.make_spec import make_spec
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.spec import Spec, load_spec, save_spec


def respec(spec: Spec, changes: dict[str, str]) -> Spec:
    """`spec` with `changes` (layer path -> candidate) applied, costs from the search's own
    table at the spec's size; its search record and metrics are not carried over."""
    options = SearchOptions(
        teacher=spec.teacher.name,
        budget=spec.budget.text,
        input_size=f"{spec.input_size[0]}x{spec.input_size[1]}",
        mode=spec.mode,
        keyframe_interval=spec.keyframe_interval,
        max_frames=40,
        steps=1,
    )
    run = prepare(options)
    picks = spec.candidates()
    for path, name in changes.items():
        if path not in picks:
            raise NasError(f"the spec has no layer {path}: name one of its layers' paths")
        if name not in run.macs.candidates[path]:
            offered = ", ".join(sorted(run.macs.candidates[path]))
            raise NasError(f"layer {path} offers no candidate {name}: one of {offered}")
        picks[path] = name
    cost = amortised(run.macs.keyframe, run.macs.delta(picks), spec.interval)
    if cost > run.budget.value:
        raise NasError(
            f"the variant costs {cost / 1e9:.4f} GMACs amortised, over the budget's "
            f"{run.budget.value / 1e9:.4f}: change fewer layers or cheaper candidates"
        )
    return make_spec(
        run.teacher, run.layers, picks, run.macs, run.budget, run.size, options, {},
        teacher_macs=run.teacher_macs,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--set", action="append", default=[], help="PATH=CANDIDATE")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    try:
        changes = dict(item.split("=", 1) for item in args.set)
        variant = respec(load_spec(args.spec), changes)
    except (NasError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    save_spec(variant, args.out)
    print(
        f"{args.out}: {len(changes)} layers changed, "
        f"{variant.totals.amortised_macs / 1e9:.4f} GMACs amortised"
    )


if __name__ == "__main__":
    main()
