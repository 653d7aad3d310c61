"""Distill tab: stage 1 (the teacher writes a dataset), browsing/editing the datasets, stage 2 (a student learns
from the teacher with the KD loss). Each stage follows its run with the shared job panel."""
from __future__ import annotations

import gradio as gr

from engine import JOB_KINDS, DistillConfig, GenerateDataConfig, ModelFormat

from ..charts import student_sweep_figure
from ..forms import ConfigForm, model_choices, settings_file_row, task_choices, ui_errors
from ..job_panel import build_job_panel, follow_run
from ..tune_panel import build_tune_panel


def build_stage1(engine) -> tuple:
    run_state = gr.State(None)
    form = ConfigForm(GenerateDataConfig, required={"teacher_model_id": "Pick a teacher model."})
    teacher = form.field("teacher_model_id", gr.Dropdown(
        label="Teacher", choices=[], info="Any registered full model; the bundled one by default."))
    with gr.Row():
        form.field("prompts_path", label="Prompts file", scale=3)
        upload = gr.File(label="…or upload prompts", file_types=[".jsonl", ".json", ".csv", ".parquet"], scale=1)
    with gr.Row():
        form.field("system_prompt", label="System prompt (optional)", lines=2)
        form.field("few_shot", label="Few-shot examples (optional)", lines=2, info=None,
                   placeholder='{"prompt": "2+2?", "response": "4"}  — one JSON object per line')
    with gr.Row():
        form.field("temperature", step=0.05)
        form.field("top_p", step=0.05)
        form.field("max_new_tokens", step=1, maximum=512)
        form.field("n_per_prompt", step=1)
        form.field("batch_size", step=1, maximum=64)
        form.field("max_prompts")
    with gr.Accordion("Filters", open=False):
        with gr.Row():
            form.field("drop_truncated", label="Drop answers cut off at max tokens")
            form.field("dedupe", label="Drop duplicates")
            form.field("require_json", label="Keep only JSON answers")
            form.field("min_chars")
            form.field("max_chars")
            form.field("regex", label="Keep only answers matching (regex)")
    form.field("output_name", label="Dataset name (optional)")
    form.remaining()
    start = gr.Button("Generate dataset", variant="primary")
    message = gr.Markdown("")
    finished = build_job_panel(engine, run_state, ("generate_data",), chart=False)

    @ui_errors
    def do_start(*values):
        *fields, upload_ = values
        run_id = engine.start_run(form.config(fields, **({"prompts_path": upload_} if upload_ else {})))
        return run_id, f"Started run {run_id}."

    start.click(do_start, form.inputs + [upload], [run_state, message])
    return teacher, form, finished


def build_datasets(engine):
    with gr.Row():
        picked = gr.Dropdown(label="Dataset", choices=[], scale=3, info="Made by stage-1 runs, newest first.")
        refresh = gr.Button("↻", scale=0, min_width=60)
    rows = gr.Dataframe(headers=["prompt", "response"], interactive=True, wrap=True, max_height=360,
                        column_widths=["45%", "55%"],
                        label="Rows (edit cells, then save)")
    with gr.Row():
        save = gr.Button("Save edits")
        download = gr.File(label="Download", interactive=False)
    note = gr.Markdown("")

    def choices():
        return [(f"{d.path.rsplit('/', 1)[-1]} (run {d.run_id}, teacher {d.model_id})", d.path)
                for d in engine.list_datasets()]

    @ui_errors
    def show(path):
        if not path:
            return [], None, ""
        data = engine.dataset_rows(path)
        return [[r["prompt"], r["response"]] for r in data], path, f"{len(data)} rows · `{path}`"

    @ui_errors
    def do_save(path, table):
        if not path:
            raise gr.Error("Pick a dataset first.")
        values = table.values.tolist() if hasattr(table, "values") else table
        n = engine.save_dataset_rows(path, [{"prompt": p, "response": r} for p, r in values])
        return f"Saved {n} rows to `{path}`."

    picked.change(show, [picked], [rows, download, note])
    refresh.click(lambda: gr.update(choices=choices()), None, [picked])
    save.click(do_save, [picked, rows], [note])
    return picked, choices


