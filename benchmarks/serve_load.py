"""Load test of `engine serve` with the official `openai` client, on loopback only: N concurrent streaming clients ×
R requests each over two models, then the same load with the server killed (SIGKILL) part-way and restarted.

    python benchmarks/serve_load.py --home WORKSPACE --model A --model B [--clients 32] [--requests 3]
        [--max-tokens 32] [--kill-after 8] [--max-concurrency 4]

Phase 1 checks that every request is answered (0 errors) and counted once in each place: the requests the clients
sent = the request records in SQLite (`requests` table, this server's rows) = the `slmops_requests_total` counter of
`/metrics`; it prints p50/p95 latency and time to first token as the clients saw them, and aggregate tokens/s.
Phase 2 kills the server while requests are streaming, starts it again on the same address (which marks the
records left open `interrupted`) and compares what the clients saw with the records.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["What is the capital of France?", "Name three colours.", "Write a haiku about the sea.",
           "Explain what a CPU does in one sentence.", "Give me a word that rhymes with cat."]


def start_server(home: Path, models: list[str], port: int, max_concurrency: int, log_path: Path):
    cmd = [sys.executable, "-m", "engine", "serve", "--port", str(port), "--max-concurrency", str(max_concurrency)]
    for m in models:
        cmd += ["--model", m]
    env = dict(os.environ, SLMOPS_HOME=str(home), SLMOPS_OFFLINE="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log_path, "a"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    raise SystemExit(f"the server did not start; see {log_path}")


def one_request(client, model: str, prompt: str, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    first, tokens, text, acknowledged = None, 0, "", False
    try:
        stream = client.chat.completions.create(model=model, stream=True, max_tokens=max_tokens, temperature=0,
                                                messages=[{"role": "user", "content": prompt}],
                                                stream_options={"include_usage": True})
        acknowledged = True  # the server answered with a status and headers: its reply has started
        for chunk in stream:
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                if choice.delta.content:
                    first = first or time.perf_counter()
                    text += choice.delta.content
        return {"ok": True, "model": model, "latency": time.perf_counter() - t0,
                "ttft": (first or time.perf_counter()) - t0, "tokens": tokens, "text": text}
    except Exception as exc:  # noqa: BLE001 - what a client saw is the result
        cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else ""
        return {"ok": False, "model": model, "error": f"{type(exc).__name__} ({cause}): {exc}"[:200],
                "refused": cause == "ConnectError", "got_output": first is not None, "acknowledged": acknowledged,
                "latency": time.perf_counter() - t0}


def load(base_url: str, models: list[str], clients: int, requests: int, max_tokens: int) -> list[dict]:
    import openai

    results, lock = [], threading.Lock()

    def client_loop(i: int) -> None:
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
        for r in range(requests):
            res = one_request(client, models[(i + r) % len(models)], PROMPTS[(i * requests + r) % len(PROMPTS)],
                              max_tokens)
            with lock:
                results.append(res)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, range(clients)))
    return results


def records(db: Path, server: str, since: str) -> dict:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT status, count(*) FROM requests WHERE server = ? AND started_at >= ? GROUP BY status",
                       [server, since]).fetchall()
    con.close()
    return dict(rows)


def counter_total(port: int) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return int(sum(float(v) for v in re.findall(r'^slmops_requests_total\{[^}]*\} ([0-9.e+]+)$', text, re.M)))


def utcnow() -> str:
    sys.path.insert(0, str(ROOT))
    from engine.store import utcnow as now

    return now()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True, type=Path)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-concurrency", type=int, default=4)
    ap.add_argument("--kill-after", type=float, default=8.0, help="seconds into phase 2 (0: skip phase 2)")
    ap.add_argument("--port", type=int, default=8791)
    args = ap.parse_args()
    db, server, log_path = args.home / "slmops.db", f"127.0.0.1:{args.port}", args.home / "serve_load.log"
    base = f"http://127.0.0.1:{args.port}/v1"
    print(f"{args.clients} clients × {args.requests} streaming requests, max_tokens {args.max_tokens}, models "
          f"{', '.join(args.model)}, --max-concurrency {args.max_concurrency}, {os.cpu_count()} CPUs")

    proc = start_server(args.home, args.model, args.port, args.max_concurrency, log_path)
    warm = load(base, args.model, len(args.model), 1, 4)  # load each model once: phase 1 times serving, not loading
    assert all(r["ok"] for r in warm), warm
    since, counted_before = utcnow(), counter_total(args.port)  # the counter holds the warm-up requests too
    t0 = time.perf_counter()
    res = load(base, args.model, args.clients, args.requests, args.max_tokens)
    wall = time.perf_counter() - t0
    time.sleep(1.0)  # the request log commits what has queued within milliseconds
    rec, counted = records(db, server, since), counter_total(args.port) - counted_before
    ok = [r for r in res if r["ok"]]
    lat, ttft = np.array([r["latency"] for r in ok]), np.array([r["ttft"] for r in ok])
    tokens = sum(r["tokens"] for r in ok)
    print(f"phase 1: sent {len(res)}, answered {len(ok)}, errors {len(res) - len(ok)}; records {sum(rec.values())} "
          f"{rec}; /metrics slmops_requests_total +{counted}")
    print(f"  latency p50 {np.percentile(lat, 50):.2f} s, p95 {np.percentile(lat, 95):.2f} s; time to first token "
          f"p50 {np.percentile(ttft, 50):.2f} s, p95 {np.percentile(ttft, 95):.2f} s; {tokens} tokens in {wall:.1f} s "
          f"= {tokens / wall:.1f} tok/s aggregate")
    for err in sorted({r["error"] for r in res if not r["ok"]})[:5]:
        print("  error:", err)

    if args.kill_after > 0:
        since = utcnow()
        done: list = []
        runner = threading.Thread(target=lambda: done.extend(load(base, args.model, args.clients, args.requests,
                                                                  args.max_tokens)))
        runner.start()
        time.sleep(args.kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        runner.join()
        killed_at = utcnow()
        proc = start_server(args.home, args.model, args.port, args.max_concurrency, log_path)  # marks open rows
        rec = records(db, server, since)
        ok = sum(r["ok"] for r in done)
        refused = sum((not r["ok"]) and r["refused"] for r in done)
        cut = len(done) - ok - refused
        acknowledged = ok + sum((not r["ok"]) and r["acknowledged"] for r in done)
        stored = sum(rec.values())
        print(f"phase 2 (SIGKILL after {args.kill_after:.0f} s, at {killed_at}): clients made {len(done)} requests: "
              f"{ok} answered, {cut} reached the server and were cut off, {refused} refused (no server); records "
              f"{stored} {rec} (answered + cut off = {ok + cut})")
        # a reply starts only after its row is committed: every acknowledged request must have one; a request cut
        # off before its reply started may or may not have been read (and recorded) when the server died
        print(f"  acknowledged by the server (a reply started): {acknowledged}; records {stored}: "
              f"{'every acknowledged request is recorded' if stored >= acknowledged else 'RECORDS MISSING'}; "
              f"cut off before any reply: {cut - (acknowledged - ok)}, of which recorded: "
              f"{max(stored - acknowledged, 0)}")
    proc.terminate()
    proc.wait(timeout=30)


if __name__ == "__main__":
    main()
