"""The dashboard page: a header, the Pareto-optimal trials and the figures, in one HTML file.

plotly.js is embedded once, with the first figure; the page loads nothing from the network (no
CDN, no web fonts, no MathJax), so it renders offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import plotly.graph_objects as go
import plotly.io as pio

from nas.dashboard.data import Summary

CONFIG = {"displaylogo": False, "responsive": True}

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1400px; padding: 1rem 2rem; color: #222; }
h1 { margin-bottom: 0.2rem; }
h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.15rem 1rem; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
table.front { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.front th, table.front td { border: 1px solid #ccc; padding: 0.2rem 0.6rem;
                                 text-align: right; }
table.front th { background: #f3f3f3; }
p.note { color: #666; }
footer { margin-top: 2rem; color: #888; font-size: 0.85rem; }
"""


@dataclass
class Section:
    """One figure on the page: its heading, the id of its div, and the figure (or a note)."""

    div_id: str
    heading: str
    figure: go.Figure | None
    note: str = ""  # shown instead of (or above) the figure


def _facts(summary: Summary) -> str:
    states = ", ".join(
        f"{count} {state.lower()}" for state, count in sorted(summary.states.items())
    )
    teacher = f"{summary.teacher} at {summary.input_size[0]}x{summary.input_size[1]}: "
    teacher += f"{summary.teacher_gflops:.4g} GFLOPs per frame"
    if summary.teacher_latency_ms is not None:
        teacher += f", {summary.teacher_latency_ms:.4g} ms"
    budget = (
        f"{summary.budget_text} ({'multiply-adds' if summary.budget_kind == 'macs' else 'latency'})"
    )
    facts = [
        ("teacher", teacher),
        ("budget", budget),
        ("trials", f"{summary.trials}" + (f" ({states})" if states else "")),
        ("objectives", ", ".join(summary.objectives)),
        ("storage", summary.storage),
    ]
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    return f'<dl class="facts">{items}</dl>'


def _front_table(summary: Summary) -> str:
    if not summary.front:
        return '<p class="note">No Pareto-optimal trial yet.</p>'
    head = "".join(f"<th>{escape(c)}</th>" for c in summary.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>"
        for row in summary.front
    )
    return f'<table class="front"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render(summary: Summary, sections: list[Section], *, generated: str = "") -> str:
    """The whole HTML document; plotly.js goes in with the first figure, and only there."""
    parts = []
    embedded = False
    for section in sections:
        parts.append(f'<section id="{escape(section.div_id)}-section">')
        parts.append(f"<h2>{escape(section.heading)}</h2>")
        if section.note:
            parts.append(f'<p class="note">{escape(section.note)}</p>')
        if section.figure is not None:
            parts.append(
                pio.to_html(
                    section.figure,
                    config=CONFIG,
                    include_plotlyjs=not embedded,
                    include_mathjax=False,
                    full_html=False,
                    div_id=section.div_id,
                    default_height=f"{section.figure.layout.height or 480}px",
                )
            )
            embedded = True
        parts.append("</section>")
    title = f"nas study {summary.study}"
    footer = f"<footer>Written {escape(generated)} by nas.</footer>" if generated else ""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            f"<header><h1>Study {escape(summary.study)}</h1>{_facts(summary)}</header>",
            '<section id="front-table"><h2>Pareto-optimal trials</h2>',
            _front_table(summary),
            "</section>",
            *parts,
            footer,
            "</body>",
            "</html>",
            "",
        ]
    )
