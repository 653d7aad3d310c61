"""The default distillation recipe for a task, measured on the task: teacher, student, size, decode speed, task score
with its 95 % interval, task retention and minutes — and, with --ablations, the same student trained with
cross-entropy only and one made of evenly spaced layers.

    python benchmarks/distill_recipe.py [--home DIR] [--task request_to_json] [--teacher NAME] [--epochs E]
                                        [--ablations] [--only default,ce,even] [--int4]
                                        [--stage1-run N] [--stage2-run N] [--sweep 4,7,10]

0. The teacher is a task expert: `--teacher NAME` (any registered full model), or the bundled model fine-tuned on
   the task's training file with the fine-tune job's defaults (LoRA r 8 on q/v, 2 epochs) and merged; a workspace
   that has it already reuses it. Not counted in the recipe's minutes.
1. Stage 1 (generate_data): the teacher answers the prompts of the task's training file, greedy, up to the task's
   max_new_tokens; answers cut off are dropped, and those that fail the task's validator (JSON tasks: not JSON;
   ticket_label: not one of the six labels).
2. Stage 2 (distill, the job's defaults): a student of 10 of the teacher's 30 layers, the ones whose removal raises
   the teacher's loss most on 16 training examples; α 0.5 KD + CE, T 2; scored on the task with the teacher.
3. `--int4`: the student's default int4 export (quantize job: off the 4-bit grid, so a GPTQ fit calibrated on the
   stage-1 dataset), verified on the task against the student (task retention of the export).
`--sweep SIZES`: instead of stage 2's variants, one size-sweep job (distill_sweep: a student per size, each by the
   default recipe, the teacher scored once) and its table; the Distill tab's size-sweep chart shows the run.
The training files are `assets/datasets/<task>.train.jsonl`; the task's own evaluation set is never trained on.
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# stage 1's validator per bundled task: what an answer must look like to be kept (JSON tasks: parse as JSON)
VALIDATORS = {"ticket_label": r"^(billing|delivery|refund|login|bug|cancel)$"}


def wait(engine, config, what: str):
    t0 = time.perf_counter()
    print(f"{what} …", file=sys.stderr, flush=True)
    run = engine.wait_run(engine.start_run(config), timeout=4 * 3600)
    assert run.status.value == "succeeded", (what, run.error)
    return run, time.perf_counter() - t0


def minutes_of(run) -> float:
    """A finished run's minutes as it measured them (start to end)."""
    return (datetime.fromisoformat(run.finished_at) - datetime.fromisoformat(run.started_at)).total_seconds() / 60


def teacher_for(engine, task: str, threads: int) -> str:
    from engine import FineTuneConfig

    name = f"{task}-teacher"
    if not engine.store.has_model(f"{name}-merged"):
        base = engine.ensure_default_model()
        if base.run_id and not base.ready:
            engine.wait_run(base.run_id, timeout=900)
        data = ROOT / "assets" / "datasets" / task
        wait(engine, FineTuneConfig(model_id=base.id, train_path=f"{data}.train.jsonl", eval_path=f"{data}.eval.jsonl",
                                    merge=True, eval_max_examples=0, output_name=name, threads=threads),
             f"fine-tuning the teacher {name} (LoRA, merged)")
    return f"{name}-merged"


def sweep(engine, args, teacher: str, task, data, gen_s: float) -> int:
    """Stage 2 as a size sweep: one student per size, the table of the sweep job's summary."""
    from engine.configs import DistillSweepConfig

    sizes = [int(x) for x in args.sweep.split(",") if x.strip()]
    extra = {"epochs": args.epochs} if args.epochs else {}
    run, seconds = wait(engine, DistillSweepConfig(teacher_model_id=teacher, train_path=data.path, task=args.task,
                                                   sizes=sizes, threads=args.threads, **extra),
                        f"stage 2: a size sweep over {sizes} layers")
    s = run.summary
    print(f"\nsweep run {run.id}, task {task.name}: teacher {teacher} {s['teacher_params_m']} M params, task score "
          f"{s['task_score_teacher']:.3f}; stage 1 {gen_s / 60:.1f} min, sweep {seconds / 60:.1f} min")
    print(f"{'layers':>6}{'params M':>10}{'× teacher':>10}{'decode ×':>9}{'task score (95 % CI)':>24}{'retention':>10}"
          f"{'train min':>10}{'min':>7}")
    for r in s["students"]:
        ci = f"{r['task_score_student']:.3f} ({r['task_ci_low_student']:.3f}–{r['task_ci_high_student']:.3f})"
        print(f"{r['layers']:>6}{r['student_params_m']:>10}{r['params_ratio']:>10.3f}{r['decode_speedup']:>9.2f}"
              f"{ci:>24}{r['task_retention']:>10.1%}{r.get('train_s', 0) / 60:>10.1f}{r.get('wall_s', 0) / 60:>7.1f}")
    print(f"smallest student keeping ≥ 90 %: {s.get('smallest_at_90')}")
    return 0


