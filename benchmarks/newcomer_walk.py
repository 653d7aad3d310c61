"""A newcomer's first hour, walked in headless Chromium on a fresh workspace, with screenshots to look at and the
fine-tune's ETA checked against the time it really took.

    python benchmarks/newcomer_walk.py [--home DIR] [--shots DIR] [--port N]

1. `python app.py` on an empty workspace: seconds until the page answers and until the bundled model is ready;
   `first-view.png` once it is (no preparation banner).
2. Fine-tune with the form as it opens (the bundled model, the example task's files, the job's defaults): the job
   panel is read every second. `finetune-10pct.png` at the first reading at or past 10 %, with the ETA it shows;
   `indicator.png` shows the job line on the Models tab; `finished.png` the finished run with its next-step
   buttons. The ETA at 10 %, 25 % and 50 % is printed against the time the run really took from there.
3. `runs-metrics.png`: the run opened in Runs, one metrics panel per family.
4. Chat: ask, save the conversation, restart the app, reopen it: `reopened.png`.
Needs Debian's chromium and Playwright (as the browser tests).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser_helpers import CHROMIUM, CHROMIUM_ARGS, free_port, send, wait_for_app, wait_reply  # noqa: E402

FINAL = re.compile(r"^Run (\d+) · (succeeded|failed|cancelled)", re.M)  # the job panel's line, not a toast
READY = "[...document.querySelectorAll('input')].some(i => i.value === 'smollm2-135m-instruct')"
ETA = re.compile(r"about (?:(\d+) h )?(?:(\d+) min )?(\d+) s left")


def reading(text: str) -> tuple[int, str, int | None] | None:
    """(progress %, stage, ETA seconds or None) from the job panel's "Run N · running · P% · stage · about … left"."""
    line = next((x for x in text.splitlines() if re.match(r"Run \d+ · running · \d+%", x)), None)
    if line is None:
        return None
    parts = line.split(" · ")
    m = ETA.search(line)
    eta = int(m[1] or 0) * 3600 + int(m[2] or 0) * 60 + int(m[3]) if m else None
    return int(parts[2].rstrip("%")), parts[3], eta


@contextlib.contextmanager
def app_page(home: Path, port: int, log: Path, what: str):
    """`python app.py` on `home` and a headless Chromium page on it once the bundled model is listed; both are
    stopped on the way out (also when the walk fails)."""
    from playwright.sync_api import sync_playwright

    t0 = time.monotonic()
    env = dict(os.environ, SLMOPS_HOME=str(home), SLMOPS_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=open(log, "a"), stderr=subprocess.STDOUT)
    try:
        url = wait_for_app(proc, port, log, timeout=300)
        print(f"{what}: the app answers after {time.monotonic() - t0:.1f} s (workspace {home})", flush=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.wait_for_function(READY, timeout=600_000, polling=1000)
            page.wait_for_function("!document.body.innerText.includes('Preparing')", timeout=120_000, polling=1000)
            print(f"{what}: the bundled model is ready after {time.monotonic() - t0:.1f} s", flush=True)
            yield page
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def panel_text(page) -> str:
    return page.inner_text("body")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=None, help="an empty workspace (default: a new temporary folder)")
    ap.add_argument("--shots", default="/tmp/slmops-walk", help="where the screenshots go")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="slmops-walk-"))
    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    log = shots / "app.log"

    with app_page(home, port, log, "first start") as page:
        page.screenshot(path=str(shots / "first-view.png"), full_page=True)

        page.get_by_role("tab", name="Fine-tune").click()
        page.wait_for_function(READY, timeout=60_000, polling=500)
        page.click("#ft-start")
        page.wait_for_function("/Run \\d+ · running/.test(document.body.innerText)", timeout=120_000, polling=500)
        started = time.monotonic()
        readings = []  # (seconds since start, progress %, stage, ETA seconds or None)
        shot_10 = indicator = False
        while not (end := FINAL.search(text := panel_text(page))):
            now = reading(text)
            if now:
                readings.append((time.monotonic() - started, now[0], now[1], now[2]))
                if not shot_10 and now[0] >= 10 and now[2] is not None:
                    page.screenshot(path=str(shots / "finetune-10pct.png"), full_page=True)
                    shot_10 = True
                elif shot_10 and not indicator:
                    page.get_by_role("tab", name="Models").click()
                    page.wait_for_function("document.querySelector('#jobs')?.innerText.includes('finetune')",
                                           timeout=30_000, polling=500)
                    page.screenshot(path=str(shots / "indicator.png"), full_page=True)
                    page.get_by_role("tab", name="Fine-tune").click()
                    indicator = True
            time.sleep(1.0)
        total = time.monotonic() - started
        run_id = int(end[1])
        if end[2] != "succeeded":
            print(f"fine-tune run {run_id} {end[2]}", file=sys.stderr)
            return 1
        page.wait_for_function("document.body.innerText.includes('Next steps')", timeout=60_000, polling=500)
        page.screenshot(path=str(shots / "finished.png"), full_page=True)
        print(f"fine-tune run {run_id}: {total:.0f} s from 'running' to 'succeeded' (read every second)")
        print(f"{'at':>6}{'progress':>10}{'ETA shown':>11}{'really left':>13}{'error':>8}  stage")
        for target in (10, 25, 50, 75, 90):
            hit = next((r for r in readings if r[1] >= target and r[3] is not None), None)
            if hit:
                left = total - hit[0]
                print(f"{hit[0]:>5.0f}s{hit[1]:>9}%{hit[3]:>10}s{left:>12.0f}s{(hit[3] - left) / left:>8.0%}  {hit[2]}")
        (shots / "eta.tsv").write_text("".join(f"{t:.1f}\t{p}\t{eta}\t{stage}\n" for t, p, stage, eta in readings))

        page.get_by_role("tab", name="Runs").click()
        page.wait_for_function("document.querySelector('#runs-table')?.innerText.includes('finetune')",
                               timeout=30_000, polling=500)
        page.locator("#runs-table [role=gridcell]").filter(has_text="finetune").first.click()
        page.wait_for_function(f"document.body.innerText.includes('Run {run_id} · finetune')", timeout=30_000)
        page.wait_for_timeout(3000)  # the metrics panels are drawn after the run's line
        page.screenshot(path=str(shots / "runs-metrics.png"), full_page=True)

        page.get_by_role("tab", name="Chat").click()
        send(page, "What is the capital of France?")
        wait_reply(page)
        page.get_by_text("Saved conversations").click()
        page.click("#chat-save")
        page.wait_for_function("document.body.innerText.includes('Saved as conversation')", timeout=30_000)
    with app_page(home, port, log, "restart") as page:
        page.get_by_text("Saved conversations").click()
        page.click("#chat-saved input")
        page.get_by_role("option", name=re.compile("^What is the capital of France")).first.click()
        page.click("#chat-open")
        page.wait_for_function("document.querySelector('#chatbot').innerText.includes('Paris')", timeout=30_000)
        page.screenshot(path=str(shots / "reopened.png"), full_page=True)
    print(f"screenshots in {shots}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
