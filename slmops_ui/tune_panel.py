"""The *Tune* panel of the Fine-tune and Distill tabs: an Optuna study over the tab's form (the form is the base
config), its trials as a table, Optuna's four plots, and the best trial's settings cloned back into the form."""
from __future__ import annotations

import json

import gradio as gr

from engine import DEFAULT_TUNE_SPACES, TUNE_OBJECTIVES, TuneConfig

from .forms import ConfigForm, ui_errors
from .job_panel import build_job_panel

SPACE_HEADERS = ["field", "low", "high", "log", "choices"]
TRIAL_HEADERS = ["trial", "state", "value", "steps", "run", "params", "note"]


def space_rows(space: dict) -> list[list]:
    return [[name, r.get("low"), r.get("high"), bool(r.get("log")),
             ", ".join(json.dumps(c) for c in r["choices"]) if r.get("choices") else ""] for name, r in space.items()]


def _choice(text: str):
    """A choice as typed: JSON where it parses (numbers, true/false), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def space_from_rows(rows) -> dict:
    """The table's rows → the config's space (an empty field name skips the row)."""
    rows = rows.values.tolist() if hasattr(rows, "values") else rows
    space = {}
    for name, low, high, log, choices in (list(r) + [None] * (5 - len(r)) for r in rows or []):
        name = str(name or "").strip()
        if not name:
            continue
        if str(choices or "").strip():
            # choices may contain commas inside quotes ("q_proj,v_proj"): split on commas outside them
            space[name] = {"choices": [_choice(c.strip()) for c in _split(str(choices))]}
        else:
            space[name] = {"low": _number(low, name, "low"), "high": _number(high, name, "high"),
                           "log": str(log).lower() in ("true", "1", "yes")}
    return space


def _number(value, name: str, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"'{name}': give {what} as a number (or fill in choices instead)") from None


def _split(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [p for p in parts + [current] if p.strip()]


def styled(fig, title: str):
    fig.update_layout(title=title, template="plotly_white", height=360, margin=dict(l=60, r=20, t=60, b=50))
    return fig


def study_figures(study) -> list:
    """Optuna's optimisation history, parameter importances, parallel coordinates and slice plot (None where the
    study has too few finished trials for one)."""
    import optuna.visualization as vis

    finished = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    figures = []
    for make, title, needs in ((vis.plot_optimization_history, "Optimisation history", 1),
                               (vis.plot_param_importances, "Parameter importances", 2),
                               (vis.plot_parallel_coordinate, "Parallel coordinates", 1),
                               (vis.plot_slice, "Objective against each parameter", 1)):
        try:
            figures.append(styled(make(study), title) if len(finished) >= needs else None)
        except (ValueError, RuntimeError):  # e.g. importances of a parameter that never varied
            figures.append(None)
    return figures


def build_tune_panel(engine, kind: str, form: ConfigForm, to_config) -> None:
    """Under a Fine-tune or Distill form: `to_config(*form inputs)` gives the base config."""
    objectives = list(TUNE_OBJECTIVES[kind])
    with gr.Accordion("Tune · search hyperparameters with Optuna (each trial is a run of this form's settings)",
                      open=False, elem_id=f"tune-{kind}"):
        directions = ", ".join(f"{n}: {d}" for n, (_, d) in TUNE_OBJECTIVES[kind].items())
        gr.Markdown(f"Each trial runs this form with the fields below sampled. The study optimises the objective "
                    f"({directions}); a trial whose eval loss trails the others' at the same step is **pruned** "
                    "(stopped early). Choices: comma-separated, text in quotes.")
        space = gr.Dataframe(value=space_rows(DEFAULT_TUNE_SPACES[kind]), headers=SPACE_HEADERS,
                             column_count=(5, "fixed"), datatype=["str", "number", "number", "bool", "str"],
                             interactive=True, label="Search space (a row per field; add rows for more)",
                             row_count=(1, "dynamic"))
        tune_form = ConfigForm(TuneConfig)
        with gr.Row():
            tune_form.field("objective", gr.Dropdown(choices=objectives, value=objectives[0], label="Objective",
                                                     elem_id=f"tune-{kind}-objective"))
            tune_form.field("sampler")
            tune_form.field("pruner")
            tune_form.field("pruner_startup_trials")
        with gr.Row():
            for name in ("trials", "minutes", "parallel", "seed"):
                tune_form.field(name)
        with gr.Row():
            tune_form.field("study_name", label="Study name (an existing one continues)")
            tune_form.field("storage", label="Storage URL (empty: the workspace's)")
        start = gr.Button("Start study", variant="primary", elem_id=f"tune-{kind}-start")
        run_state = gr.State(None)
        build_job_panel(engine, run_state, ("tune",), chart=False,
                        belongs=lambda run: run.config.get("base_kind") == kind)
        trials = gr.Dataframe(headers=TRIAL_HEADERS, label="The study's trials", interactive=False,
                              elem_id=f"tune-{kind}-trials")
        best = gr.Markdown("")
        clone = gr.Button("Clone the best trial into the form", interactive=False)
        with gr.Row():
            history, importances = gr.Plot(visible=False), gr.Plot(visible=False)
        with gr.Row():
            parallel, slices = gr.Plot(visible=False), gr.Plot(visible=False)
        plots = [history, importances, parallel, slices]
        timer = gr.Timer(5.0, active=False)
        seen = gr.State(None)  # the trials' states last drawn: the plots are drawn again only when they change

    @ui_errors
    def do_start(rows, *values):
        tune_values, form_values = values[:len(tune_form.inputs)], values[len(tune_form.inputs):]
        base = to_config(*form_values).model_dump(mode="json", exclude={"output_name", "resume_from_run"})
        config = tune_form.config(tune_values, base_kind=kind, base=base, space=space_from_rows(rows))
        run_id = engine.start_run(config)
        gr.Info(f"Study started: run {run_id}. Its trials appear in the queue as runs of their own.")
        return run_id

    start.click(do_start, [space, *tune_form.inputs, *form.inputs], [run_state])

    def results(run_id, last):
        """The study's table and plots, drawn again when a trial starts or ends; the timer ticks while the study
        runs."""
        unchanged = (gr.skip(), gr.skip(), gr.skip(), last, *(gr.skip() for _ in plots))
        if not run_id:
            return gr.Timer(active=False), *unchanged
        run = engine.get_run(int(run_id))
        ticking = gr.Timer(active=not run.status.final)
        if "study" not in run.summary:
            return ticking, *unchanged
        rows = engine.study_trials(int(run_id))
        key = json.dumps([(r["trial"], r["state"]) for r in rows])
        if key == last:  # a tick without news opens the storage once, for the rows
            return ticking, *unchanged
        study = engine.study(int(run_id))
        table = [[r[h] for h in TRIAL_HEADERS] for r in rows]
        complete = [r for r in rows if r["state"] == "complete"]
        text, can_clone = "", False
        if complete:
            top = study.best_trial
            text = (f"**Best: trial {top.number}** (run {top.user_attrs.get('run_id')}), {run.summary['objective']} "
                    f"= **{top.value:.4f}** with `{json.dumps(top.params)}`; its model: "
                    f"`{study.study_name}-t{top.number}`.")
            can_clone = True
        figures = study_figures(study)
        return (ticking, table, text, gr.update(interactive=can_clone), key,
                *(gr.update(value=f, visible=f is not None) for f in figures))

    outputs = [timer, trials, best, clone, seen, *plots]
    timer.tick(results, [run_state, seen], outputs, show_progress="hidden")
    run_state.change(results, [run_state, seen], outputs, show_progress="hidden")

    @ui_errors
    def do_clone(run_id):
        config = engine.best_trial_config(int(run_id))
        gr.Info("The form now holds the best trial's settings.")
        return form.shown(config)

    clone.click(do_clone, [run_state], form.inputs)
