"""Drives the real UI in headless Chromium (Debian's /usr/bin/chromium) against the bundled model: chat, the first
start, serving, an idle page. The job tabs are in test_browser_jobs.py; the app fixture is in conftest.py."""
import os
import re
import subprocess
import sys
import time

import pytest

from tests.browser_helpers import (CHROMIUM, CHROMIUM_ARGS, answer_again, free_port, keep_screenshots,
                                   needs_chromium, open_tab, send, wait_for_app, wait_reply)
from tests.helpers import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.real]


@needs_chromium
def test_chat_runs_and_models_in_the_browser(app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # two independent browser sessions chatting at once must keep their own histories
        first = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        second = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        for page in (first, second):
            page.goto(app_url)
            page.wait_for_function("document.querySelector('#chat-input textarea') && "
                                   "document.querySelector('#chat-stats') !== null", timeout=60_000)
            page.wait_for_function("[...document.querySelectorAll('input')].some(i => "
                                   "i.value === 'smollm2-135m-instruct')", timeout=60_000)
        # what the page says to screen readers when an event ends (it read out Gradio's missing key "common.complete")
        first.evaluate("() => { window.said = []; new MutationObserver(ms => ms.forEach(m => window.said.push("
                       "(m.target.textContent || '').trim()))).observe(document.body, {subtree: true, childList: true, "
                       "characterData: true}); }")
        send(first, "What is the capital of France?")
        send(second, "Name one colour of the rainbow.")
        first_text, second_text = wait_reply(first), wait_reply(second)
        assert "Paris" in first_text
        first.wait_for_function("window.said.includes('Complete')", timeout=30_000, polling=250)
        assert not [t for t in first.evaluate("window.said") if "common." in t]
        assert "rainbow" not in first_text and "France" not in second_text
        first.click("#chat-send")  # an empty message: said in a toast, the conversation stays on screen
        first.wait_for_function("document.body.innerText.includes('Type a message first')", timeout=30_000)
        assert "Paris" in first.inner_text("#chatbot")
        first.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
        # saved conversations: save it, clear the screen, reopen it from the list
        first.get_by_text("Saved conversations").click()
        first.click("#chat-save")
        first.wait_for_function("document.body.innerText.includes('Saved as conversation')", timeout=30_000)
        first.click("#chat-clear")
        first.wait_for_function("!document.querySelector('#chatbot').innerText.includes('Paris')", timeout=30_000)
        first.click("#chat-saved input")
        first.get_by_role("option", name=re.compile("^What is the capital of France")).first.click()
        first.click("#chat-open")
        first.wait_for_function("document.querySelector('#chatbot').innerText.includes('Paris')", timeout=30_000)
        first.screenshot(path=str(tmp_path / "saved-chat.png"), full_page=True)
        # regenerate the answer, edit the question (the conversation goes on from it), take it back into the box
        answer_again(first, lambda: first.click("#chatbot button[aria-label='Retry']"))
        assert "Paris" in first.inner_text("#chatbot")

        def edit_question():
            first.click("#chatbot button[aria-label='Edit']")
            first.fill("#chatbot textarea", "What is the capital of Germany?")
            first.click("#chatbot button[aria-label='Submit']")
        chat = answer_again(first, edit_question)
        assert "Germany" in chat and "France" not in chat
        first.click("#chatbot button[aria-label='Undo']")
        first.wait_for_function("!document.querySelector('#chatbot').innerText.includes('Germany')", timeout=30_000)
        assert first.input_value("#chat-input textarea") == "What is the capital of Germany?"

        first.get_by_role("tab", name="Side by side").click()
        first.fill("#side-prompt textarea", "What is the capital of France?")
        first.click("#side-send")
        first.wait_for_function("['#side-stats-a', '#side-stats-b'].every(s => "
                                "document.querySelector(s)?.innerText.includes('tokens/s'))", timeout=300_000)
        assert "Paris" in first.inner_text("#side-a") and "Paris" in first.inner_text("#side-b")
        first.screenshot(path=str(tmp_path / "side.png"), full_page=True)

        first.get_by_role("tab", name="Runs").click()
        first.wait_for_function("document.querySelector('#runs-table')?.innerText.includes('prepare_model')",
                                timeout=30_000)
        first.locator("#runs-table [role=gridcell]").filter(has_text="prepare_model").first.click()  # opens the run
        first.wait_for_function("document.body.innerText.includes('Run 1 · prepare_model')", timeout=30_000)
        first.wait_for_function("[...document.querySelectorAll('textarea')].some(t => "
                                "t.value.includes('dequantizing'))", timeout=30_000)  # the log tail
        first.screenshot(path=str(tmp_path / "runs.png"), full_page=True)
        first.get_by_role("tab", name="Models").click()
        first.wait_for_function("document.querySelector('#models-table')?.innerText.includes('LlamaForCausalLM')",
                                timeout=30_000)
        assert "smollm2-135m-instruct" in first.inner_text("#lineage")  # a model is picked: its lineage shows
        first.fill("#models-ref textarea", "/no/such/model")  # a bad path: the message, and the table stays
        first.click("#models-register")
        first.wait_for_function("document.body.innerText.includes('/no/such/model')", timeout=30_000)
        time.sleep(1)
        assert "LlamaForCausalLM" in first.inner_text("#models-table")
        first.screenshot(path=str(tmp_path / "models.png"), full_page=True)
        browser.close()
    for name in ("chat.png", "saved-chat.png", "side.png", "runs.png", "models.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    keep_screenshots(tmp_path, ("chat.png", "saved-chat.png", "side.png", "runs.png", "models.png"))


@needs_chromium
def test_first_start_banner_goes_away_once_the_model_is_ready(tmp_path):
    """On a fresh workspace the app starts while the bundled model is prepared; a page opened after that says
    nothing is being prepared (it showed the first start's banner for as long as the app ran)."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = dict(os.environ, SLMOPS_HOME=str(tmp_path / "fresh"), SLMOPS_OFFLINE="1")
    with open(tmp_path / "app.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            url = wait_for_app(proc, port, tmp_path / "app.log")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                first = browser.new_page()
                first.goto(url)
                first.wait_for_function("document.querySelector('#banner')?.innerText.includes('Preparing')",
                                        timeout=60_000)
                first.wait_for_function("[...document.querySelectorAll('input')].some(i => "
                                        "i.value === 'smollm2-135m-instruct')", timeout=300_000, polling=1000)
                later = browser.new_page()
                later.goto(url)
                later.wait_for_function("[...document.querySelectorAll('input')].some(i => "
                                        "i.value === 'smollm2-135m-instruct')", timeout=60_000, polling=500)
                assert "Preparing" not in later.inner_text("body")
                first.wait_for_function("!document.body.innerText.includes('Preparing')", timeout=30_000,
                                        polling=500)
                # the job line is redrawn with the banner: it does not go on showing the preparation's last stage
                assert "dequantizing" not in first.evaluate("document.querySelector('#jobs')?.innerText || ''")
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=20)


@needs_chromium
def test_serve_from_the_ui_records_and_charts_every_request(app_url, tmp_path):
    import httpx

    port = free_port()
    with open_tab(app_url, "Serve", wait_for_default_model=True) as page:
        page.get_by_label("Port").fill(str(port))
        page.get_by_role("button", name="Start serving").click()
        page.wait_for_function(f"document.body.innerText.includes('127.0.0.1:{port}/v1')", timeout=60_000)
        base = f"http://127.0.0.1:{port}"
        body = {"model": "smollm2-135m-instruct", "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "user", "content": "Say hi"}]}
        chat = f"{base}/v1/chat/completions"
        for stream in (False, True):
            assert httpx.post(chat, json={**body, "stream": stream}, timeout=120).status_code == 200
        assert httpx.post(chat, json={**body, "model": "nope"}, timeout=30).status_code == 404
        assert httpx.get(f"{base}/health").json()["status"] == "ok"
        counted = httpx.get(f"{base}/metrics").text
        assert 'slmops_requests_total{model="smollm2-135m-instruct",status="ok"} 2.0' in counted
        page.wait_for_timeout(1000)  # the records are written in batches every 0.25 s
        page.click("#serve-refresh")
        page.wait_for_function("document.querySelector('#serve-totals')?.innerText.includes('3 requests')",
                               timeout=30_000, polling=500)
        page.wait_for_selector("#serve-chart .js-plotly-plot", timeout=30_000)
        latest = page.inner_text("#serve-latest")
        assert latest.count("smollm2-135m-instruct") == 2 and "refused" in latest and "does not exist" in latest
        page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
        page.get_by_role("button", name="Stop serving").click()
        page.wait_for_function("document.body.innerText.includes('Not serving')", timeout=30_000)
    keep_screenshots(tmp_path, ("serve.png",))


@needs_chromium
def test_an_idle_page_does_not_animate_at_display_rate(app_url):
    """Gradio's hidden page-level status tracker would ask for ~60 frames a second forever (0.10 of a core of
    Chromium, measured); assets/quiet_frames.js, put ahead of Gradio's modules, serves it 5 a second."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        # counts the frames that reach the browser, and those of them asked for by Gradio's status trackers
        page.add_init_script("window.__frames = [0, 0]; const f = window.requestAnimationFrame.bind(window); "
                             "window.requestAnimationFrame = (cb) => { window.__frames[0]++; "
                             "if ((new Error().stack || '').includes('statustracker')) window.__frames[1]++; "
                             "return f(cb); };")
        page.goto(app_url)
        page.wait_for_function("[...document.querySelectorAll('input')].some(i => "
                               "i.value === 'smollm2-135m-instruct')", timeout=60_000)
        time.sleep(2)
        before = page.evaluate("window.__frames")
        time.sleep(4)
        after = page.evaluate("window.__frames")
        browser.close()
    every, trackers = ((a - b) / 4 for a, b in zip(after, before))
    assert trackers < 6, f"{trackers:.0f} animation frames a second for Gradio's status trackers on an idle page"
    assert every < 60, f"{every:.0f} animation frames a second on an idle page"
