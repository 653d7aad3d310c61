"""Glue between engine configs/errors and Gradio widgets."""
from __future__ import annotations

import functools
import inspect
import json
import types
import typing

import gradio as gr
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from engine import SlmopsError


def describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "input"
        given = err.get("input")
        shown = f" (you gave {given!r})" if isinstance(given, (int, float, str)) and len(repr(given)) < 60 else ""
        parts.append(f"{where}: {err.get('msg')}{shown}")
    return "Invalid settings - " + "; ".join(parts) + ". Change the value(s) and try again."


def user_message(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return describe_validation(exc)
    return str(exc)


def _guarded(fn, on_error):
    """`fn` (a function or a generator function) with engine errors, config validation errors and gr.Error turned
    into on_error(message)'s result (or what it raises)."""
    caught = (SlmopsError, ValidationError, gr.Error)

    def message(exc: BaseException) -> str:
        return exc.message if isinstance(exc, gr.Error) else user_message(exc)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except caught as exc:
                yield on_error(message(exc))
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except caught as exc:
            return on_error(message(exc))
    return wrapper


def _toast_and_keep(message: str):
    gr.Warning(message, title="Error")
    return gr.skip()


def _raise(message: str):
    raise gr.Error(message)


def ui_errors(fn):
    """For UI events: an error becomes a message the user can read (never a traceback), shown as a toast, and the
    handler's outputs keep what they showed (gr.skip()) — a raised gr.Error would mark every output as failed,
    which blanks a table or a whole conversation."""
    return _guarded(fn, _toast_and_keep)


def api_errors(fn):
    """For the public API (gr.api): an error is raised as gr.Error with a readable message, so a client (and an MCP
    tool call) gets an error, not an empty result."""
    return _guarded(fn, _raise)


def field_info(config_cls: type[BaseModel], name: str) -> dict:
    """Label, help text, default and bounds of a config field, for a widget."""
    field = config_cls.model_fields[name]
    default = field.get_default(call_default_factory=True)
    info = {"label": name.replace("_", " ").capitalize(), "info": field.description,
            "value": None if default is PydanticUndefined else default}
    for meta in field.metadata:
        for attr, key in (("ge", "minimum"), ("gt", "minimum"), ("le", "maximum"), ("lt", "maximum")):
            if getattr(meta, attr, None) is not None:
                info[key] = getattr(meta, attr)
                if attr in ("gt", "lt"):
                    info[f"exclusive_{key}"] = True
    return info


def _annotation(field) -> tuple[object, tuple, bool]:
    """(origin or the type itself, type arguments, whether None is allowed) of a field's annotation."""
    hint, optional = field.annotation, False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint, optional = args[0], len(args) < len(typing.get_args(hint))
    return (typing.get_origin(hint) or hint), typing.get_args(hint), optional


class ConfigForm:
    """A job form built from its config's fields: each field's type, bounds, choices, default and description give
    its widget, label and help (keyword overrides where a widget needs more), and one pair of conversions turns
    widget values into the config and a config back into widget values. So a form and its config cannot drift: the
    form is the config, shown. `kinds`: the job kinds whose runs "Clone into its tab" copies into this form."""

    def __init__(self, config_cls: type[BaseModel], kinds: set[str] | None = None,
                 required: dict[str, str] | None = None):
        self.cls = config_cls
        self.kinds = {config_cls.kind} if kinds is None else kinds
        self.required = required or {}  # field → the message shown when it is left empty
        self.widgets: dict[str, gr.components.Component] = {}

    # ---- building ------------------------------------------------------------------------------------------
    def field(self, name: str, widget: gr.components.Component | None = None, *, step: float | None = None,
              **overrides) -> gr.components.Component:
        """The widget of config field `name`: `widget` when given (a dropdown of models, a widget shared with
        another form), else one made from the field (a slider when `step` is given)."""
        if widget is None:
            widget = self._make(name, step, overrides)
        self.widgets[name] = widget
        return widget

    def _make(self, name: str, step: float | None, overrides: dict) -> gr.components.Component:
        field = self.cls.model_fields[name]
        origin, args, _ = _annotation(field)
        info = field_info(self.cls, name)
        exclusive_min, exclusive_max = info.pop("exclusive_minimum", False), info.pop("exclusive_maximum", False)
        if origin is typing.Literal:
            info.pop("minimum", None), info.pop("maximum", None)
            choices = overrides.pop("choices", list(args))
            return (gr.Radio if len(choices) <= 4 else gr.Dropdown)(choices=choices, **{**info, **overrides})
        if origin is bool:
            return gr.Checkbox(**{**info, **overrides})
        if origin in (int, float):
            if step is not None:
                info["minimum"] = info.get("minimum", 0) + (step if exclusive_min else 0)
                if "maximum" in info and exclusive_max:
                    info["maximum"] -= step
                return gr.Slider(step=step, **{**info, **overrides})
            return gr.Number(**{"precision": 0 if origin is int else None, **info, **overrides})
        if origin is list and args and typing.get_origin(args[0]) is typing.Literal or "choices" in overrides:
            choices = overrides.pop("choices", list(typing.get_args(args[0])) if args else [])
            return gr.CheckboxGroup(choices=choices, **{**info, "value": list(info["value"] or []), **overrides})
        info.pop("minimum", None), info.pop("maximum", None)
        info["value"] = self.to_widget(name, info["value"])
        lines = 2 if origin is list else 1
        return gr.Textbox(lines=overrides.pop("lines", lines), **{**info, **overrides})

    def remaining(self, skip: tuple[str, ...] = ("resume_from_run",), per_row: int = 4,
                  label: str = "More settings") -> None:
        """Widgets for every field not placed yet, in a closed accordion (so a new config field shows up in its
        form without touching the tab). `resume_from_run` is set by the job panel's Continue button."""
        names = [n for n in self.cls.model_fields if n not in self.widgets and n not in skip]
        if not names:
            return
        with gr.Accordion(label, open=False):
            for start in range(0, len(names), per_row):
                with gr.Row():
                    for name in names[start:start + per_row]:
                        self.field(name)

    @property
    def inputs(self) -> list:
        return list(self.widgets.values())

    # ---- converting ----------------------------------------------------------------------------------------
    def to_widget(self, name: str, value):
        """A config value as its widget shows it: None → empty text, a mapping → 'k=v, …', a list of mappings
        → one JSON object per line, a list of text in a text box → one item per line."""
        origin, args, _ = _annotation(self.cls.model_fields[name])
        widget = self.widgets.get(name)
        if isinstance(widget, gr.Dataframe):  # a list of records, one row each (columns: the record's fields)
            columns = list(args[0].model_fields)
            return [[_cell(dict(item).get(c)) for c in columns] for item in value or []]
        if value is None:
            return None if origin in (int, float) or isinstance(widget, gr.Dropdown) else ""
        if origin is dict:
            return ", ".join(f"{k}={v}" for k, v in value.items())
        if origin is list:
            if isinstance(widget, (gr.CheckboxGroup, gr.Dropdown)) or (
                    args and typing.get_origin(args[0]) is typing.Literal):
                return list(value)
            return "\n".join(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in value)
        return value

    def to_value(self, name: str, shown):
        """A widget's value as its config field takes it (the inverse of `to_widget`)."""
        origin, args, optional = _annotation(self.cls.model_fields[name])
        if isinstance(self.widgets.get(name), gr.Dataframe):  # rows → records; empty cells take their defaults
            if isinstance(shown, dict):
                shown = shown.get("data", [])
            rows = shown.values.tolist() if hasattr(shown, "values") else shown or []
            columns = list(args[0].model_fields)
            return [{c: str(v).strip() for c, v in zip(columns, row) if str(v or "").strip()}
                    for row in rows if any(str(v or "").strip() for v in row)]
        if isinstance(shown, str):
            shown = shown.strip()
        if shown in ("", None):
            if name in self.required:
                raise gr.Error(self.required[name])
            if optional:
                return None
            if origin in (dict, list) or origin is str:
                return {} if origin is dict else ([] if origin is list else "")
            return shown
        if origin is dict:
            return parse_mapping(shown)
        if origin is list and isinstance(shown, str):
            items = [line.strip() for line in shown.splitlines() if line.strip()]
            if args and args[0] is not str:
                return [_json_line(name, n, line) for n, line in enumerate(items, 1)]
            return items
        if origin is int and isinstance(shown, float) and shown.is_integer():
            return int(shown)
        return shown

    def values(self, widget_values) -> dict:
        """Widget values (in the order of `inputs`) → config fields."""
        return {name: self.to_value(name, v) for name, v in zip(self.widgets, widget_values)}

    def config(self, widget_values, **changes) -> BaseModel:
        """The config from the widgets' values (in the order of `inputs`), with `changes` on top."""
        return self.cls(**{**self.values(widget_values), **changes})

    def shown(self, config: BaseModel | dict) -> list:
        """What each widget shows for `config` (in the order of `inputs`)."""
        data = config if isinstance(config, dict) else config.model_dump()
        return [self.to_widget(name, data.get(name)) for name in self.widgets]


def _cell(value) -> str:
    return "" if value is None else str(value)


def _json_line(name: str, n: int, line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        raise gr.Error(f"{name.replace('_', ' ').capitalize()}, line {n}: not a JSON object.") from None


def slider(config_cls: type[BaseModel], name: str, step: float, **overrides) -> gr.Slider:
    """A slider whose bounds come from the config field (exclusive bounds move in by one step)."""
    return ConfigForm(config_cls, kinds=set()).field(name, step=step, **overrides)


def number(config_cls: type[BaseModel], name: str, precision: int | None = None, **overrides) -> gr.Number:
    """A number box whose bounds, label and help come from the config field."""
    return ConfigForm(config_cls, kinds=set()).field(name, precision=precision, **overrides)


def parse_mapping(text: str) -> dict[str, str]:
    """'prompt=question, completion=answer' -> {'prompt': 'question', 'completion': 'answer'}."""
    mapping = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise gr.Error(f"Column mapping '{part.strip()}' should look like field=column, e.g. prompt=question.")
        mapping[key.strip()] = value.strip()
    return mapping


def task_choices(engine, current: str | None) -> dict:
    """An update for an optional task dropdown: "" (no task) and every stored task, keeping the current pick."""
    tasks = [""] + [t.name for t in engine.list_tasks()]
    return gr.update(choices=tasks, value=current if current in tasks else "")


def model_choices(engine, ready_only: bool = True) -> list[str]:
    return [m.id for m in engine.list_models() if m.ready or not ready_only]


def chat_choices(engine) -> list[str]:
    """What Chat can talk to: every ready model, and each adapter of a ready export made with adapters
    (`EXPORT:ADAPTER`)."""
    return [ref for m in engine.list_models() if m.ready
            for ref in (m.id, *(f"{m.id}:{name}" for name in engine.adapters_of(m)))]


def settings_yaml(config: BaseModel) -> str:
    """A job config as the YAML file the CLI runs (`python -m engine run --config FILE`): its kind and the
    settings that differ from the defaults."""
    import yaml

    data = {"kind": config.kind, **config.model_dump(mode="json", exclude_defaults=True)}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def settings_from_yaml(cls: type[BaseModel], text: str) -> BaseModel:
    """The config of kind `cls` in a settings file (YAML or JSON), checked like any other."""
    import yaml

    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise gr.Error("A settings file holds a mapping of settings (YAML or JSON object).")
    if data.pop("kind", cls.kind) != cls.kind:
        raise gr.Error(f"This file is for another kind of job; this form takes kind: {cls.kind}.")
    return cls.model_validate(data)  # a bad value is refused with the field's own message


def settings_file_row(form: ConfigForm, folder) -> None:
    """Under a job form: save its settings as the YAML file the CLI runs, or load such a file into the form — one
    typed config either way."""
    import time
    from pathlib import Path

    with gr.Row():
        save = gr.Button("Save settings as YAML", size="sm")
        load = gr.UploadButton("Load settings (YAML/JSON)", file_types=[".yaml", ".yml", ".json"], size="sm")
    saved = gr.File(label="Settings file", visible=False, interactive=False)
    note = gr.Markdown("")

    @ui_errors
    def do_save(*values):
        path = Path(folder) / f"{form.cls.kind}-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(settings_yaml(form.config(values)), encoding="utf-8")
        return (gr.update(value=str(path), visible=True),
                f"Headless, the same job: `python -m engine run --config {path.name}`")

    @ui_errors
    def do_load(upload):
        config = settings_from_yaml(form.cls, Path(upload).read_text(encoding="utf-8"))
        return (*form.shown(config), f"Loaded {Path(upload).name}.")

    save.click(do_save, form.inputs, [saved, note])
    load.upload(do_load, [load], [*form.inputs, note])
