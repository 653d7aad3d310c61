"""Pure functions: records -> plotly figures."""
from __future__ import annotations

from collections import defaultdict

import plotly.graph_objects as go


METRIC_FAMILIES = (("loss", "loss (nats/token)"), ("speed", "tokens/s"), ("score", "score / share"),
                   ("learning_rate", "learning rate"), ("other", "value"))


def metric_family(name: str) -> str:
    """Which panel a metric is drawn in: quantities of one unit share an axis (a loss near 1 is not drawn on the
    axis of a speed near 30)."""
    if "loss" in name:
        return "loss"
    if "tokens_per_s" in name or "tok_s" in name:
        return "speed"
    if any(w in name for w in ("score", "agreement", "retention", "accuracy")):
        return "score"
    return "learning_rate" if name == "learning_rate" else "other"


def metrics_figure(points, title: str = "Metrics by step") -> go.Figure | None:
    """One panel per family of metrics (loss, speed, score, learning rate, other), one line per metric, step on a
    shared x; None when the run has no series with more than one point. The epoch counter is left out (it is a
    second x, not a measurement)."""
    from plotly.subplots import make_subplots

    series: dict[str, list] = defaultdict(list)
    for p in points:
        if p.name != "epoch":
            series[p.name].append((p.step, p.value))
    series = {k: sorted(v) for k, v in series.items() if len(v) > 1}
    if not series:
        return None
    families = [(key, unit) for key, unit in METRIC_FAMILIES if any(metric_family(n) == key for n in series)]
    others = [n for n in series if metric_family(n) == "other"]
    if 0 < len(others) <= 2:  # the panel of the rest says what it holds (grad_norm), not "value"
        families = [(key, ", ".join(others) if key == "other" else unit) for key, unit in families]
    fig = make_subplots(rows=len(families), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[unit for _, unit in families])
    for row, (key, unit) in enumerate(families, 1):
        for name, values in series.items():
            if metric_family(name) == key:
                fig.add_trace(go.Scatter(x=[s for s, _ in values], y=[v for _, v in values], name=name,
                                         mode="lines+markers" if len(values) < 30 else "lines"), row=row, col=1)
        fig.update_yaxes(title_text=unit, row=row, col=1)
    fig.update_xaxes(title_text="step", row=len(families), col=1)
    fig.update_layout(title=title, height=200 + 180 * len(families), margin=dict(l=60, r=20, t=60, b=40),
                      legend=dict(orientation="h", y=-0.12), template="plotly_white")
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


def pareto_points(rows: list[dict]) -> set[str]:
    """Variants no other row beats on all of size (smaller), decode speed (higher) and perplexity ratio (lower)."""
    def dominates(a, b):
        no_worse = (a["size_mb"] <= b["size_mb"] and a["decode_tok_s"] >= b["decode_tok_s"]
                    and a["ppl_ratio"] <= b["ppl_ratio"])
        better = (a["size_mb"] < b["size_mb"] or a["decode_tok_s"] > b["decode_tok_s"]
                  or a["ppl_ratio"] < b["ppl_ratio"])
        return no_worse and better
    return {r["variant"] for r in rows if not any(dominates(o, r) for o in rows if o is not r)}


def pareto_figure(rows: list[dict], max_ppl_ratio: float | None = None, title: str = "Export candidates") \
        -> go.Figure | None:
    """Size (x) vs decode speed (y), colour = perplexity ratio; Pareto-optimal candidates ringed and labelled."""
    rows = [r for r in rows if r.get("size_mb") and r.get("decode_tok_s") and r.get("ppl_ratio") == r.get("ppl_ratio")]
    if not rows:
        return None
    front = pareto_points(rows)
    fig = go.Figure()
    for on_front in (False, True):
        group = [r for r in rows if (r["variant"] in front) == on_front]
        if not group:
            continue
        fig.add_trace(go.Scatter(
            x=[r["size_mb"] for r in group], y=[r["decode_tok_s"] for r in group], mode="markers+text",
            text=[r["variant"] for r in group], textposition="top center",
            name="Pareto-optimal" if on_front else "dominated",
            marker=dict(size=16 if on_front else 11, color=[r["ppl_ratio"] for r in group], colorscale="RdYlGn_r",
                        cmin=1.0, cmax=max(1.5, max(r["ppl_ratio"] for r in rows)),
                        line=dict(width=3 if on_front else 1, color="black"),
                        symbol=["circle" if max_ppl_ratio is None or r["ppl_ratio"] <= max_ppl_ratio else "x"
                                for r in group],
                        colorbar=dict(title="perplexity<br>× source", x=1.02) if on_front else None,
                        showscale=on_front),
            customdata=[[r["ppl_ratio"], r.get("first_token_agreement")] for r in group],
            hovertemplate="%{text}<br>%{x:.1f} MB · %{y:.0f} tok/s<br>perplexity ×%{customdata[0]:.3f}"
                          "<br>first-token agreement %{customdata[1]:.0%}<extra></extra>"))
    bound = f" · ✕ = over the ×{max_ppl_ratio} quality bound" if max_ppl_ratio else ""
    fig.update_layout(title=f"{title}: size vs decode speed (colour = perplexity ratio){bound}",
                      xaxis_title="size on disk (MB)", yaxis_title="decode tokens/s", height=420,
                      template="plotly_white", margin=dict(l=60, r=40, t=60, b=50),
                      legend=dict(orientation="h", y=-0.18))
    return fig


