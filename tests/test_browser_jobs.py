"""Drives each job tab of the real UI in headless Chromium against the bundled model: fine-tune, distill (and its
size sweep), quantize (sweep and GGUF), benchmark, evaluate, and a study."""
import re

import pytest

from tests.browser_helpers import fill_short_finetune, first_rows, keep_screenshots, needs_chromium, open_tab

pytestmark = [pytest.mark.browser, pytest.mark.real]


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
        # Runs: the run exports as Olive's own config (and the command that makes it)
        page.get_by_role("tab", name="Runs").click()
        page.wait_for_function("document.querySelector('#runs-table')?.innerText.includes('finetune')",
                               timeout=30_000)
        page.locator("#runs-table [role=gridcell]").filter(has_text="finetune").first.click()
        page.wait_for_function(f"document.body.innerText.includes('Run {run_id.split()[-1]} · finetune')",
                               timeout=30_000)
        page.click("#runs-olive")
        page.wait_for_function("document.querySelector('#runs-olive-files')?.innerText.includes('config.json')",
                               timeout=120_000, polling=1000)
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
        for _ in range(3):  # drop the default sizes (3, 6, 10), then pick 1 and 2
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
        # The job panel says 'succeeded' before the tab's own 3 s poll redraws the chart and the exports table: the
        # chart can show the last candidate from a poll before the run ended, the table its registered export only
        # from the poll after. Plotly draws text in SVG: textContent, not innerText.
        page.wait_for_function("document.querySelector('#q-pareto')?.textContent.includes('int4-builder-b32')",
                               timeout=60_000)
        page.wait_for_function("document.querySelector('#q-exports')?.innerText"
                               ".includes('smollm2-135m-instruct-onnx-int4')", timeout=60_000, polling=500)
        page.screenshot(path=str(tmp_path / "quantize.png"), full_page=True)
        chart = page.text_content("#q-pareto")
        assert "int4" in chart and "perplexity" in chart
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
        page.get_by_label("Time budget s").fill("4")  # a few more repetitions while the interval is wide
        page.get_by_label("Prompt count").fill("1")
        page.get_by_text("Prompts and quality").click()
        page.get_by_label("Ppl tokens").fill("256")
        page.get_by_label("Mc questions").fill("12")
        page.get_by_label("Agreement prompts").fill("0")
        page.click("#bench-start")
        # while it runs, nothing is drawn (the charts would take CPU from the timing); the numbers come as text
        page.wait_for_function("document.body.innerText.includes('appear here when it ends')", timeout=60_000)
        # the status, the charts and the job line each have their own poll: wait for the status itself (a toast
        # of the job line says 'succeeded' up to 10 s before the status does)
        page.wait_for_function("[...document.querySelectorAll('.job-status')].some(e => "
                               "e.innerText.includes('succeeded'))", timeout=600_000, polling=1000)
        page.wait_for_selector("#bench-scatter .js-plotly-plot", timeout=60_000)
        assert page.locator(".prose.job-status").filter(has_text="smollm2-135m-instruct: decode").count() == 1
        page.screenshot(path=str(tmp_path / "benchmark.png"), full_page=True)
        assert "smollm2-135m-instruct" in page.text_content("#bench-scatter")
        table = page.inner_text("#bench-table")
        assert "range of" in table and "%" in table  # decode median and its range over < 6 repetitions, MC accuracy
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
def test_a_study_from_the_finetune_tab_shows_its_trials_and_plots_and_clones_the_best(app_url, tmp_path):
    train = first_rows(tmp_path / "train.jsonl", 24)
    with open_tab(app_url, "Fine-tune", wait_for_default_model=True) as page:
        fill_short_finetune(page, train, 4)
        page.get_by_text("Tune · search hyperparameters with Optuna").click()
        page.click("#tune-finetune-objective input")
        page.get_by_role("option", name="eval_loss", exact=True).click()
        page.get_by_label("Trials", exact=True).fill("2")
        # no pruner: both trials finish, so every plot (importances need two finished trials) has something to draw
        page.locator("#tune-finetune").get_by_role("radio", name="none", exact=True).check()
        page.click("#tune-finetune-start")
        # the summary counts the finished trials while the study runs: wait for the study's own end, then for the
        # trials' table, which has its own poll
        page.wait_for_function("[...document.querySelectorAll('.job-status')].some(e => "
                               "e.innerText.includes('trials finished') && e.innerText.includes('succeeded'))",
                               timeout=900_000, polling=1000)
        page.wait_for_function("!document.querySelector('#tune-finetune-trials').innerText.includes('running')",
                               timeout=60_000, polling=1000)
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


