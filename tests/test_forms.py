"""The job forms and their configs cannot drift. Every job tab builds its forms from its config's fields
(slmops_ui.forms.ConfigForm); for each form: every widget starts at its field's default, and a config goes form →
config → form unchanged, for the defaults and for a config with every field changed."""
import typing

import gradio as gr
import pytest
from pydantic_core import PydanticUndefined

from engine import JOB_KINDS

# Where a form starts elsewhere on purpose: the sweep reuses the single export's "Verify tokens" box (one widget,
# one value), and the fine-tune form starts on the bundled example task (train and eval files) so that a newcomer
# can press Start.
DELIBERATE = {("quantize_sweep", "verify_tokens"), ("finetune", "train_path"), ("finetune", "eval_path")}
FORM_KINDS = {"finetune", "generate_data", "distill", "distill_sweep", "quantize", "quantize_sweep", "gguf",
              "add_adapters", "benchmark", "evaluate", "adapter_set"}
# Fields a form leaves out on purpose: the Continue button sets resume_from_run; a size sweep derives every student
# itself (one per size), so the single student's fields do not apply.
LEFT_OUT = {"resume_from_run"}
SWEEP_LEFT_OUT = {"keep_layers", "layers", "student", "student_model_id"}
SET_LEFT_OUT = {"train_path", "eval_path", "output_name"}  # an adapter set: each adapter has its own


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    from engine import Engine, Settings
    from slmops_ui.tabs.benchmark import build_benchmark_tab
    from slmops_ui.tabs.distill import build_distill_tab
    from slmops_ui.tabs.evaluate import build_evaluate_tab
    from slmops_ui.tabs.finetune import build_finetune_tab
    from slmops_ui.tabs.quantize import build_quantize_tab

    engine = Engine(Settings(home=tmp_path_factory.mktemp("forms") / "ws", offline=True))
    with gr.Blocks():
        tabs = [build_finetune_tab(engine, None), build_distill_tab(engine), build_quantize_tab(engine),
                build_benchmark_tab(engine), build_evaluate_tab(engine)]
    yield [form for tab in tabs for form in tab["forms"]]
    engine.close()


def required_values(cls) -> dict:
    """A value for every required field (a model, a data file)."""
    values = {}
    for name, field in cls.model_fields.items():
        if name == "adapters" and cls.kind == "adapter_set":
            values[name] = [{"name": "a1", "train_path": "/tmp/a.jsonl", "task": "t1"},
                            {"name": "a2", "train_path": "/tmp/b.jsonl", "eval_path": "/tmp/b-eval.jsonl"}]
        elif field.is_required():
            values[name] = ["m1", "m2"] if typing.get_origin(field.annotation) is list else "/tmp/some/file.jsonl"
    return values


def changed(cls, name, value):
    """A different valid value for a field (to prove the field really travels through its widget)."""
    field = cls.model_fields[name]
    hint = field.annotation
    if typing.get_origin(hint) is typing.Literal:
        options = [a for a in typing.get_args(hint) if a != value]
        return options[0] if options else value
    if isinstance(value, bool):
        return not value
    bounds = {k: getattr(m, k) for m in field.metadata for k in ("ge", "gt", "le", "lt")
              if getattr(m, k, None) is not None}
    if isinstance(value, int) and not isinstance(value, bool):
        candidate = value + 1
        return candidate if candidate <= bounds.get("le", candidate) else value - 1
    if isinstance(value, float):
        candidate = round(value * 0.5 + bounds.get("ge", bounds.get("gt", 0)) * 0.5 + 0.01, 4)
        return candidate
    if isinstance(value, dict):
        return {"prompt": "question", "completion": "answer"}
    if value is None or isinstance(value, str):
        return {"layers": "0,3,5", "few_shot": None}.get(name, "/tmp/other.jsonl" if "path" in name else "some-name")
    return value


def test_every_job_kind_with_a_tab_has_a_form(forms):
    assert {kind for form in forms for kind in form.kinds} == FORM_KINDS
    for form in forms:
        assert all(JOB_KINDS[kind].config is form.cls for kind in form.kinds)


