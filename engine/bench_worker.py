"""`python -m engine.bench_worker REQUEST.json RESULT.json`: measures one model in a fresh process, so one
model's memory never inflates the next one's. Progress lines go to stdout as JSON; the result is written last.
With `interleaved` in the request, it loads its model, says `ready`, and times one repetition for each "rep" line
on stdin (answering with the count and whether its timing has settled) until another line or EOF; then it goes on
with the rest (perplexity, multiple choice, task, agreement)."""
from __future__ import annotations

import json
import resource
import sys
import time


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


def main(request_path: str, result_path: str) -> int:
    req = json.loads(open(request_path, encoding="utf-8").read())
    from .settings import Settings

    Settings.from_env().prepare()  # caches stay in the workspace
    from . import bench
    from .eval_text import standard_text

    model = req["model"]
    stage_s: dict[str, float] = {}  # seconds each part took: where a benchmark's wall time goes
    clock = [time.perf_counter()]

    def lap(name: str) -> float:
        now = time.perf_counter()
        seconds, clock[0] = now - clock[0], now
        stage_s[name] = round(seconds, 2)
        return seconds

    say(stage=f"loading {model['id']}", fraction=0.0)
    backend = bench.open_backend(model["format"], model["path"], model.get("adapter_path"), req["threads"])
    result = {"model_id": model["id"], "backend": backend.name, "load_s": lap("load")}
    passage = backend.encode(standard_text())[5000:5000 + req["prefix_tokens"]] if req["prefix_tokens"] else []
    agree_ids = [backend.chat_ids(p) for p in req["agreement_prompts"]]
    if req["mode"] == "reference":
        result["greedy"] = bench.greedy_tokens(backend, agree_ids, req["agreement_tokens"])
        lap("agreement")
    else:
        prompts = [passage + backend.chat_ids(p) for p in req["prompts"]]
        result["prompt_tokens"] = sum(len(p) for p in prompts) / len(prompts)
        timer = bench.SpeedTimer(backend, prompts, req["new_tokens"], req["repetitions"], req["warmup"],
                                 budget_s=req.get("time_budget_s", 0.0), target=req.get("target_half_width", 0.03))
        if req.get("interleaved"):  # the job says when: a repetition per "rep" line, until "rest" (or EOF)
            say(stage=f"{model['id']}: loaded", ready=True)
            for i, line in enumerate(sys.stdin):
                if line.strip() != "rep":
                    break
                if i == 0:
                    timer.warm()
                timer.repeat()
                say(rep=len(timer.decode), settled=timer.settled(), spent=round(timer.spent, 3))
            waited = lap("speed") - timer.spent  # the other models' turns (and this one's warm-up)
            stage_s["speed"], stage_s["waiting"] = round(timer.spent, 2), round(waited, 2)
        else:
            say(stage=f"{model['id']}: timing", fraction=0.05)
            timer.warm()
            while not timer.settled():
                timer.repeat()
            lap("speed")
        result.update(timer.result())
        if req["ppl_tokens"]:
            say(stage=f"{model['id']}: perplexity", fraction=0.5)
            result["ppl"], result["ppl_tokens"] = bench.perplexity(backend, standard_text(), req["ppl_tokens"])
            lap("perplexity")
        if req["mc"]:
            say(stage=f"{model['id']}: multiple choice", fraction=0.65)
            questions = bench.load_mc(limit=req["mc_questions"])
            result["mc_accuracy"], _ = bench.mc_accuracy(backend, questions)
            result["mc_questions"] = len(questions)
            lap("multiple_choice")
        if req.get("task"):
            from .tasks import Task

            task = Task.model_validate(req["task"])
            say(stage=f"{model['id']}: task {task.name}", fraction=0.75)
            result.update(bench.task_score(backend, task, req.get("task_limit", 0)))
            lap("task")
        if agree_ids:
            say(stage=f"{model['id']}: greedy answers for agreement", fraction=0.9)
            result["greedy"] = bench.greedy_tokens(backend, agree_ids, req["agreement_tokens"])
            lap("agreement")
    result["stage_s"] = stage_s
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    with open(result_path, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    say(stage=f"{model['id']}: done", fraction=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