@needs_chromium
def test_adapters_exported_with_their_base_then_one_added_then_chatted_with(app_url, real_engine, tmp_path):
    """Quantize exports the bundled model with a LoRA adapter (the adapter's check in a table), Add adapters joins a
    second one to that export, and Chat lists both as EXPORT:ADAPTER."""
    from tests.test_adapters import lora_adapter

    base = real_engine.ensure_default_model().id
    for name, seed in (("ui-ad-one", 1), ("ui-ad-two", 2)):
        lora_adapter(real_engine, base, tmp_path / name, name, ["q_proj", "v_proj"], 4, seed=seed, scale=0.01)
    with open_tab(app_url, "Quantize", wait_for_default_model=True) as page:
        page.click("#q-adapters input")
        page.get_by_role("option", name="ui-ad-one", exact=True).click()
        page.keyboard.press("Escape")
        page.get_by_label("Output name (optional)").first.fill("ui-adapters")
        page.get_by_text("Advanced").click()
        page.get_by_label("Verify tokens").fill("0")
        page.get_by_label("Held-out examples per adapter").first.fill("4")
        page.click("#q-start")
        page.wait_for_function("document.querySelector('#q-adapter-table')?.innerText.includes('ui-ad-one')",
                               timeout=600_000, polling=1000)
        # once registered, the exports table lists the export with its adapter
        page.wait_for_function("document.querySelector('#q-exports')?.innerText.includes('ui-ad-one')",
                               timeout=120_000, polling=1000)
        page.screenshot(path=str(tmp_path / "adapters.png"), full_page=True)

        page.get_by_text("Add adapters to an export made with adapters").click()
        page.click("#q-add-export input")
        page.get_by_role("option", name="ui-adapters", exact=True).click()
        page.click("#q-add-adapters input")
        page.get_by_role("option", name="ui-ad-two", exact=True).click()
        page.keyboard.press("Escape")
        page.get_by_label("Held-out examples per adapter").nth(1).fill("4")
        page.click("#q-add-start")
        page.wait_for_function("document.querySelector('#q-adapter-table')?.innerText.includes('ui-ad-two')",
                               timeout=600_000, polling=1000)
        page.get_by_role("tab", name="Chat").click()
        page.get_by_role("button", name="↻ Refresh models").click()
        page.click("#chat-model input")
        options = page.get_by_role("option").all_inner_texts()
        assert {"ui-adapters:ui-ad-one", "ui-adapters:ui-ad-two"} <= set(options), options
        page.screenshot(path=str(tmp_path / "adapters-chat.png"), full_page=True)
    keep_screenshots(tmp_path, ("adapters.png", "adapters-chat.png"))


@needs_chromium
def test_an_adapter_set_from_the_finetune_tab_trains_one_adapter_per_task(app_url, tmp_path):
    """The Adapter set panel shares the fine-tune form's settings; its table starts with the two bundled tasks (one
    is renamed here); the results table fills in with each adapter's task score, and Models shows them under
    their base."""
    with open_tab(app_url, "Fine-tune", wait_for_default_model=True) as page:
        page.get_by_label("Max steps").fill("2")
        page.get_by_label("Eval steps").fill("2")
        page.get_by_label("Eval max examples").fill("1")
        page.get_by_text("Adapter set · one adapter per task on one base").click()
        cell = page.locator("#set-adapters").get_by_text("json-adapter", exact=True)
        cell.dblclick()
        page.keyboard.press("ControlOrMeta+a")
        page.keyboard.type("ui-set-json")
        page.keyboard.press("Enter")
        page.click("#set-start")
        page.wait_for_function("document.body.innerText.includes('Started adapter-set run')", timeout=30_000)
        page.wait_for_function("document.querySelector('#set-results')?.innerText.includes('label-adapter')",
                               timeout=900_000, polling=1000)
        results = page.inner_text("#set-results")
        assert "ui-set-json" in results and "request_to_json" in results and "ticket_label" in results, results
        page.screenshot(path=str(tmp_path / "adapter-set.png"), full_page=True)
        page.reload()  # Models: the picked base's lineage lists each adapter with its task score
        page.get_by_role("tab", name="Models").click()
        page.wait_for_function("document.querySelector('#lineage')?.innerText.split('\\n').some(line => "
                               "line.includes('ui-set-json') && line.includes('task request_to_json'))",
                               timeout=30_000, polling=500)
    keep_screenshots(tmp_path, ("adapter-set.png",))
