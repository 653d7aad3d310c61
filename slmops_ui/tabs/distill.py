"""Distill tab: stage 1 (the teacher writes a dataset), browsing/editing the datasets, stage 2 (a student learns
from the teacher with the KD loss). Each stage follows its run with the shared job panel."""
from __future__ import annotations

import json

import gradio as gr

from engine import DistillConfig, GenerateDataConfig, ModelFormat

from ..forms import model_choices, number, slider, ui_errors
from ..job_panel import build_job_panel


def _few_shot(text: str) -> list[dict]:
    shots = []
    for n, line in enumerate((text or "").splitlines(), 1):
        if line.strip():
            try:
                shots.append(json.loads(line))
            except json.JSONDecodeError:
                example = '{"prompt": ..., "response": ...}'
                raise gr.Error(f"Few-shot line {n} is not JSON: write {example}.") from None
    return shots


def build_stage1(engine) -> tuple:
    run_state = gr.State(None)
    teacher = gr.Dropdown(label="Teacher", choices=[], info="Any registered full model; the bundled one by default.")
    with gr.Row():
        prompts = gr.Textbox(label="Prompts file", value=GenerateDataConfig.model_fields["prompts_path"].default,
                             info=GenerateDataConfig.model_fields["prompts_path"].description, scale=3)
        upload = gr.File(label="…or upload prompts", file_types=[".jsonl", ".json", ".csv", ".parquet"], scale=1)
    with gr.Row():
        system = gr.Textbox(label="System prompt (optional)", lines=2)
        shots = gr.Textbox(label="Few-shot examples (optional)", lines=2,
                           placeholder='{"prompt": "2+2?", "response": "4"}  — one JSON object per line')
    with gr.Row():
        temperature = slider(GenerateDataConfig, "temperature", 0.05)
        top_p = slider(GenerateDataConfig, "top_p", 0.05)
        max_new = slider(GenerateDataConfig, "max_new_tokens", 1, maximum=512)
        n_per = slider(GenerateDataConfig, "n_per_prompt", 1)
        batch = slider(GenerateDataConfig, "batch_size", 1, maximum=64)
        max_prompts = number(GenerateDataConfig, "max_prompts", precision=0)
    with gr.Accordion("Filters", open=False):
        with gr.Row():
            drop_cut = gr.Checkbox(label="Drop answers cut off at max tokens", value=True)
            dedupe = gr.Checkbox(label="Drop duplicates", value=True)
            require_json = gr.Checkbox(label="Keep only JSON answers", value=False)
            min_chars = number(GenerateDataConfig, "min_chars", precision=0)
            max_chars = number(GenerateDataConfig, "max_chars", precision=0)
            regex = gr.Textbox(label="Keep only answers matching (regex)")
    name = gr.Textbox(label="Dataset name (optional)")
    start = gr.Button("Generate dataset", variant="primary")
    message = gr.Markdown("")
    build_job_panel(engine, run_state, ("generate_data",), chart=False)

    @ui_errors
    def do_start(teacher_, prompts_, upload_, system_, shots_, temp, top_p_, max_new_, n_per_, batch_, max_p, cut,
                 dedupe_, json_, min_c, max_c, regex_, name_):
        if not teacher_:
            raise gr.Error("Pick a teacher model.")
        config = GenerateDataConfig(
            teacher_model_id=teacher_, prompts_path=upload_ or prompts_, system_prompt=system_ or "",
            few_shot=_few_shot(shots_), temperature=temp, top_p=top_p_, max_new_tokens=max_new_, n_per_prompt=n_per_,
            batch_size=batch_, max_prompts=max_p, drop_truncated=cut, dedupe=dedupe_, require_json=json_,
            min_chars=min_c, max_chars=max_c, regex=regex_ or "", output_name=(name_ or "").strip() or None)
        run_id = engine.start_run(config)
        return run_id, f"Started run {run_id}."

    start.click(do_start, [teacher, prompts, upload, system, shots, temperature, top_p, max_new, n_per, batch,
                           max_prompts, drop_cut, dedupe, require_json, min_chars, max_chars, regex, name],
                [run_state, message])
    fields = {"teacher_model_id": teacher, "prompts_path": prompts, "system_prompt": system, "few_shot": shots,
              "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new, "n_per_prompt": n_per,
              "batch_size": batch, "max_prompts": max_prompts, "drop_truncated": drop_cut, "dedupe": dedupe,
              "require_json": require_json, "min_chars": min_chars, "max_chars": max_chars, "regex": regex,
              "output_name": name}
    return teacher, fields


