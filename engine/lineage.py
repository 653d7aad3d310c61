"""A model's family: from its root (base) down through fine-tunes, students and exports, each with the key
numbers of the run that made it, of its latest benchmark, and its latest score on each task it was scored on."""
from __future__ import annotations

from .errors import SlmopsError

KEY_NUMBERS = ("variant", "size_ratio", "ppl_ratio", "decode_tok_s", "first_token_agreement", "score_after",
               "score_before", "eval_loss", "heldout_ppl_student", "general_ppl_student", "params_m")


def task_scores(store) -> dict[str, dict[str, str]]:
    """model → task → its newest score with the 95 % interval, from evaluate runs, benchmarks that scored a task,
    adapter sets (each adapter on its task) and distillations (teacher and student)."""
    found: list[tuple[int, str, str, float, float, float]] = []  # (run id, model, task, score, low, high)
    for run in store.list_runs(limit=1000, kind="evaluate", status="succeeded"):
        s = run.summary
        if "score" in s:
            found.append((run.id, run.config.get("model_id"), s.get("task"), s["score"], s["ci_low"], s["ci_high"]))
    for run in store.list_runs(limit=500, kind="benchmark", status="succeeded"):
        for row in run.summary.get("results", []):
            if row.get("task_score") is not None:
                found.append((run.id, row["model_id"], row["task"], row["task_score"], row["task_ci_low"],
                              row["task_ci_high"]))
    for run in store.list_runs(limit=500, kind="adapter_set"):  # a stopped set keeps the adapters it finished
        for row in run.summary.get("adapters", []):
            if row.get("ci_low") is not None:
                found.append((run.id, row["adapter"], row["task"], row["score_after"], row["ci_low"], row["ci_high"]))
    students = {m.run_id: m.id for m in store.list_models() if m.run_id}
    for run in store.list_runs(limit=500, kind="distill", status="succeeded"):
        s = run.summary
        if "task_score_student" in s:
            task = run.config.get("task")
            found.append((run.id, run.config.get("teacher_model_id"), task, s["task_score_teacher"],
                          s["task_ci_low_teacher"], s["task_ci_high_teacher"]))
            if run.id in students:
                found.append((run.id, students[run.id], task, s["task_score_student"], s["task_ci_low_student"],
                              s["task_ci_high_student"]))
    out: dict[str, dict[str, str]] = {}
    for _, model, task, score, low, high in sorted(found, key=lambda f: -f[0]):  # newest first
        out.setdefault(model, {}).setdefault(task, f"{score:.3f} ({low:.3f}–{high:.3f})")
    return out


def lineage_tree(store, model_id: str) -> dict:
    from .exports import export_summary

    models = {m.id: m for m in store.list_models()}
    if model_id not in models:
        store.get_model(model_id)  # raises NotFound with the usual message
    root, seen = models[model_id], {model_id}
    while root.parent_id in models and root.parent_id not in seen:
        seen.add(root.parent_id)
        root = models[root.parent_id]
    bench = {}
    for run in store.list_runs(limit=500, kind="benchmark", status="succeeded"):
        for row in run.summary.get("results", []):
            bench.setdefault(row["model_id"], row)  # newest run first
    tasks = task_scores(store)

    def node(m, depth=0) -> dict:
        numbers = {}
        if m.run_id and m.source == "run":
            try:
                summary = export_summary(store, m) or store.get_run(m.run_id).summary
            except SlmopsError:
                summary = {}
            numbers = {k: summary[k] for k in KEY_NUMBERS if k in summary and summary[k] is not None}
        if m.id in bench:
            b = bench[m.id]
            numbers["bench_decode_tok_s"] = round(b["decode_tok_s"], 1)
            if b.get("mc_accuracy") is not None:
                numbers["bench_mc_accuracy"] = round(b["mc_accuracy"], 3)
        for task, text in tasks.get(m.id, {}).items():
            numbers[f"task {task}"] = text
        children = [node(c, depth + 1) for c in models.values() if c.parent_id == m.id and depth < 20]
        return {"id": m.id, "format": m.format, "params": m.params, "size_bytes": m.size_bytes,
                "numbers": numbers, "selected": m.id == model_id, "children": children}
    return node(root)
