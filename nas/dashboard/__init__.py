"""The study dashboard: one self-contained HTML file (`RUN/dashboard.html`), viewable offline.

data.py     the run folder read into plain values, one per figure (no plotly)
figures.py  one plotly figure per value
page.py     the HTML document: header, Pareto-optimal trials, figures; plotly.js once

write_dashboard(Path("results/study-1"))    # -> results/study-1/dashboard.html
"""

from __future__ import annotations

import time
from pathlib import Path

from nas.core.io import atomic_write_text
from nas.dashboard import data as d
from nas.dashboard import figures as f
from nas.dashboard.page import Section, render
from nas.study import runs

__all__ = ["build_page", "write_dashboard"]


def build_page(run: str | Path, *, trial: int | None = None) -> str:
    """The dashboard of the run folder `run` as an HTML string; `trial` picks the trial whose
    architecture is shown (default: the on-front trial with the highest agreement)."""
    data = d.load_run(run)
    pareto = d.pareto_points(data)
    sections = [
        Section(
            "pareto",
            "Agreement against cost",
            f.pareto_figure(pareto),
            note=(
                f"{len(pareto.left_out)} completed trial(s) without a score are not drawn: "
                + ", ".join(map(str, pareto.left_out))
                if pareto.left_out
                else ""
            ),
        )
    ]
    arch = d.architecture_map(data, trial)
    macs = d.layer_macs(data, trial)
    if arch is None or macs is None:
        sections.append(
            Section("architecture", "Architecture", None, note="No trial has a spec yet.")
        )
    else:
        sections.append(
            Section(
                "architecture", f"Architecture of trial {arch.trial}", f.architecture_figure(arch)
            )
        )
        sections.append(Section("layer-macs", "Multiply-adds per layer", f.layer_macs_figure(macs)))
    curves = d.search_curves(data)
    sections.append(
        Section(
            "curves",
            "Inner searches",
            f.curves_figure(curves) if curves else None,
            note="" if curves else "No trial has written a search log yet.",
        )
    )
    latency = d.latency_points(data)
    if not latency.empty:
        sections.append(Section("latency", "Latency", f.latency_figure(latency)))
    return render(d.summary(data), sections, generated=time.strftime("%Y-%m-%d %H:%M:%S"))


def write_dashboard(run: Path, *, trial: int | None = None) -> Path:
    """Read the run folder, write `RUN/dashboard.html` atomically, and return its path."""
    path = Path(run) / runs.DASHBOARD
    atomic_write_text(path, build_page(run, trial=trial))
    return path