# ---- run comparison -----------------------------------------------------------------------------------------------
OVERLAY_DASH = {"train_loss": "solid", "eval_loss": "dash", "kd_loss": "dot", "ce_loss": "dashdot"}
RUN_COLOURS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#eeca3b"]


def overlay_loss_figure(curves: dict, x_axis: str = "step", steps_per_epoch: dict | None = None,
                        title: str = "Loss curves") -> go.Figure | None:
    """The loss curves of several runs on one chart: one colour per run, one dash style per loss kind
    (train solid, eval dashed with markers, KD dotted, CE dash-dot).

    `curves` maps a run label (e.g. "#12 distill") to its MetricPoints; `steps_per_epoch` maps the same labels to
    optimizer steps per epoch or None. With x_axis="epoch" the x values are step / steps_per_epoch; when any run's
    epoch is unknown the whole chart stays on steps (one unit per axis) and the subtitle names those runs.
    None when no run logged a loss."""
    steps_per_epoch = steps_per_epoch or {}
    losses: dict[str, dict[str, list]] = {}
    for label, points in curves.items():
        series: dict[str, list] = defaultdict(list)
        for p in points:
            if p.name in LOSS_NAMES:
                series[p.name].append((p.step, p.value))
        losses[label] = series
    silent = [label for label, series in losses.items() if not series]
    unknown = [label for label, series in losses.items() if series and not steps_per_epoch.get(label)]
    by_epoch = x_axis == "epoch" and not unknown
    notes = [f"epoch unknown for {', '.join(unknown)}: x is optimizer steps"] if x_axis == "epoch" and unknown else []
    if silent:
        notes.append(f"no loss logged by {', '.join(silent)}")
    fig = go.Figure()
    for i, (label, series) in enumerate(losses.items()):
        if not series:
            continue
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        for name in LOSS_NAMES:  # a fixed order: train, eval, KD, CE
            if name not in series:
                continue
            values = sorted(series[name])
            steps = [s for s, _ in values]
            xs = [s / steps_per_epoch[label] for s in steps] if by_epoch else steps
            fig.add_trace(go.Scatter(
                x=xs, y=[v for _, v in values], name=f"{label} · {LOSS_NAMES[name]}", legendgroup=label,
                mode="lines+markers" if name == "eval_loss" else "lines", customdata=steps,
                line=dict(color=colour, dash=OVERLAY_DASH[name], width=2), marker=dict(size=6),
                hovertemplate=f"{label} · {LOSS_NAMES[name]}<br>step %{{customdata}}"
                              + (" · epoch %{x:.2f}" if by_epoch else "") + "<br>loss %{y:.4f}<extra></extra>"))
    if not fig.data:
        return None
    subtitle = f"<br><sup>{' · '.join(notes)}</sup>" if notes else ""
    fig.update_layout(
        title=dict(text=f"{title}{subtitle}", x=0.01, xanchor="left"),
        xaxis_title="epoch (passes over the training data)" if by_epoch else "optimizer step",
        yaxis_title="loss (nats/token)", height=460, template="plotly_white",
        margin=dict(l=60, r=20, t=70 if notes else 50, b=50), hovermode="closest",
        legend=dict(title_text="run · loss (colour = run, dash = loss kind)", groupclick="toggleitem",
                    font=dict(size=11)))
    if not by_epoch:
        fig.update_xaxes(tickformat="d")
    return fig


