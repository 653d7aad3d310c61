"""Glue between engine configs/errors and Gradio widgets."""
from __future__ import annotations

import functools
import inspect

import gradio as gr
from pydantic import BaseModel, ValidationError

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


def ui_errors(fn):
    """Turn engine errors and config validation errors into a gr.Error the user can read (never a traceback)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except (SlmopsError, ValidationError) as exc:
                raise gr.Error(user_message(exc)) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (SlmopsError, ValidationError) as exc:
            raise gr.Error(user_message(exc)) from None
    return wrapper


def field_info(config_cls: type[BaseModel], name: str) -> dict:
    """Label, help text and bounds of a config field, for a widget."""
    field = config_cls.model_fields[name]
    info = {"label": name.replace("_", " ").capitalize(), "info": field.description, "value": field.default}
    for meta in field.metadata:
        for attr, key in (("ge", "minimum"), ("gt", "minimum"), ("le", "maximum"), ("lt", "maximum")):
            if getattr(meta, attr, None) is not None:
                info[key] = getattr(meta, attr)
                if attr in ("gt", "lt"):
                    info[f"exclusive_{key}"] = True
    return info


def slider(config_cls: type[BaseModel], name: str, step: float, **overrides) -> gr.Slider:
    """A slider whose bounds come from the config field (exclusive bounds move in by one step)."""
    info = field_info(config_cls, name)
    if info.pop("exclusive_minimum", False):
        info["minimum"] += step
    if info.pop("exclusive_maximum", False):
        info["maximum"] -= step
    info.update(overrides)
    return gr.Slider(step=step, **info)


def number(config_cls: type[BaseModel], name: str, precision: int | None = None, **overrides) -> gr.Number:
    """A number box whose bounds, label and help come from the config field."""
    info = field_info(config_cls, name)
    info.pop("exclusive_minimum", None)
    info.pop("exclusive_maximum", None)
    info.update(overrides)
    return gr.Number(precision=precision, **info)


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


def model_choices(engine, ready_only: bool = True) -> list[str]:
    return [m.id for m in engine.list_models() if m.ready or not ready_only]
