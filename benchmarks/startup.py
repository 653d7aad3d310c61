"""Measure the dashboard's first start (GGUF -> safetensors conversion included) against a second start.

Usage: .venv/bin/python benchmarks/startup.py [--home DIR]
Starts `app.py` twice on a fresh workspace and prints, for each start: seconds until HTTP 200 on `/`, and seconds
until the default model is ready (read from the store). Ratios are from this one run.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_once(home: Path) -> dict:
    from engine import DEFAULT_MODEL_ID, Engine, Settings

    port = free_port()
    env = dict(os.environ, SLMOPS_HOME=str(home), SLMOPS_OFFLINE="1")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    http_s = ready_s = None
    try:
        while time.monotonic() - t0 < 600 and (http_s is None or ready_s is None):
            if http_s is None:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200:
                        http_s = time.monotonic() - t0
                except OSError:
                    pass
            if ready_s is None and (home / "slmops.db").exists():
                engine = Engine(Settings(home=home, offline=True), recover=False)
                models = {m.id: m for m in engine.list_models()}
                if DEFAULT_MODEL_ID in models and models[DEFAULT_MODEL_ID].ready:
                    ready_s = time.monotonic() - t0
                engine.close()
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # the model can be used once the server answers and the model is ready, whichever comes last
    return {"http_200_s": http_s, "model_ready_s": ready_s, "usable_s": max(http_s, ready_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="workspace to use (default: a new temp folder)")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="slmops-startup-")) / "ws"
    first = start_once(home)
    second = start_once(home)
    print(f"workspace: {home}")
    print(f"{'start':<8}{'HTTP 200 (s)':>14}{'model ready (s)':>18}{'ready to chat (s)':>20}")
    for name, r in (("first", first), ("second", second)):
        print(f"{name:<8}{r['http_200_s']:>14.1f}{r['model_ready_s']:>18.1f}{r['usable_s']:>20.1f}")
    print(f"second/first, time until ready to chat: {second['usable_s'] / first['usable_s']:.2f}")


if __name__ == "__main__":
    main()