def student_sweep_figure(rows: list[dict], teacher_params_m: float | None = None,
                         teacher_score: float | None = None) -> go.Figure | None:
    """A distill sweep: task retention (left axis, with the student's 95 % interval as a share of the teacher's
    score when `teacher_score` is given) and decode speed × teacher (right axis) against the students' parameters;
    the 90 % retention goal as a dotted line. None before the first student is done."""
    rows = sorted((r for r in rows if r.get("student_params_m")), key=lambda r: r["student_params_m"])
    if not rows:
        return None
    x = [r["student_params_m"] for r in rows]
    labels = [f"{r['layers']} layers" for r in rows]
    retention = [100 * (r.get("task_retention") or 0) for r in rows]
    share = 100 / teacher_score if teacher_score else 0  # the teacher's own interval is not in the bars
    high = [share * r["task_ci_high_student"] - y if share and r.get("task_ci_high_student") is not None else 0
            for r, y in zip(rows, retention)]
    low = [y - share * r["task_ci_low_student"] if share and r.get("task_ci_low_student") is not None else 0
           for r, y in zip(rows, retention)]
    hover = [f"{lab}: task score {r.get('task_score_student')} ({r.get('task_ci_low_student')}–"
             f"{r.get('task_ci_high_student')}), {y:.1f} % of the teacher's<extra></extra>"
             for lab, r, y in zip(labels, rows, retention)]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=retention, mode="lines+markers+text", text=labels,
                             name="task retention (%), bars: the student's 95 % interval",
                             textposition=["middle right"] * (len(rows) - 1) + ["middle left"], hovertemplate=hover,
                             error_y=dict(type="data", array=high, arrayminus=low, visible=True, thickness=1),
                             marker=dict(size=11, color="#4f46e5")))
    fig.add_trace(go.Scatter(x=x, y=[r.get("decode_speedup") for r in rows], mode="lines+markers",
                             name="decode speed × teacher", yaxis="y2", line=dict(dash="dash", color="#d97706"),
                             marker=dict(size=9, symbol="diamond", color="#d97706")))
    fig.add_hline(y=90, line=dict(dash="dot", color="rgba(60,60,60,0.6)"), annotation_text="90 % of the teacher",
                  annotation_position="bottom left")
    title = "How small can the student be for this task?"
    if teacher_params_m:
        title += f" (teacher: {teacher_params_m} M parameters)"
    fig.update_layout(title=title, xaxis_title="student parameters (M)",
                      # room above 100 % for the sizes' labels and the intervals
                      yaxis=dict(title="task retention (% of the teacher's score)",
                                 range=[0, max(120, *(y + h + 12 for y, h in zip(retention, high)))]),
                      yaxis2=dict(title="decode speed × teacher", overlaying="y", side="right", rangemode="tozero"),
                      height=400, template="plotly_white", margin=dict(l=60, r=60, t=60, b=50),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def serve_figure(rows: list[dict], title: str = "Served requests") -> go.Figure | None:
    """Requests answered by `engine serve`, per minute: requests (answered and failed), p50/p95 latency and time to
    first token, median decode tokens/s. None when there are no requests."""
    from plotly.subplots import make_subplots

    minutes: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        minutes[r["started_at"][:16]].append(r)
    if not minutes:
        return None
    xs = sorted(minutes)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=["requests per minute", "seconds (p50 / p95)", "decode tokens/s (median)"])
    ok = [sum(r["status"] == "ok" for r in minutes[x]) for x in xs]
    bad = [len(minutes[x]) - n for x, n in zip(xs, ok)]
    fig.add_trace(go.Bar(x=xs, y=ok, name="answered", marker_color="#4c78a8"), row=1, col=1)
    fig.add_trace(go.Bar(x=xs, y=bad, name="refused, failed or cut off", marker_color="#e45756"), row=1, col=1)
    for field, label, dash in (("total_s", "latency", "solid"), ("ttft_s", "time to first token", "dot")):
        for q, width in ((0.5, 2), (0.95, 1)):
            ys = [_quantile(v, q) if (v := [r[field] for r in minutes[x] if r[field] is not None]) else None
                  for x in xs]
            fig.add_trace(go.Scatter(x=xs, y=ys, name=f"{label} p{int(q * 100)}", mode="lines+markers",
                                     line=dict(dash=dash, width=width)), row=2, col=1)
    speed = [_quantile(v, 0.5) if (v := [r["decode_tok_s"] for r in minutes[x] if r["decode_tok_s"]]) else None
             for x in xs]
    fig.add_trace(go.Scatter(x=xs, y=speed, name="decode tokens/s", mode="lines+markers"), row=3, col=1)
    fig.update_layout(title=title, barmode="stack", height=640, margin=dict(l=60, r=20, t=60, b=40),
                      legend=dict(orientation="h", y=-0.1), template="plotly_white")
    fig.update_xaxes(title_text="minute (UTC)", row=3, col=1)
    return fig