def build_datasets(engine):
    with gr.Row():
        picked = gr.Dropdown(label="Dataset", choices=[], scale=3, info="Made by stage-1 runs, newest first.")
        refresh = gr.Button("↻", scale=0, min_width=60)
    rows = gr.Dataframe(headers=["prompt", "response"], interactive=True, wrap=True, max_height=360,
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
    with gr.Row():
        teacher = gr.Dropdown(label="Teacher", choices=[])
        data = gr.Textbox(label="Training data (the teacher's dataset)", scale=2,
                          info="Filled from the dataset picked above; any chat dataset works.")
        eval_ratio = slider(DistillConfig, "eval_ratio", 0.05)
    with gr.Row():
        mode = gr.Radio(["derived", "existing"], value="derived", label="Student",
                        info=DistillConfig.model_fields["student"].description)
        keep = slider(DistillConfig, "keep_layers", 1, maximum=64)
        layers = gr.Textbox(label="Exact layers (optional)", placeholder="e.g. 0,3,6,9,12,15,18,21,24,29")
        student = gr.Dropdown(label="Existing student", choices=[], info="Must share the teacher's tokenizer.")
    preview = gr.Markdown("")
    with gr.Row():
        alpha = slider(DistillConfig, "alpha", 0.05)
        temp = slider(DistillConfig, "temperature", 0.5)
        lr = number(DistillConfig, "learning_rate")
        epochs = number(DistillConfig, "epochs")
        steps = number(DistillConfig, "max_steps", precision=0)
        batch = number(DistillConfig, "batch_size", precision=0)
        max_len = number(DistillConfig, "max_length", precision=0)
    with gr.Row():
        eval_steps = number(DistillConfig, "eval_steps", precision=0)
        save_steps = number(DistillConfig, "save_steps", precision=0)
        name = gr.Textbox(label="Student name (optional)")
    start = gr.Button("Train student", variant="primary")
    message = gr.Markdown("")
    build_job_panel(engine, run_state, ("distill",), continuable=True)

    inputs = [teacher, data, eval_ratio, mode, keep, layers, student, alpha, temp, lr, epochs, steps, batch, max_len,
              eval_steps, save_steps, name]

    def to_config(teacher_, data_, ratio, mode_, keep_, layers_, student_, alpha_, temp_, lr_, epochs_, steps_,
                  batch_, max_len_, ev, sv, name_) -> DistillConfig:
        if not teacher_:
            raise gr.Error("Pick a teacher model.")
        if not (data_ or "").strip():
            raise gr.Error("Give the training data: pick a dataset above or type a path.")
        return DistillConfig(teacher_model_id=teacher_, train_path=data_, eval_ratio=ratio, student=mode_,
                             keep_layers=keep_, layers=layers_ or "", student_model_id=student_ or None,
                             alpha=alpha_, temperature=temp_, learning_rate=lr_, epochs=epochs_, max_steps=steps_,
                             batch_size=batch_, max_length=max_len_, eval_steps=ev, save_steps=sv,
                             output_name=(name_ or "").strip() or None)

    def show_preview(*values):
        values = list(values)
        values[1] = values[1] or "preview-needs-no-data.jsonl"  # the preview reads only the teacher's headers
        try:
            p = engine.student_preview(to_config(*values))
        except Exception as exc:  # noqa: BLE001 - a preview only explains; starting the run raises properly
            return f"Student preview unavailable: {exc}"
        layers_text = f"layers {p['layers']}" if p["layers"] else "registered model"
        return (f"Student: **{p['params'] / 1e6:.1f} M parameters** ({p['ratio']:.0%} of the teacher's "
                f"{p['teacher_params'] / 1e6:.1f} M), about **{p['bytes'] / 1e6:.0f} MB** in fp32 · {layers_text}")

    @ui_errors
    def do_start(*values):
        run_id = engine.start_run(to_config(*values))
        return run_id, f"Started run {run_id}."

    for widget in (teacher, mode, keep, layers, student):
        widget.change(show_preview, inputs, [preview])
    start.click(do_start, inputs, [run_state, message])
    dataset_picker.change(lambda path: path or gr.skip(), [dataset_picker], [data])
    fields = {"teacher_model_id": teacher, "train_path": data, "eval_ratio": eval_ratio, "student": mode,
              "keep_layers": keep, "layers": layers, "student_model_id": student, "alpha": alpha,
              "temperature": temp, "learning_rate": lr, "epochs": epochs, "max_steps": steps, "batch_size": batch,
              "max_length": max_len, "eval_steps": eval_steps, "save_steps": save_steps, "output_name": name}
    return teacher, student, fields


def build_distill_tab(engine) -> dict:
    gr.Markdown("Two stages: the teacher answers a prompt set (stage 1), then a smaller student learns from those "
                "answers and from the teacher's token distributions (stage 2).")
    with gr.Accordion("Stage 1 · the teacher writes a dataset", open=True):
        teacher1, fields1 = build_stage1(engine)
    with gr.Accordion("Datasets · browse, edit, download", open=False):
        picker, dataset_choices = build_datasets(engine)
    with gr.Accordion("Stage 2 · train the student", open=True):
        teacher2, student, fields2 = build_stage2(engine, picker)

    def refresh(t1, t2, st, ds):
        full = [m for m in model_choices(engine) if engine.get_model(m).format == ModelFormat.HF]
        default = full[0] if full else None
        pick = lambda cur: cur if cur in full else default  # noqa: E731
        datasets = dataset_choices()
        return (gr.update(choices=full, value=pick(t1)), gr.update(choices=full, value=pick(t2)),
                gr.update(choices=full, value=st if st in full else None),
                gr.update(choices=datasets, value=ds if ds in dict(datasets).values() else None))

    return {"refresh": (refresh, [teacher1, teacher2, student, picker], [teacher1, teacher2, student, picker]),
            "clone": [({"generate_data"}, fields1), ({"distill"}, fields2)]}
