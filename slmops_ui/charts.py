"""Pure functions: records -> plotly figures."""
from __future__ import annotations

from collections import defaultdict

import plotly.graph_objects as go


def metrics_figure(points, title: str = "Metrics by step") -> go.Figure | None:
    """One line per metric name (step on x); None when the run has no series with more than one point."""
    series: dict[str, list] = defaultdict(list)
    for p in points:
        series[p.name].append((p.step, p.value))
    series = {k: sorted(v) for k, v in series.items() if len(v) > 1}
    if not series:
        return None
    fig = go.Figure()
    for name, values in series.items():
        fig.add_trace(go.Scatter(x=[s for s, _ in values], y=[v for _, v in values], mode="lines+markers",
                                 name=name))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="value", height=320,
                      margin=dict(l=50, r=20, t=50, b=40), legend=dict(orientation="h", y=-0.25),
                      template="plotly_white")
    return fig


LOSS_NAMES = {"train_loss": "train loss", "eval_loss": "eval loss", "kd_loss": "KD loss (train)",
              "ce_loss": "CE loss (train)"}


def loss_figure(points, title: str = "Loss") -> go.Figure | None:
    """Train and eval loss against the optimizer step; None before the first logged step."""
    curves: dict[str, list] = defaultdict(list)
    for p in points:
        if p.name in LOSS_NAMES:
            curves[p.name].append((p.step, p.value))
    if not curves:
        return None
    fig = go.Figure()
    for name, values in curves.items():
        values.sort()
        fig.add_trace(go.Scatter(x=[s for s, _ in values], y=[v for _, v in values], name=LOSS_NAMES[name],
                                 mode="lines+markers" if name == "eval_loss" else "lines"))
    fig.update_layout(title=title, xaxis_title="optimizer step", yaxis_title="loss (nats/token)",
                      xaxis_tickformat="d",
                      height=340, margin=dict(l=60, r=20, t=50, b=40), template="plotly_white",
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return fig