def build_stage2(engine, dataset_picker) -> tuple:
    run_state = gr.State(None)
    form = ConfigForm(DistillConfig, required={
        "teacher_model_id": "Pick a teacher model.",
        "train_path": "Give the training data: pick a dataset above or type a path."})
    with gr.Row():
        teacher = form.field("teacher_model_id", gr.Dropdown(label="Teacher", choices=[]))
        data = form.field("train_path", label="Training data (the teacher's dataset)", scale=2, elem_id="distill-data",
                          info="Filled from the dataset picked above; any chat dataset works.")
        form.field("eval_ratio", step=0.05)
    with gr.Row():
        mode = form.field("student", label="Student")
        keep = form.field("keep_layers", step=1, maximum=64)
        selection = form.field("layer_selection")
        layers = form.field("layers", label="Exact layers (optional)", placeholder="e.g. 0,3,6,9,12,15,18,21,24,29")
        student = form.field("student_model_id", gr.Dropdown(label="Existing student", choices=[],
                                                             info="Must share the teacher's tokenizer."))
    preview = gr.Markdown("")
    with gr.Row():
        task = form.field("task", gr.Dropdown(label="Task (teacher and student are scored on it)", choices=[""],
                                              value="", elem_id="distill-task",
                                              info=DistillConfig.model_fields["task"].description))
        form.field("task_limit")
    with gr.Row():
        form.field("alpha", step=0.05)
        form.field("temperature", step=0.5)
        form.field("teacher_top_k", label="Teacher's top-k, cached (0: teacher every step)", step=1)
        for name in ("learning_rate", "epochs", "max_steps", "batch_size", "max_length"):
            form.field(name)
    with gr.Row():
        form.field("eval_steps")
        form.field("save_steps")
        form.field("output_name", label="Student name (optional)")
    form.remaining()
    settings_file_row(form, engine.settings.cache_dir / "settings")
    start = gr.Button("Train student", variant="primary")
    message = gr.Markdown("")
    build_job_panel(engine, run_state, ("distill",), continuable=True)
    inputs = form.inputs

    def show_preview(*values):
        values = list(values)
        values[1] = values[1] or "preview-needs-no-data.jsonl"  # the preview reads only the teacher's headers
        try:
            p = engine.student_preview(form.config(values))
        except Exception as exc:  # noqa: BLE001 - a preview only explains; starting the run raises properly
            return f"Student preview unavailable: {exc}"
        layers_text = f"layers {p['layers']}" if p["layers"] else "registered model"
        if p["layers"] and form.config(values).measures_importance():
            layers_text = f"the {len(p['layers'])} most important layers, measured when the run starts"
        return (f"Student: **{p['params'] / 1e6:.1f} M parameters** ({p['ratio']:.0%} of the teacher's "
                f"{p['teacher_params'] / 1e6:.1f} M), about **{p['bytes'] / 1e6:.0f} MB** in fp32 · {layers_text}")

    @ui_errors
    def do_start(*values):
        run_id = engine.start_run(form.config(values))
        return run_id, f"Started run {run_id}."

    for widget in (teacher, mode, keep, selection, layers, student):
        widget.change(show_preview, inputs, [preview])
    start.click(do_start, inputs, [run_state, message])
    dataset_picker.change(lambda path: path or gr.skip(), [dataset_picker], [data])
    return teacher, student, task, form


