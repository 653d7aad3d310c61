"""A model's family: from its root (base) down through fine-tunes, students and exports, each with the key
numbers of the run that made it and of its latest benchmark."""
from __future__ import annotations

from .errors import SlmopsError

KEY_NUMBERS = ("variant", "size_ratio", "ppl_ratio", "decode_tok_s", "first_token_agreement", "score_after",
               "score_before", "eval_loss", "heldout_ppl_student", "general_ppl_student", "params_m")


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
        children = [node(c, depth + 1) for c in models.values() if c.parent_id == m.id and depth < 20]
        return {"id": m.id, "format": m.format, "params": m.params, "size_bytes": m.size_bytes,
                "numbers": numbers, "selected": m.id == model_id, "children": children}
    return node(root)
