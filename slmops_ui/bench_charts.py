"""Pure functions: benchmark result rows -> plotly figures and table rows (no Engine, no server)."""
from __future__ import annotations

import plotly.graph_objects as go

from engine import within_noise

BAR_METRICS = {  # name -> (label with unit, std column, scale, higher is better)
    "decode_tok_s": ("decode speed (tokens/s)", "decode_tok_s_std", 1.0, True),
    "ttft_s": ("time to first token (ms)", "ttft_s_std", 1000.0, False),
    "prefill_tok_s": ("prefill speed (tokens/s)", "prefill_tok_s_std", 1.0, True),
    "peak_rss_mb": ("peak resident memory (MB)", None, 1.0, False),
    "size_mb": ("size on disk (MB)", None, 1.0, False),
    "load_s": ("load time (s)", None, 1.0, False),
    "ppl": ("perplexity on Python's docs (lower is better)", None, 1.0, False),
    "mc_accuracy": ("multiple-choice accuracy (%)", None, 100.0, True),
    "agreement": ("agreement with source/teacher (%)", None, 100.0, True),
    "task_score": ("task score (%)", None, 100.0, True),
}
TABLE_HEADERS = ["model", "format", "size MB", "task score (95 % CI)", "decode tok/s", "TTFT ms", "prefill tok/s",
                 "peak RSS MB", "perplexity", "MC accuracy", "agreement", "lineage"]


def quality(rows: list[dict]) -> tuple[str | None, str]:
    """The quality axis of the charts: the task score when the run scored a task, else MC accuracy."""
    if any(r.get("task_score") is not None for r in rows):
        task = next(r.get("task") for r in rows if r.get("task_score") is not None)
        return "task_score", f"task score, {task} (%)"
    if any(r.get("mc_accuracy") is not None for r in rows):
        return "mc_accuracy", "MC accuracy (%)"
    return None, ""


def _task_cell(r: dict) -> str:
    if r.get("task_score") is None:
        return ""
    return f"{r['task_score']:.1%} ({r['task_ci_low']:.0%}–{r['task_ci_high']:.0%})"


def _num(value, scale=1.0, digits=1):
    return "" if value is None else round(value * scale, digits)


def _spread(r: dict, key: str, scale: float, digits: int) -> str:
    """The median with its 95 % interval (a range over fewer than six repetitions covers less, and says so); a run
    from before the intervals shows mean ± std; one repetition has no spread, and the cell says so."""
    value, reps = r[key] * scale, r.get("repetitions")
    if reps == 1:
        return f"{value:.{digits}f} (1 repetition)"
    if r.get(f"{key}_low") is None:
        return f"{value:.{digits}f} ± {r[f'{key}_std'] * scale:.{digits}f}"
    interval = f"{r[f'{key}_low'] * scale:.{digits}f}–{r[f'{key}_high'] * scale:.{digits}f}"
    return f"{value:.{digits}f} ({interval}{'' if (reps or 0) >= 6 else f', range of {reps}'})"


def within_noise_of(rows: list[dict], key: str) -> dict[str, list[str]]:
    """For each model, the others whose 95 % interval of `key` overlaps its own: differences between them are
    within the noise of the measurement."""
    measured = {r["model_id"]: (r[key], r[f"{key}_low"], r[f"{key}_high"]) for r in rows
                if r.get(f"{key}_low") is not None}
    out = {}
    for r in rows:
        mine = measured.get(r["model_id"])
        out[r["model_id"]] = [] if mine is None else [
            other for other, theirs in measured.items() if other != r["model_id"] and within_noise(mine, theirs)]
    return out


def table_rows(rows: list[dict]) -> list[list]:
    noise = within_noise_of(rows, "decode_tok_s")

    def decode_cell(r):
        peers = noise.get(r["model_id"])
        return _spread(r, "decode_tok_s", 1.0, 1) + (f"; within noise of {', '.join(peers)}" if peers else "")

    return [[r["model_id"], r.get("format", ""), r.get("size_mb"), _task_cell(r), decode_cell(r),
             _spread(r, "ttft_s", 1000.0, 0),
             _num(r.get("prefill_tok_s")),
             _num(r.get("peak_rss_mb"), digits=0), _num(r.get("ppl"), digits=3),
             "" if r.get("mc_accuracy") is None else f"{r['mc_accuracy']:.1%}",
             "" if r.get("agreement") is None else f"{r['agreement']:.0%} vs {r.get('agreement_with')}",
             r.get("lineage", "")] for r in rows]


def pareto_front(rows: list[dict]) -> list[dict]:
    """Rows no other row beats on size (smaller), latency (lower) and quality (higher, when measured: the task score,
    else MC accuracy)."""
    axis, _ = quality(rows)

    def key(r):
        return r["size_mb"], 1000.0 / r["decode_tok_s"], -((r.get(axis) if axis else None) or 0.0)

    def dominates(a, b):
        ka, kb = key(a), key(b)
        return all(x <= y for x, y in zip(ka, kb)) and any(x < y for x, y in zip(ka, kb))
    return [r for r in rows if not any(dominates(o, r) for o in rows if o is not r)]


