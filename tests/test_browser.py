"""Drives the real UI in headless Chromium (Debian's /usr/bin/chromium) against the bundled model."""
import os
import re
import subprocess
import sys
import time

import pytest

from tests.browser_helpers import (CHROMIUM, CHROMIUM_ARGS, answer_again, fill_short_finetune, first_rows,
                                   free_port, keep_screenshots, needs_chromium, open_tab, send, wait_for_app,
                                   wait_reply)
from tests.helpers import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.real]


@pytest.fixture(scope="module")
def app_url(real_home, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("app")
    port = free_port()
    env = dict(os.environ, SLMOPS_HOME=str(real_home), SLMOPS_OFFLINE="1")
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    yield wait_for_app(proc, port, tmp_path / "app.log")
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


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
def test_finetune_from_the_ui_shows_preview_and_live_loss(app_url, tmp_path):
    train = first_rows(tmp_path / "train.jsonl", 24)
    with open_tab(app_url, "Fine-tune", wait_for_default_model=True) as page:
        fill_short_finetune(page, train, 8)
        page.get_by_role("button", name="Validate data").click()
        page.wait_for_selector(".ft-preview mark", timeout=60_000)  # the trained-on part is highlighted
        assert "24 rows" in page.inner_text("body")
        page.get_by_role("button", name="Estimate memory and time").click()  # memory, a timed step and the total
        page.wait_for_function("document.body.innerText.includes('8 steps ≈')", timeout=300_000, polling=1000)
        page.get_by_role("button", name="Start fine-tuning").click()
        page.wait_for_function("/Run \\d+ · (queued|running)/.test(document.body.innerText)", timeout=60_000)
        run_line = next(line for line in page.inner_text("body").splitlines() if line.startswith("Run "))
        page.reload()  # the job outlives the page: the reloaded tab re-attaches to it and follows it live
        page.get_by_role("tab", name="Fine-tune").click()
        run_id = run_line.split(' · ')[0]
        page.wait_for_function(f"document.body.innerText.includes({run_id!r})", timeout=30_000)
        # …and the form shows the settings the running job was started with, not the defaults
        page.wait_for_function("[...document.querySelectorAll('input, textarea')].some(i => i.value === "
                               f"{str(train)!r})", timeout=30_000)
        assert page.get_by_label("Max steps").input_value() == "8"
        page.get_by_role("tab", name="Models").click()  # every tab shows what runs (or says that it ended)
        page.wait_for_function("document.querySelector('#jobs')?.innerText.includes('· finetune ·') || "
                               "document.body.innerText.includes('(finetune) succeeded')", timeout=30_000,
                               polling=500)
        page.screenshot(path=str(tmp_path / "jobs.png"), full_page=True)
        page.get_by_role("tab", name="Fine-tune").click()
        page.wait_for_function("document.body.innerText.includes('succeeded')", timeout=600_000, polling=1000)
        page.wait_for_selector(".js-plotly-plot", timeout=30_000)  # the live loss chart
        # a figure the registry labels for the job panel (it may come a poll after the toast)
        page.wait_for_function("document.body.innerText.includes('eval loss after')", timeout=30_000, polling=500)
        page.wait_for_function("document.body.innerText.includes('Next steps')", timeout=30_000, polling=500)
        made = re.search(r"Made (\S+)\. Next steps", page.inner_text("body")).group(1)  # the adapter it made
        page.screenshot(path=str(tmp_path / "finetune.png"), full_page=True)
        page.reload()  # after the run ended, the tab still shows it (not "No run started from this tab yet")
        page.get_by_role("tab", name="Fine-tune").click()
        page.wait_for_function(f"document.body.innerText.includes({run_id + ' · succeeded'!r})", timeout=30_000)
        # its next steps: "Chat with it" opens the Chat tab with the adapter picked
        page.get_by_role("button", name="Chat with it", exact=True).click()
        page.wait_for_function(f"document.querySelector('#chat-input textarea')?.offsetParent !== null && "
                               f"[...document.querySelectorAll('input')].some(i => i.value === {made!r})",
                               timeout=30_000)
    keep_screenshots(tmp_path, ("finetune.png", "jobs.png"))


@needs_chromium
def test_distill_tab_previews_the_student_and_generates_data(app_url, tmp_path):
    with open_tab(app_url, "Distill", wait_for_default_model=True) as page:
        page.get_by_label("Exact layers (optional)").fill("0,29")
        page.wait_for_function("document.body.innerText.includes('layers [0, 29]')", timeout=30_000)
        assert "M parameters" in page.inner_text("body")  # the student's size, before anything is loaded
        page.get_by_label("Max prompts").fill("3")
        page.get_by_role("button", name="Generate dataset").click()
        # The toast "Run N (generate_data) succeeded." can come before the job panel's figures: wait for those.
        page.wait_for_function("document.body.innerText.includes('answers kept: ')", timeout=300_000, polling=1000)
        # stage 1's dataset is offered to stage 2 as soon as it is written: no refresh, no picking
        page.wait_for_function("document.querySelector('#distill-data textarea')?.value.endsWith('.jsonl')",
                               timeout=30_000, polling=500)
        page.screenshot(path=str(tmp_path / "distill.png"), full_page=True)
    keep_screenshots(tmp_path, ("distill.png",))


@needs_chromium
def test_distill_size_sweep_from_the_ui_plots_task_retention_against_size(app_url, tmp_path):
    train = first_rows(tmp_path / "answers.jsonl", 24)
    with open_tab(app_url, "Distill", wait_for_default_model=True) as page:
        page.get_by_label("Training data (the teacher's dataset)").fill(str(train))
        page.get_by_label("even", exact=True).check()  # evenly spaced layers: no importance rounds here
        page.click("#distill-task input")
        page.get_by_role("option", name="request_to_json", exact=True).click()
        page.get_by_label("Task limit").fill("2")
        page.get_by_label("Max steps").fill("2")
        page.get_by_text("More settings").nth(1).click()  # stage 2's
        page.get_by_label("Eval max examples").fill("0")
        page.get_by_label("General ppl tokens").fill("0")
        page.get_by_text("Size sweep").click()
        sizes = page.locator("#distill-sweep-sizes")
        for _ in range(3):  # drop the default sizes (6, 10, 14), then pick 1 and 2
            sizes.locator("input").click()
            sizes.locator("input").press("Backspace")
        for size in ("1", "2"):
            sizes.locator("input").click()
            page.get_by_role("option", name=size, exact=True).click()
        page.keyboard.press("Escape")
        page.click("#distill-sweep-start")
        page.wait_for_function("document.querySelector('#distill-sweep-chart')?.textContent.includes('2 layers')",
                               timeout=600_000, polling=1000)
        page.wait_for_function("[...document.querySelectorAll('.job-status')].some(e => e.innerText.includes("
                               "'succeeded') && e.innerText.includes('teacher task score'))", timeout=120_000,
                               polling=1000)
        page.screenshot(path=str(tmp_path / "distill-sweep.png"), full_page=True)
        chart = page.text_content("#distill-sweep-chart")
        assert "task retention" in chart and "1 layers" in chart
    keep_screenshots(tmp_path, ("distill-sweep.png",))


@needs_chromium
def test_quantize_sweep_from_the_ui_shows_the_pareto_chart(app_url, tmp_path):
    with open_tab(app_url, "Quantize", wait_for_default_model=True) as page:
        page.get_by_text("Advanced").click()
        page.get_by_label("Verify tokens").fill("512")
        page.get_by_text("Sweep: build several candidates").click()
        for name in ("int4-b64", "int4-builder-b64", "int8"):  # keep int4 (affine) and int4-builder-b32
            page.get_by_role("checkbox", name=name, exact=True).uncheck()
        page.click("#q-sweep")
        page.wait_for_function("document.body.innerText.includes('succeeded')", timeout=600_000, polling=1000)
        # The job panel says 'succeeded' before the tab's own 3 s poll redraws the chart with the last candidate.
        # Plotly draws text in SVG: textContent, not innerText.
        page.wait_for_function("document.querySelector('#q-pareto')?.textContent.includes('int4-builder-b32')",
                               timeout=60_000)
        page.screenshot(path=str(tmp_path / "quantize.png"), full_page=True)
        chart = page.text_content("#q-pareto")
        assert "int4" in chart and "perplexity" in chart
        assert "smollm2-135m-instruct-onnx-int4" in page.inner_text("#q-exports")
        # the same source as GGUF (llama.cpp, Ollama): written, read back by transformers, registered
        page.get_by_text("GGUF for llama.cpp, Ollama and LM Studio", exact=True).click()
        page.get_by_label("Verify tokens (GGUF)").fill("0")
        page.click("#q-gguf-start")
        page.wait_for_function("[...document.querySelectorAll('.job-status')].some(e => e.innerText.includes("
                               "'Made smollm2-135m-instruct-gguf-q4_1'))", timeout=300_000, polling=1000)
        page.wait_for_function("document.querySelector('#q-exports')?.innerText.includes('gguf q4_1')",
                               timeout=30_000, polling=1000)
        page.screenshot(path=str(tmp_path / "quantize-gguf.png"), full_page=True)
        assert page.locator(".next-chat").first.is_visible() and not page.locator(".next-quantize").first.is_visible()
    keep_screenshots(tmp_path, ("quantize.png", "quantize-gguf.png"))


@needs_chromium
def test_benchmark_from_the_ui_shows_the_scatter(app_url, tmp_path):
    with open_tab(app_url, "Benchmark") as page:
        page.click("#bench-models input")
        page.get_by_role("option", name="smollm2-135m-instruct", exact=True).click()
        page.keyboard.press("Escape")
        page.get_by_label("short").nth(1).check()  # generation length: 32 tokens
        page.click("#bench-task input")
        page.get_by_role("option", name="ticket_label", exact=True).click()
        page.get_by_label("Task limit").fill("4")
        page.get_by_label("Repetitions").fill("2")
        page.get_by_label("Prompt count").fill("1")
        page.get_by_text("Prompts and quality").click()
        page.get_by_label("Ppl tokens").fill("256")
        page.get_by_label("Mc questions").fill("12")
        page.get_by_label("Agreement prompts").fill("0")
        page.click("#bench-start")
        # while it runs, nothing is drawn (the charts would take CPU from the timing); the numbers come as text
        page.wait_for_function("document.body.innerText.includes('appear here when it ends')", timeout=60_000)
        page.wait_for_function("document.body.innerText.includes('succeeded')", timeout=600_000, polling=1000)
        page.wait_for_selector("#bench-scatter .js-plotly-plot", timeout=60_000)
        assert page.locator(".prose.job-status").filter(has_text="smollm2-135m-instruct: decode").count() == 1
        page.screenshot(path=str(tmp_path / "benchmark.png"), full_page=True)
        assert "smollm2-135m-instruct" in page.text_content("#bench-scatter")
        table = page.inner_text("#bench-table")
        assert "±" in table and "%" in table  # decode mean ± std, MC accuracy
        assert "task score" in table and "task score, ticket_label" in page.text_content("#bench-scatter")
    keep_screenshots(tmp_path, ("benchmark.png",))


@needs_chromium
def test_evaluate_from_the_ui_scores_a_task_and_lists_every_example(app_url, tmp_path):
    with open_tab(app_url, "Evaluate") as page:
        page.click("#eval-model input")
        page.get_by_role("option", name="smollm2-135m-instruct", exact=True).click()
        page.get_by_label("Examples (0: all)").fill("3")
        page.locator("#eval-backend").get_by_label("transformers").check()
        page.click("#eval-start")
        page.wait_for_function("[...document.querySelectorAll('.job-status')].some(e => e.innerText.includes("
                               "'succeeded') && e.innerText.includes('95 % interval'))", timeout=300_000, polling=1000)
        page.wait_for_function("(document.querySelector('#eval-examples')?.innerText.match(/intent/g) || [])"
                               ".length >= 3", timeout=30_000, polling=500)
        page.screenshot(path=str(tmp_path / "evaluate.png"), full_page=True)
        status = page.locator(".prose.job-status").filter(has_text="request_to_json").inner_text()
        assert "score" in status and "scored on" in status and "transformers" in status
    keep_screenshots(tmp_path, ("evaluate.png",))


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


@needs_chromium
def test_a_study_from_the_finetune_tab_shows_its_trials_and_plots_and_clones_the_best(app_url, tmp_path):
    train = first_rows(tmp_path / "train.jsonl", 24)
    with open_tab(app_url, "Fine-tune", wait_for_default_model=True) as page:
        fill_short_finetune(page, train, 4)
        page.get_by_text("Tune · search hyperparameters with Optuna").click()
        page.click("#tune-finetune-objective input")
        page.get_by_role("option", name="eval_loss", exact=True).click()
        page.get_by_label("Trials", exact=True).fill("2")
        page.click("#tune-finetune-start")
        page.wait_for_function("[...document.querySelectorAll('.job-status')].some(e => "
                               "e.innerText.includes('trials finished'))", timeout=900_000, polling=1000)
        page.wait_for_function("document.body.innerText.includes('Best: trial')", timeout=60_000, polling=1000)
        page.wait_for_function("document.querySelectorAll('#tune-finetune .js-plotly-plot').length >= 3",
                               timeout=60_000, polling=1000)
        trials = page.inner_text("#tune-finetune-trials")
        assert trials.count("complete") + trials.count("pruned") == 2, trials
        page.screenshot(path=str(tmp_path / "tune.png"), full_page=True)
        best = re.search(r'"learning_rate": ([0-9.e-]+)', page.inner_text("body")).group(1)
        page.get_by_role("button", name="Clone the best trial into the form").click()
        page.wait_for_function(f"[...document.querySelectorAll('input')].some(i => i.value && "
                               f"Math.abs(Number(i.value) - {best}) < 1e-12)", timeout=30_000)
    keep_screenshots(tmp_path, ("tune.png",))