def build_sweep(engine, stage2: ConfigForm, box: gr.Accordion) -> ConfigForm:
    """Students of several sizes with the stage-2 settings above, scored on a task: retention and speed against
    parameters. `box`: the accordion it is in."""
    run_state = gr.State(None)
    form = ConfigForm(JOB_KINDS["distill_sweep"].config, required={
        **stage2.required, "task": "Pick the task (above) every student and the teacher are scored on."})
    for name, widget in stage2.widgets.items():
        if name not in ("keep_layers", "layers", "student", "student_model_id"):
            form.field(name, widget)  # the stage-2 settings above, shared
    gr.Markdown("One student per size, each trained with the stage-2 settings above and scored on the task with "
                "the teacher: *how small can the student be for this task?*")
    with gr.Row():
        form.field("sizes", gr.Dropdown(list(range(1, 65)), value=form.cls.model_fields["sizes"].default_factory(),
                                        multiselect=True, label="Sizes (teacher layers each student keeps)",
                                        elem_id="distill-sweep-sizes"))
        start = gr.Button("Train the students", elem_id="distill-sweep-start")
    message = gr.Markdown("")
    build_job_panel(engine, run_state, ("distill_sweep",), chart=False)
    chart = gr.Plot(label="Students", visible=False, elem_id="distill-sweep-chart")

    @ui_errors
    def do_start(*values):
        run_id = engine.start_run(form.config(values))
        return run_id, f"Started sweep run {run_id}."

    def render(run):
        fig = student_sweep_figure(run.summary.get("students", []), run.summary.get("teacher_params_m"),
                                   run.summary.get("task_score_teacher"))
        return gr.update(value=fig, visible=fig is not None)

    start.click(do_start, form.inputs, [run_state, message])
    show, timer = follow_run(engine, run_state, chart, render, gr.update(visible=False))
    # a chart drawn inside the closed accordion (the page's last sweep, on load) takes plotly's default 700 px:
    # emptied and drawn again on open (the same figure again would not be redrawn)
    box.expand(lambda: None, None, [chart], show_progress="hidden").then(show, [run_state], [chart, timer],
                                                                          show_progress="hidden")
    return form


def build_distill_tab(engine) -> dict:
    gr.Markdown("Two stages: the teacher answers a prompt set (stage 1), then a smaller student learns from those "
                "answers and from the teacher's token distributions (stage 2).")
    with gr.Accordion("Stage 1 · the teacher writes a dataset", open=True):
        teacher1, form1, stage1_finished = build_stage1(engine)
    with gr.Accordion("Datasets · browse, edit, download", open=False):
        picker, dataset_choices = build_datasets(engine)
    with gr.Accordion("Stage 2 · train the student", open=True):
        teacher2, student, task, form2 = build_stage2(engine, picker)
    with gr.Accordion("Size sweep · students of several sizes, scored on a task", open=False) as sweep_box:
        sweep = build_sweep(engine, form2, sweep_box)
    build_tune_panel(engine, "distill", form2, lambda *values: form2.config(values))

    def offer_dataset(run_id):
        """Stage 1 ended: its dataset is picked (and so filled into stage 2's training data), no refresh needed."""
        made = [d.path for d in engine.list_datasets() if d.run_id == run_id]
        return gr.update(choices=dataset_choices(), value=made[0]) if made else gr.skip()

    stage1_finished.change(offer_dataset, [stage1_finished], [picker], show_progress="hidden")

    def refresh(t1, t2, st, ds, current_task):
        full = [m for m in model_choices(engine) if engine.get_model(m).format == ModelFormat.HF]
        default = full[0] if full else None
        pick = lambda cur: cur if cur in full else default  # noqa: E731
        datasets = dataset_choices()
        return (gr.update(choices=full, value=pick(t1)), gr.update(choices=full, value=pick(t2)),
                gr.update(choices=full, value=st if st in full else None),
                gr.update(choices=datasets, value=ds if ds in dict(datasets).values() else None),
                task_choices(engine, current_task))

    return {"refresh": (refresh, [teacher1, teacher2, student, picker, task],
                        [teacher1, teacher2, student, picker, task]),
            "forms": [form1, form2, sweep]}
