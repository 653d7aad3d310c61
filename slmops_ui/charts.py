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
