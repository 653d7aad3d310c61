"""Verification of an export against its source model: the check question's answer, decode speed, first-token
agreement on chat prompts, perplexity on the standard text and — with a task — the task score of both; an export
that lost its source's behaviour is refused (VerificationFailed) and not registered."""
from __future__ import annotations

import json
import math
from pathlib import Path

from .errors import VerificationFailed
from .onnx_export import export_size
from .settings import PROJECT_ROOT

CHECK_PROMPT = "What is the capital of France?"
AGREEMENT_PROMPTS = PROJECT_ROOT / "assets" / "prompts" / "seed_prompts.heldout.jsonl"


def agreement_prompts(limit: int = 16) -> list[str]:
    rows = [json.loads(line) for line in AGREEMENT_PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [CHECK_PROMPT] + [r["prompt"] for r in rows[:limit - 1]]


def check_agreement(result: dict, min_agreement: float, folder: Path) -> None:
    """Refuse an export that no longer behaves like its source (a fine-tune rounded away agrees on ~0.3)."""
    agreement = result["first_token_agreement"]
    if agreement >= min_agreement:
        return
    ppl = f"; perplexity ×{result['ppl_ratio']:.3f} of the source" if "ppl_ratio" in result else ""
    raise VerificationFailed(
        f"Verification failed: the export picks its source's first reply token on only {agreement:.0%} of the "
        f"check prompts (min_agreement {min_agreement:.0%}){ppl}, so it does not answer like the model it was "
        f"made from. It was not registered; its files are in {folder}. For a fine-tune keep fine_tune_delta on "
        "auto or export int8; set min_agreement to 0 to register it anyway.")


def check_task_retention(ctx, config, source_answer, export_answer, folder: Path) -> None:
    """Score the source and the export (each an answerer: engine/scoring.py) on the config's task; refuse the export
    when it keeps less than min_task_retention of the source's score."""
    from .scoring import judge_for
    from .tasks import Task, load_examples, score_answers

    task = Task.model_validate_json(ctx.store.task_json(config.task))
    examples = load_examples(task, config.task_limit)
    judge = judge_for(ctx.store, task)
    scores = {}
    for who, answer in (("source", source_answer), ("export", export_answer)):
        ctx.stage(f"verify: the {who}'s score on task '{task.name}' ({len(examples)} examples)")
        result = score_answers(task, examples, answer, lambda done, _w=who: (
            ctx.check_cancelled(), ctx.stage(f"verify: {_w} on '{task.name}' {done}/{len(examples)}")), judge=judge)
        scores[who] = result["score"]
        ctx.summary(**{f"task_score_{who}": round(result["score"], 4), f"task_ci_low_{who}": round(result["ci_low"], 4),
                       f"task_ci_high_{who}": round(result["ci_high"], 4)})
        ctx.log(f"verify: {who} on {task.name}: {result['score']:.3f} ({result['ci_low']:.3f}–{result['ci_high']:.3f}) "
                f"in {result['seconds']:.0f} s")
    kept = scores["export"] / scores["source"] if scores["source"] else 1.0
    ctx.summary(task=task.name, task_retention=round(kept, 4))
    ctx.metric("task_retention", kept)
    check_task_kept(task.name, scores["source"], scores["export"], config.min_task_retention, folder)


def check_task_kept(task: str, source: float, export: float, minimum: float, folder: Path) -> None:
    """Refuse an export that keeps less than `minimum` of its source's task score (a fine-tune rounded away)."""
    kept = export / source if source else 1.0
    if kept >= minimum:
        return
    raise VerificationFailed(
        f"Verification failed: this export lost the task. It scores {export:.3f} on '{task}' where its source "
        f"scores {source:.3f} ({kept:.0%} kept; min_task_retention {minimum:.0%}). It was not registered; its files "
        f"are in {folder}. For a fine-tune keep fine_tune_delta on auto, or export int8.")


class Verifier:
    """Holds the source model and its reference numbers, computed once, to compare any number of exports."""

    def __init__(self, ctx, src: Path, threads: int, verify_tokens: int):
        import torch

        from .loading import load_causal_lm
        from .eval_text import standard_text

        if threads:
            torch.set_num_threads(threads)
        self.ctx, self.threads = ctx, threads
        ctx.stage("verify: loading the source model")
        self.lm, self.tokenizer = load_causal_lm(src)
        self.text_ids = self.tokenizer(standard_text(), add_special_tokens=False)["input_ids"][:verify_tokens] \
            if verify_tokens else []
        self._ref: dict | None = None

    def _reference(self, og_model) -> dict:
        """Source first tokens and per-window logits stats (prompt ids come from the export's tokenizer)."""
        import numpy as np
        import torch

        from .eval_text import token_nll, windows

        if self._ref is not None:
            return self._ref
        prompts = [og_model.prompt_ids([{"role": "user", "content": p}]) for p in agreement_prompts()]
        texts = windows(self.text_ids, min(512, og_model.context))
        with torch.inference_mode():
            first = [int(self.lm(input_ids=torch.tensor([p])).logits[0, -1].argmax()) for p in prompts]
            stats = []
            for w in texts:
                self.ctx.check_cancelled()
                logits = self.lm(input_ids=torch.tensor([w])).logits[0, :-1].double().numpy()
                stats.append((token_nll(logits, np.asarray(w[1:])), logits.argmax(1)))
        self._ref = {"prompts": prompts, "first": first, "windows": texts, "stats": stats}
        return self._ref

    def measure(self, export: Path, span=(0.6, 1.0)) -> dict:
        import numpy as np

        from .eval_text import token_nll
        from .ort_genai import OgModel

        ctx, (lo, hi) = self.ctx, span
        ctx.progress(lo, "verify: loading the export with onnxruntime-genai")
        og_model = OgModel(export, threads=self.threads)
        ids = og_model.prompt_ids([{"role": "user", "content": CHECK_PROMPT}])
        answer_ids, _ = og_model.generate_ids(ids, 24)
        answer = og_model.decode(answer_ids).strip()
        ctx.log(f"verify {export.name}: '{CHECK_PROMPT}' → {answer!r}")
        ctx.progress(lo + 0.1 * (hi - lo), "verify: decode speed")
        speeds = []
        story = og_model.prompt_ids([{"role": "user", "content": "Write a short story about a lighthouse."}])
        for _ in range(3):
            ctx.check_cancelled()
            _, times = og_model.generate_ids(story, 64)
            if len(times) > 2:
                speeds.append((len(times) - 1) / (times[-1] - times[0]))
        ctx.progress(lo + 0.25 * (hi - lo), "verify: reference numbers of the source model")
        ref = self._reference(og_model)
        agree = sum(int(int(og_model.logits(p)[-1].argmax()) == r) for p, r in zip(ref["prompts"], ref["first"]))
        out = {"answer": answer, "decode_tok_s": float(np.median(speeds)) if speeds else 0.0,
               "first_token_agreement": agree / len(ref["prompts"]), "size_mb": export_size(export) / 1e6}
        if ref["windows"]:
            nll_src = nll_exp = 0.0
            count = same = 0
            for i, (w, (src_nll, src_top)) in enumerate(zip(ref["windows"], ref["stats"])):
                ctx.check_cancelled()
                exp_logits = og_model.logits(w)[:-1]
                nll_src += src_nll
                nll_exp += token_nll(exp_logits, np.asarray(w[1:]))
                same += int((exp_logits.argmax(1) == src_top).sum())
                count += len(w) - 1
                ctx.progress(lo + (0.5 + 0.5 * (i + 1) / len(ref["windows"])) * (hi - lo),
                             f"verify: perplexity {i + 1}/{len(ref['windows'])} windows")
            out.update(ppl_source=math.exp(nll_src / count), ppl_export=math.exp(nll_exp / count),
                       next_token_agreement=same / count)
            out["ppl_ratio"] = out["ppl_export"] / out["ppl_source"]
            ctx.log(f"verify {export.name}: perplexity {out['ppl_export']:.3f} vs source {out['ppl_source']:.3f} "
                    f"(×{out['ppl_ratio']:.4f}) on {count} tokens; next-token agreement {same / count:.1%}; "
                    f"decode {out['decode_tok_s']:.0f} tok/s")
        return out


def adapter_examples(store, adapter, limit: int, log=print) -> tuple[list[tuple[list[dict], str | None]], str, int]:
    """(prompt, reference) pairs an adapter's export is checked on, the scoring mode and the answer length: its
    fine-tune's held-out examples (the same seeded split), or — when its run or data is gone, said in the log — the
    general check prompts without references."""
    from .scoring import split_conversation
    from .training import finetune_config_of, split_conversations

    try:
        config = finetune_config_of(store, adapter)  # (a set's adapter: its task's evaluation set)
        _, _, held = split_conversations(config)
    except Exception as exc:  # noqa: BLE001 - no run, another kind of run, or its data moved: general prompts
        log(f"adapter '{adapter.id}': its fine-tune's held-out examples are not available ({type(exc).__name__}: "
            f"{str(exc)[:120]}); checked on the general check prompts, without answer scores", "warning")
        return [([{"role": "user", "content": p}], None) for p in agreement_prompts()][:limit], "exact", 32
    pairs = [split_conversation(c) for c in held if isinstance(c, list) and any(m["role"] == "assistant" for m in c)]
    return pairs[:limit], config.score, config.eval_max_new_tokens


def verify_adapter(ctx, og_view, source_dir: Path, examples: list, mode: str, max_new_tokens: int) -> dict:
    """An adapter's export (`og_view`: the export with the adapter active) against the transformers model of the
    same adapter (`source_dir`: merged into its base, the same function): greedy-token agreement (the export reads
    the source's greedy reply and predicts each of its tokens) and, where the examples have references, both
    models' answer-match scores. The source's replies are generated in batches."""
    import numpy as np

    from .loading import load_causal_lm
    from .scoring import greedy_ids, matches, pick_mode

    lm, tokenizer = load_causal_lm(source_dir)
    eos = og_view.eos_ids
    refs = [ref for _, ref in examples if ref is not None]
    mode = pick_mode(refs, mode)
    agree = total = source_ok = export_ok = 0
    prompts = [og_view.prompt_ids(prompt) for prompt, _ in examples]
    ctx.stage(f"verify adapter '{og_view.adapter}': the transformers model's replies to {len(examples)} examples")
    replies = greedy_ids(lm, prompts, max_new_tokens, next(iter(eos)), eos, on_batch=lambda done, n: (
        ctx.check_cancelled(), ctx.stage(f"verify adapter '{og_view.adapter}': transformers replies {done}/{n}")))
    for i, ((_, ref), ids, reply) in enumerate(zip(examples, prompts, replies)):
        ctx.check_cancelled()
        if reply:
            logits = og_view.logits(ids + reply)
            picked = logits[len(ids) - 1:len(ids) - 1 + len(reply)].argmax(axis=1)
            agree += int((picked == np.asarray(reply)).sum())
            total += len(reply)
        if ref is not None:
            source_text = tokenizer.decode([t for t in reply if t not in eos], skip_special_tokens=True).strip()
            export_text = og_view.decode(og_view.generate_ids(ids, max_new_tokens)[0]).strip()
            source_ok += matches(source_text, ref, mode)
            export_ok += matches(export_text, ref, mode)
        ctx.stage(f"verify adapter '{og_view.adapter}': {i + 1}/{len(examples)} examples")
    out = {"adapter": og_view.adapter, "examples": len(examples), "greedy_agreement": agree / max(total, 1),
           "tokens": total}
    if refs:
        out.update(mode=mode, source_score=source_ok / len(refs), export_score=export_ok / len(refs),
                   score_kept=export_ok / source_ok if source_ok else 1.0)
    return out