def latency_error(rows: list[dict]) -> dict:
    """Error bars of ms per token: the decode median's 95 % interval turned into latency (asymmetric), or ± std
    carried over for runs from before the intervals."""
    if all(r.get("decode_tok_s_low") for r in rows):
        return dict(type="data", symmetric=False, visible=True, thickness=1,
                    array=[1000.0 / r["decode_tok_s_low"] - 1000.0 / r["decode_tok_s"] for r in rows],
                    arrayminus=[1000.0 / r["decode_tok_s"] - 1000.0 / r["decode_tok_s_high"] for r in rows])
    return dict(type="data", array=[1000.0 * (r.get("decode_tok_s_std") or 0) / r["decode_tok_s"] ** 2 for r in rows],
                visible=True, thickness=1)


def scatter_figure(rows: list[dict], title: str = "Size vs decode latency") -> go.Figure | None:
    """x = size on disk, y = ms per generated token; colour and marker size = quality (the task score when the run
    scored a task, else MC accuracy); the Pareto front is ringed and joined; hover shows lineage and the numbers."""
    rows = [r for r in rows if r.get("decode_tok_s") and r.get("size_mb")]
    if not rows:
        return None
    axis, axis_label = quality(rows)
    acc = [r.get(axis) if axis else None for r in rows]
    has_acc = any(a is not None for a in acc)
    front = pareto_front(rows)
    # the line joins the trade-off visible on these axes (size vs latency); the rings also count quality
    plane = sorted(pareto_front([{**r, "mc_accuracy": None, "task_score": None} for r in rows]),
                   key=lambda r: r["size_mb"])
    fig = go.Figure()
    if len(plane) > 1:
        fig.add_trace(go.Scatter(x=[r["size_mb"] for r in plane], y=[1000.0 / r["decode_tok_s"] for r in plane],
                                 mode="lines", line=dict(color="rgba(60,60,60,0.5)", dash="dot", shape="hv"),
                                 name="size/latency Pareto front", hoverinfo="skip"))
    in_front = {r["model_id"] for r in front}
    fig.add_trace(go.Scatter(
        x=[r["size_mb"] for r in rows], y=[1000.0 / r["decode_tok_s"] for r in rows], mode="markers+text",
        text=[r["model_id"] for r in rows], textposition="top center", name="models",
        error_y=latency_error(rows),
        marker=dict(size=[14 + 26 * (a or 0) for a in acc] if has_acc else 16,
                    color=[(a or 0) * 100 for a in acc] if has_acc else "#4f46e5", colorscale="Viridis",
                    cmin=0, cmax=100, showscale=has_acc,
                    colorbar=dict(title=axis_label) if has_acc else None,
                    line=dict(width=[3 if r["model_id"] in in_front else 1 for r in rows], color="black")),
        customdata=[[r.get("lineage", r["model_id"]), r["decode_tok_s"], r.get("ppl"),
                     None if r.get("mc_accuracy") is None else 100 * r["mc_accuracy"], r.get("peak_rss_mb"),
                     None if r.get("task_score") is None else 100 * r["task_score"]] for r in rows],
        hovertemplate="<b>%{text}</b><br>%{customdata[0]}<br>%{x:.1f} MB · %{y:.1f} ms/token "
                      "(%{customdata[1]:.1f} tok/s)<br>task score %{customdata[5]:.1f}% · perplexity "
                      "%{customdata[2]:.3f} · MC %{customdata[3]:.1f}%<br>peak RSS %{customdata[4]:.0f} MB"
                      "<extra></extra>"))
    quality_name = "task score" if axis == "task_score" else "accuracy"
    fig.update_layout(title=f"{title} (lower left is better; thick ring = Pareto-optimal on size, speed and "
                            f"{quality_name})",
                      xaxis_title="size on disk (MB)", yaxis_title="decode latency (ms per token)", height=440,
                      template="plotly_white", margin=dict(l=60, r=30, t=60, b=50),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def bar_figure(rows: list[dict], metric: str) -> go.Figure | None:
    label, std_key, scale, higher = BAR_METRICS[metric]
    rows = [r for r in rows if r.get(metric) is not None]
    if not rows:
        return None
    intervals = bool(std_key) and all(r.get(f"{metric}_low") is not None for r in rows)
    if intervals:  # the median's 95 % interval; bars whose intervals overlap are marked "≈" (within noise)
        error = dict(type="data", symmetric=False, array=[(r[f"{metric}_high"] - r[metric]) * scale for r in rows],
                     arrayminus=[(r[metric] - r[f"{metric}_low"]) * scale for r in rows])
        noise = within_noise_of(rows, metric)
        text = [f"{r[metric] * scale:.3g}" + (" ≈" if noise[r["model_id"]] else "") for r in rows]
        note = " (error bars: 95 % interval of the median; ≈ within noise of another model)"
    else:
        error = dict(type="data", array=[(r.get(std_key) or 0) * scale for r in rows], visible=bool(std_key))
        text = [f"{r[metric] * scale:.3g}" for r in rows]
        note = " (error bars: ± std over repetitions)" if std_key else ""
    fig = go.Figure(go.Bar(
        x=[r["model_id"] for r in rows], y=[r[metric] * scale for r in rows], error_y=error,
        text=text, textposition="inside", insidetextanchor="start",
        textfont=dict(color="white"), marker_color="#4f46e5"))
    fig.update_layout(title=f"{label} — {'higher' if higher else 'lower'} is better" + note,
                      yaxis_title=label, xaxis_title="model", height=360, template="plotly_white",
                      margin=dict(l=60, r=30, t=60, b=80))
    return fig
