"""The job forms and their configs cannot drift: every widget a tab maps to a config field (the mapping that
"Clone into its tab" fills) starts at that field's default, for every job kind with a tab."""
import gradio as gr
from pydantic_core import PydanticUndefined

from engine import JOB_KINDS

# Where a form starts elsewhere on purpose: the sweep reuses the single export's "Verify tokens" box (one widget,
# one value), and the fine-tune form starts on the bundled example task (train and eval files) so that a newcomer
# can press Start.
DELIBERATE = {("quantize_sweep", "verify_tokens"), ("finetune", "eval_path")}


def field_default(cls, name):
    field = cls.model_fields[name]
    if field.default is not PydanticUndefined:
        return field.default
    return field.default_factory() if field.default_factory else PydanticUndefined


def test_every_form_widget_starts_at_its_config_default(engine):
    from slmops_ui.tabs.benchmark import build_benchmark_tab
    from slmops_ui.tabs.distill import build_distill_tab
    from slmops_ui.tabs.evaluate import build_evaluate_tab
    from slmops_ui.tabs.finetune import build_finetune_tab
    from slmops_ui.tabs.quantize import build_quantize_tab

    with gr.Blocks():
        tabs = [build_finetune_tab(engine, None), build_distill_tab(engine), build_quantize_tab(engine),
                build_benchmark_tab(engine), build_evaluate_tab(engine)]
    checked, drift = set(), []
    for tab in tabs:
        for kinds, fields in tab["clone"]:
            for kind in kinds:
                cls = JOB_KINDS[kind].config
                for name, widget in fields.items():
                    default = field_default(cls, name)
                    if default is PydanticUndefined or (kind, name) in DELIBERATE:
                        continue  # a required field (the model, the data) has no default to show
                    value = widget.value
                    same = value == default or (value in ("", None) and default in ("", None, [], {}))
                    if not same:
                        drift.append(f"{kind}.{name}: widget {value!r}, config {default!r}")
                    checked.add(kind)
    assert drift == []
    assert checked == {"finetune", "generate_data", "distill", "quantize", "quantize_sweep", "benchmark", "evaluate"}
