"""One plotly figure per function, each drawn from one plain value of `nas.dashboard.data`."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from nas.dashboard.data import ArchMap, Curves, LatencyPoints, LayerMacs, ParetoData

FEASIBLE = "feasible trials"  # trace names a browser test may look for
INFEASIBLE = "infeasible trials"
TEACHER = "teacher"
FRONT = "Pareto front"

_BLUE = "#1f77b4"
_GREY = "#b0b0b0"
_GOLD = "#e5a50a"
_RED = "#d62728"
_MISSING = "#e4e4e4"
_PALETTE = qualitative.Plotly
_TEMPLATE = "plotly_white"


def _trial_hover(x_label: str, y_label: str) -> str:
    return f"%{{text}}<br>{x_label} %{{x:.4g}}<br>{y_label} %{{y:.4g}}<extra></extra>"


def _teacher_star(gflops: float, value: float, label: str) -> go.Scatter:
    """The teacher as a reference point: a gold star at (its GFLOPs, `value`)."""
    return go.Scatter(
        x=[gflops],
        y=[value],
        mode="markers",
        name=TEACHER,
        marker=dict(symbol="star", size=16, color=_GOLD, line=dict(color="black", width=1)),
        hovertemplate=f"teacher<br>GFLOPs %{{x:.4g}}<br>{label} %{{y:.4g}}<extra></extra>",
    )


def pareto_figure(data: ParetoData) -> go.Figure:
    """Completed trials (feasible in colour, infeasible grey), the teacher, budget and front."""
    fig = go.Figure()
    hover = _trial_hover("GFLOPs", "agreement")
    for feasible, name, color in ((True, FEASIBLE, _BLUE), (False, INFEASIBLE, _GREY)):
        index = [i for i, f in enumerate(data.feasible) if f is feasible]
        if not index:
            continue
        fig.add_trace(
            go.Scatter(
                x=[data.gflops[i] for i in index],
                y=[data.agreement[i] for i in index],
                text=[data.hover[i] for i in index],
                customdata=[data.trials[i] for i in index],
                mode="markers",
                name=name,
                hovertemplate=hover,
                marker=dict(
                    color=color,
                    size=[11 if data.on_front[i] else 8 for i in index],
                    line=dict(color="black", width=[1.5 if data.on_front[i] else 0 for i in index]),
                ),
            )
        )
    if data.staircase_gflops:
        fig.add_trace(
            go.Scatter(
                x=data.staircase_gflops,
                y=data.staircase_agreement,
                mode="lines",
                name=FRONT,
                line=dict(color=_BLUE, width=1.5),
                hoverinfo="skip",
            )
        )
    fig.add_trace(_teacher_star(data.teacher_gflops, data.teacher_agreement, "agreement"))
    if data.budget_gflops is not None:
        fig.add_vline(
            x=data.budget_gflops,
            line=dict(color=_RED, dash="dash", width=1.5),
            annotation_text=f"budget {data.budget_text}",
            annotation_position="top left",
        )
    fig.update_layout(
        title=f"Trials: agreement against cost ({data.budget_note})",
        xaxis_title="amortised GFLOPs per frame",
        yaxis_title="agreement with the teacher",
        template=_TEMPLATE,
        height=520,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
    )
    return fig


def architecture_figure(data: ArchMap) -> go.Figure:
    """Candidate probabilities per layer (heatmap, layers along x) with the chosen ones marked."""
    z = [[row[j] for row in data.probabilities] for j in range(len(data.candidates))]
    z = [[None if math.isnan(v) else v for v in row] for row in z]
    fig = go.Figure()
    fig.add_trace(
        go.Heatmap(
            z=z,
            x=data.layers,
            y=data.candidates,
            zmin=0.0,
            zmax=1.0,
            colorscale="Blues",
            hoverongaps=False,
            colorbar=dict(title="probability"),
            name="probability",
            hovertemplate="%{x}<br>%{y}: p = %{z:.3f}<extra></extra>",
        )
    )
    rank = [f" r{r}" if r is not None else "" for r in data.chosen_rank]
    fig.add_trace(
        go.Scatter(
            x=data.layers,
            y=data.chosen,
            mode="markers",
            name="chosen",
            text=[f"{kind}{r}" for kind, r in zip(data.chosen_kind, rank, strict=True)],
            marker=dict(symbol="x-thin-open", size=11, color=_RED, line=dict(width=2, color=_RED)),
            hovertemplate="%{x}<br>chosen: %{text}<extra></extra>",
        )
    )
    note = "" if data.has_probabilities else " (no probabilities recorded)"
    fig.update_layout(
        title=(
            f"Architecture of trial {data.trial}: agreement {data.agreement:.4f}, "
            f"{data.gflops:.4g} GFLOPs{note}"
        ),
        xaxis=dict(
            title="layer (execution order)",
            type="category",
            categoryorder="array",
            categoryarray=data.layers,
            tickangle=-60,
            showgrid=False,
        ),
        yaxis=dict(
            title="candidate",
            type="category",
            categoryorder="array",
            categoryarray=data.candidates,
            showgrid=False,
        ),
        template=_TEMPLATE,
        plot_bgcolor=_MISSING,  # cells of candidates a layer does not offer
        height=max(420, 120 + 22 * len(data.candidates)),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
    )
    return fig


def layer_macs_figure(data: LayerMacs) -> go.Figure:
    """Teacher conv against chosen student block, MMACs per delta frame, per layer (log y)."""
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=data.layers,
            y=data.teacher_mmacs,
            name="teacher conv",
            marker_color=_GREY,
            hovertemplate="%{x}<br>teacher %{y:.4g} MMACs<extra></extra>",
        )
    )
    fig.add_trace(
        go.Bar(
            x=data.layers,
            y=data.student_mmacs,
            name="student block",
            marker_color=_BLUE,
            text=data.candidates,
            textposition="none",
            hovertemplate="%{x}<br>%{text}: %{y:.4g} MMACs<extra></extra>",
        )
    )
    labels = [f"{path} · {name}" for path, name in zip(data.layers, data.candidates, strict=True)]
    fig.update_xaxes(tickmode="array", tickvals=data.layers, ticktext=labels)
    fig.update_layout(
        title=(
            f"Multiply-adds per layer of trial {data.trial} on a delta frame "
            f"(key frame {data.teacher_frame_gmacs:.4g} GMACs, delta frame "
            f"{data.delta_frame_gmacs:.4g}, amortised over K={data.keyframe_interval}: "
            f"{data.amortised_gmacs:.4g}; outside the convs {data.outside_mmacs:.4g} MMACs)"
        ),
        barmode="group",
        xaxis=dict(title="layer · chosen candidate", type="category", tickangle=-60),
        yaxis=dict(title="MMACs per frame (log)", type="log"),
        template=_TEMPLATE,
        height=460,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        title_font_size=14,
    )
    return fig


def curves_figure(curves: list[Curves]) -> go.Figure:
    """Loss, expected cost against budget, temperature and multiplier per step; one colour and
    one legend entry per trial (clicking it hides all four of its lines)."""
    unit = curves[0].unit if curves else "GFLOPs"
    fig = make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.05,
        subplot_titles=(
            "loss",
            f"expected amortised cost ({unit}) against the budget (dashed)",
            "temperature τ",
            "multiplier λ",
        ),
    )
    for i, curve in enumerate(curves):
        color = _PALETTE[i % len(_PALETTE)]
        group = f"trial {curve.trial}"
        series = (
            (1, curve.loss, "loss", "solid"),
            (2, curve.expected_cost, f"expected {unit}", "solid"),
            (2, curve.budget, f"budget {unit}", "dash"),
            (3, curve.tau, "τ", "solid"),
            (4, curve.multiplier, "λ", "solid"),
        )
        for row, values, label, dash in series:
            fig.add_trace(
                go.Scatter(
                    x=curve.step,
                    y=values,
                    mode="lines",
                    name=group,
                    legendgroup=group,
                    showlegend=row == 1,
                    line=dict(color=color, dash=dash, width=1.5 if dash == "solid" else 1),
                    hovertemplate=f"{group}<br>step %{{x}}<br>{label} %{{y:.4g}}<extra></extra>",
                ),
                row=row,
                col=1,
            )
    fig.update_xaxes(title_text="search step", row=4, col=1)
    fig.update_layout(title="Inner searches", template=_TEMPLATE, height=900)
    return fig


def latency_figure(data: LatencyPoints) -> go.Figure:
    """Measured amortised latency against GFLOPs, with the teacher and a latency budget."""
    fig = go.Figure()
    hover = _trial_hover("GFLOPs", "ms")
    for feasible, name, color in ((True, FEASIBLE, _BLUE), (False, INFEASIBLE, _GREY)):
        index = [i for i, f in enumerate(data.feasible) if f is feasible]
        if index:
            fig.add_trace(
                go.Scatter(
                    x=[data.gflops[i] for i in index],
                    y=[data.latency_ms[i] for i in index],
                    text=[data.hover[i] for i in index],
                    mode="markers",
                    name=name,
                    marker=dict(color=color, size=8),
                    hovertemplate=hover,
                )
            )
    if data.teacher_latency_ms is not None:
        fig.add_trace(_teacher_star(data.teacher_gflops, data.teacher_latency_ms, "ms"))
    if data.budget_ms is not None:
        fig.add_hline(
            y=data.budget_ms,
            line=dict(color=_RED, dash="dash", width=1.5),
            annotation_text=f"budget {data.budget_ms:g} ms",
            annotation_position="top left",
        )
    fig.update_layout(
        title="Measured latency against multiply-adds",
        xaxis_title="amortised GFLOPs per frame",
        yaxis_title="amortised ms per frame",
        template=_TEMPLATE,
        height=460,
    )
    return fig
