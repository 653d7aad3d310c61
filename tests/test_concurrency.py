"""Load: two training jobs at once (SLMOPS_MAX_JOBS=2) and a benchmark queued behind them, four chat sessions and
a Runs-tab poller hitting the real app over Gradio's API, all at the same time. No 'database is locked', no mixed-up
chat histories, the queued job starts by itself, and the UI poll stays responsive."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from engine import Engine, Settings
from engine.configs import BenchmarkConfig, FineTuneConfig
from engine.records import RunStatus
from tests.helpers import ROOT

TRAIN = ROOT / "assets" / "datasets" / "request_to_json.train.jsonl"


@pytest.fixture
def loaded_app(tmp_path, tiny_model_dir):
    from tests.browser_helpers import free_port, wait_for_app

    home = tmp_path / "ws"
    engine = Engine(Settings(home=home, offline=True, max_parallel_jobs=2))
    engine.add_model(str(tiny_model_dir), name="tiny")
    port = free_port()
    log = open(tmp_path / "app.log", "w")
    env = dict(os.environ, SLMOPS_HOME=str(home), SLMOPS_OFFLINE="1", SLMOPS_MAX_JOBS="2")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--no-default-model"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = wait_for_app(proc, port, tmp_path / "app.log")
    yield engine, url, tmp_path / "app.log"
    proc.terminate()
    proc.wait(timeout=20)
    log.close()
    for run in engine.active_runs():
        engine.cancel_run(run.id)
        engine.wait_run(run.id, timeout=20)
    engine.close()


def text_of(content) -> str:
    return "".join(part["text"] for part in content) if isinstance(content, list) else str(content)


def chat_session(url: str, n: int, turns: int, out: dict) -> None:
    from gradio_client import Client

    try:
        client = Client(url, verbose=False)  # a session of its own, like a browser tab
        client.predict(None, None, api_name="/refresh_choices")  # what opening the page does: fill the model list
        for turn in range(turns):
            chatbot, *_ = client.predict("tiny", f"session {n} turn {turn} 🙂", "", 0.0, 0.9, 24,
                                         api_name="/respond")
            out[n] = [text_of(m["content"]) for m in chatbot if m["role"] == "user"]
    except Exception as exc:  # noqa: BLE001 - reported by the test
        out[n] = exc


def test_two_jobs_a_queued_benchmark_four_chats_and_polling(loaded_app, tmp_path):
    from gradio_client import Client

    engine, url, app_log = loaded_app
    data = tmp_path / "train.jsonl"
    data.write_text("".join(TRAIN.read_text().splitlines(keepends=True)[:64]))
    jobs = [engine.start_run(FineTuneConfig(model_id="tiny", train_path=str(data), max_steps=40, batch_size=4,
                                            max_length=96, eval_steps=20, save_steps=20, eval_max_examples=2,
                                            eval_max_new_tokens=4, lora_r=4, lora_alpha=8)) for _ in range(2)]
    bench = engine.start_run(BenchmarkConfig(model_ids=["tiny"], prompt_count=2, gen_length="short", repetitions=3,
                                             time_budget_s=0, ppl_tokens=256, mc_questions=8, agreement_prompts=0,
                                             threads=1))
    assert engine.get_run(bench).queue_position == 1  # two slots taken: the benchmark waits its turn

    chats: dict = {}
    threads = [threading.Thread(target=chat_session, args=(url, n, 3, chats)) for n in range(4)]
    for t in threads:
        t.start()
    poller, latencies, errors = Client(url, verbose=False), [], []
    both_running = False
    while any(t.is_alive() for t in threads) or any(not engine.get_run(r).status.final for r in [*jobs, bench]):
        states = [engine.get_run(r).status for r in jobs]
        both_running |= all(s is RunStatus.RUNNING for s in states)
        t0 = time.monotonic()
        try:
            poller.predict(None, [], "step", False, "any", "any", "any", "", "", api_name="/redraw")
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))
        latencies.append(time.monotonic() - t0)
        time.sleep(0.3)
        assert len(latencies) < 2000, "the load did not finish"
    for t in threads:
        t.join()

    runs = [engine.get_run(r) for r in [*jobs, bench]]
    logs = " ".join(line.message for r in runs for line in engine.run_logs(r.id, tail=1000))
    figures = {"jobs": len(jobs) + 1, "chat_sessions": len(threads), "chat_turns": 3 * len(threads),
               "polls": len(latencies), "poll_max_s": round(max(latencies), 3),
               "poll_median_s": round(sorted(latencies)[len(latencies) // 2], 3),
               "statuses": [r.status.value for r in runs], "errors": errors}
    print(json.dumps(figures))
    assert both_running, "the two training jobs never ran at the same time"
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 3, [(r.id, r.error) for r in runs]
    assert runs[2].started_at >= min(runs[0].finished_at, runs[1].finished_at)  # it waited for a free slot
    for n in range(4):  # each session saw only its own messages, in order
        assert chats.get(n) == [f"session {n} turn {turn} 🙂" for turn in range(3)], chats.get(n)
    assert not errors
    assert "database is locked" not in logs + app_log.read_text()
    assert max(latencies) < 5.0, figures
