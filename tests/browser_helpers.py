"""What the browser tests share: starting the app, opening a tab in headless Chromium (Debian's /usr/bin/chromium),
chatting, waiting for replies, keeping screenshots."""
import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.helpers import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
# Long waits poll every 250-1000 ms: by default Playwright checks on every animation frame (60 a second), CPU
# that the page's own job (a fine-tune, a sweep, a benchmark) would lose on a 2-core machine.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_app(proc: subprocess.Popen, port: int, log_path, timeout: float = 120) -> str:
    """The app's URL once it answers; fails the test with the app's log if it exits or takes too long."""
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("app did not start:\n" + log_path.read_text())
        time.sleep(0.5)


@contextlib.contextmanager
def open_tab(app_url, tab: str, wait_for_default_model: bool = False):
    """A fresh headless Chromium page on the app, on one tab (optionally once the model lists are filled)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(app_url)
        page.get_by_role("tab", name=tab).click()
        if wait_for_default_model:
            page.wait_for_function("[...document.querySelectorAll('input')].some(i => "
                                   "i.value === 'smollm2-135m-instruct')", timeout=60_000)
        yield page
        browser.close()


def send(page, text):
    page.fill("#chat-input textarea", text)
    page.click("#chat-send")


def wait_reply(page):
    page.wait_for_function("document.querySelector('#chat-stats')?.innerText.includes('tokens/s')", timeout=300_000,
                           polling=250)
    return page.inner_text("#chatbot")


def answer_again(page, action):
    """Do `action` (regenerate, edit) and wait for the new reply: its speed line replaces the last one."""
    before = page.inner_text("#chat-stats")
    page.wait_for_timeout(1000)  # the chatbot's message buttons are disabled for a moment after a reply
    action()
    page.wait_for_function("(b) => { const t = document.querySelector('#chat-stats')?.innerText || ''; "
                           "return t.includes('tokens/s') && t !== b && !/queue|processing/.test(t); }", arg=before,
                           timeout=300_000, polling=250)
    return page.inner_text("#chatbot")


needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason="needs Debian's chromium (make test installs it)")


def fill_short_finetune(page, train, max_steps: int) -> None:
    """The Fine-tune form for a short run on `train` (no eval file: a split; eval loss every 2 steps, no scoring)."""
    page.get_by_label("…or a training file path").fill(str(train))
    page.get_by_label("Eval file path (empty: split off the eval ratio)").fill("")
    page.get_by_label("Max steps").fill(str(max_steps))
    page.get_by_label("Eval steps").fill("2")
    page.get_by_label("Eval max examples").fill("0")


def first_rows(path, n: int):
    """The first n rows of the bundled request → JSON training file, written to `path`."""
    lines = (ROOT / "assets" / "datasets" / "request_to_json.train.jsonl").read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:n]))
    return path


def keep_screenshots(tmp_path, names):
    keep = os.environ.get("SLMOPS_SCREENSHOTS")  # optional: copy the pictures somewhere to look at them
    if keep:
        os.makedirs(keep, exist_ok=True)
        for name in names:
            shutil.copy(tmp_path / name, keep)