def test_every_config_field_is_in_its_form(forms):
    for form in forms:
        allowed = LEFT_OUT | {"distill_sweep": SWEEP_LEFT_OUT, "adapter_set": SET_LEFT_OUT}.get(form.cls.kind, set())
        assert set(form.cls.model_fields) - set(form.widgets) <= allowed, form.cls.kind


def test_every_form_widget_starts_at_its_config_default(forms):
    drift = []
    for form in forms:
        for name, widget in form.widgets.items():
            default = form.cls.model_fields[name].get_default(call_default_factory=True)
            if default is PydanticUndefined or (form.cls.kind, name) in DELIBERATE:
                continue  # a required field (the model, the data) has no default to show
            if form.to_value(name, widget.value) != default:
                drift.append(f"{form.cls.kind}.{name}: widget {widget.value!r}, config {default!r}")
    assert drift == []


def test_every_field_round_trips_form_config_form(forms):
    for form in forms:
        cls = form.cls
        config = cls(**required_values(cls))
        assert form.config(form.shown(config)) == config, cls.kind  # the defaults

        data = config.model_dump()
        for name in form.widgets:
            if name == "candidates":
                data[name] = ["int4", "int8"]
            elif name == "sizes":
                data[name] = [4, 8]
            elif name == "few_shot":
                data[name] = [{"prompt": "2+2?", "response": "4"}]
            elif name == "block_size":
                data[name] = 64
            elif name == "accuracy_level":
                data[name] = 1
            elif not cls.model_fields[name].is_required():
                data[name] = changed(cls, name, data[name])
        other = cls(**data)
        assert form.config(form.shown(other)) == other, cls.kind  # every field changed
        assert form.shown(form.config(form.shown(other))) == form.shown(other)


def test_an_empty_required_field_says_what_to_fill(forms):
    form = next(f for f in forms if f.cls.kind == "finetune")
    shown = form.shown(form.cls(**required_values(form.cls)))
    shown[list(form.widgets).index("model_id")] = None
    with pytest.raises(gr.Error, match="Pick a base model"):
        form.config(shown)


def test_the_whole_app_builds(tmp_path):
    """Every tab, forms and plain widgets alike (the chat tab's sliders come from GenerationParams, no job)."""
    from engine import Engine, Settings
    from slmops_ui.layout import build_app

    engine = Engine(Settings(home=tmp_path / "ws", offline=True))
    try:
        assert build_app(engine) is not None
    finally:
        engine.close()


def test_ui_errors_keep_the_screen_and_api_errors_raise():
    """A UI event's error is a toast and skips its outputs (a table or a conversation stays); the public API raises
    it, so a client gets an error."""
    from engine import InvalidInput
    from slmops_ui.forms import api_errors, ui_errors

    def bad():
        raise InvalidInput("that path does not exist")

    def bad_stream():
        yield "partial"
        raise gr.Error("Type a message first.")

    assert ui_errors(bad)() == gr.skip()
    assert list(ui_errors(bad_stream)()) == ["partial", gr.skip()]
    with pytest.raises(gr.Error, match="that path does not exist"):
        api_errors(bad)()


def test_a_form_saves_its_settings_as_the_yaml_the_cli_runs(tmp_path):
    from engine import FineTuneConfig
    from engine.cli_flags import load_config
    from slmops_ui.forms import settings_from_yaml, settings_yaml

    config = FineTuneConfig(model_id="smol", train_path="/data/train.jsonl", lora_r=16, epochs=3.0)
    path = tmp_path / "ft.yaml"
    path.write_text(settings_yaml(config))
    assert load_config(str(path)) == config  # what `python -m engine run --config ft.yaml` starts
    assert settings_from_yaml(FineTuneConfig, path.read_text()) == config  # and what the form loads back
    with pytest.raises(gr.Error, match="another kind"):
        settings_from_yaml(FineTuneConfig, "kind: quantize\nmodel_id: smol\n")