def main() -> int:
    from engine import DistillConfig, Engine, GenerateDataConfig, QuantizeConfig, Settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default="/tmp/slmops-bench-distill", help="workspace (models are kept here)")
    ap.add_argument("--task", default="request_to_json")
    ap.add_argument("--teacher", default=None, help="a registered full model (default: fine-tune one)")
    ap.add_argument("--epochs", type=float, default=None, help="stage-2 epochs (default: the distill job's)")
    ap.add_argument("--stage1-run", type=int, default=None, help="reuse the dataset of this stage-1 run (its minutes "
                    "as it measured them)")
    ap.add_argument("--stage2-run", type=int, default=None, help="report this finished stage-2 run (default "
                    "recipe) instead of training one, e.g. to add --int4 to it")
    ap.add_argument("--ablations", action="store_true", help="also: CE only (alpha 0); evenly spaced layers")
    ap.add_argument("--only", default="", help="comma-separated subset of: default, ce, even")
    ap.add_argument("--int4", action="store_true", help="also: the student's int4 export, scored on the task")
    ap.add_argument("--sweep", default="", help="comma-separated student sizes (teacher layers): run a size sweep "
                    "instead of the variants")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    engine = Engine(Settings(home=Path(args.home), offline=True))
    task = engine.get_task(args.task)
    teacher = args.teacher or teacher_for(engine, args.task, args.threads)
    train_file = ROOT / "assets" / "datasets" / f"{args.task}.train.jsonl"

    if args.stage1_run:
        gen = engine.get_run(args.stage1_run)
        gen_s = minutes_of(gen) * 60
    else:
        gen, gen_s = wait(engine, GenerateDataConfig(
            teacher_model_id=teacher, prompts_path=str(train_file), temperature=0.0,
            max_new_tokens=task.max_new_tokens, batch_size=16, require_json=task.scorer in ("json", "json_f1"),
            regex=VALIDATORS.get(args.task, ""), min_chars=1, system_prompt=task.system_prompt),
            "stage 1: the teacher answers the task's training prompts")
    data = next(d for d in engine.list_datasets() if d.run_id == gen.id)
    print(f"stage 1: {gen.summary.get('kept')} of {gen.summary.get('generated')} answers kept, {gen_s / 60:.1f} min",
          flush=True)

    if args.sweep:
        return sweep(engine, args, teacher, task, data, gen_s)
    variants = {"default": ("KD, importance layers (default)", {}),
                "ce": ("CE only (alpha 0)", {"alpha": 0.0}),
                "even": ("KD, evenly spaced layers", {"layer_selection": "even"})}
    chosen = [v for v in args.only.split(",") if v] or (["default", "ce", "even"] if args.ablations else ["default"])
    variants = dict(variants[v] for v in chosen)
    extra = {"epochs": args.epochs} if args.epochs else {}
    rows = []
    for label, settings in variants.items():
        if args.stage2_run and label.endswith("(default)"):
            run = engine.get_run(args.stage2_run)
            rows.append((label, run, minutes_of(run) * 60))
            continue
        run, seconds = wait(engine, DistillConfig(teacher_model_id=teacher, train_path=data.path, task=args.task,
                                                  threads=args.threads, **extra, **settings), f"stage 2: {label}")
        rows.append((label, run, seconds))
        print(f"{label}: run {run.id}, {seconds / 60:.1f} min, layers {run.summary.get('layers')}", flush=True)

    s0 = rows[0][1].summary
    print(f"\ntask {task.name} ({task.scorer}, {s0.get('task_examples', '')} held-out examples); teacher {teacher}: "
          f"{s0['teacher_params_m']} M params, task score {s0['task_score_teacher']:.3f} "
          f"({s0['task_ci_low_teacher']:.3f}–{s0['task_ci_high_teacher']:.3f}); stage 1 {gen_s / 60:.1f} min")
    print(f"{'student':<34}{'params':>8}{'× teacher':>10}{'decode ×':>9}{'task score (95 % CI)':>24}"
          f"{'retention':>10}{'stage 2 min':>12}{'stages 1+2 min':>15}")
    for label, run, seconds in rows:
        s = run.summary
        ci = f"{s['task_score_student']:.3f} ({s['task_ci_low_student']:.3f}–{s['task_ci_high_student']:.3f})"
        print(f"{label:<34}{s['student_params_m']:>8}{s['params_ratio']:>10.3f}{s['decode_speedup']:>9.2f}"
              f"{ci:>24}{s['task_retention']:>10.1%}{seconds / 60:>12.1f}{(seconds + gen_s) / 60:>15.1f}")

    if args.int4 and "default" in chosen:
        student = next(m for m in engine.list_models() if m.run_id == rows[0][1].id)
        t0 = time.perf_counter()
        print(f"int4 export of {student.id} …", file=sys.stderr, flush=True)
        export = engine.wait_run(engine.start_run(QuantizeConfig(model_id=student.id, task=args.task,
                                                                 threads=args.threads)), timeout=3600)
        s = export.summary
        verdict = "registered" if export.status.value == "succeeded" else f"refused ({export.status.value})"
        print(f"int4 export of the student ({s.get('fit', 'minmax')} fit): {s.get('size_mb')} MB "
              f"({s.get('size_ratio')}× the student's folder), decode {s.get('decode_tok_s')} tok/s; task score "
              f"{s['task_score_export']:.3f} ({s['task_ci_low_export']:.3f}–{s['task_ci_high_export']:.3f}) against "
              f"the student's {s['task_score_source']:.3f} = {s['task_retention']:.1%} kept; {verdict}; "
              f"{(time.perf_counter() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
