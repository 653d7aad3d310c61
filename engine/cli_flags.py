"""The CLI's job settings: a config file (YAML/JSON) and a flag per config field, the flags on top."""
from __future__ import annotations

import argparse
import json

from .errors import SlmopsError
from .jobs.registry import JOB_KINDS


def load_config(path: str, kind: str | None = None):
    import yaml

    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise SlmopsError(f"{path}: expected a mapping of settings (YAML or JSON object).")
    kind = data.pop("kind", None) or kind
    if kind not in JOB_KINDS:
        raise SlmopsError(f"{path}: needs a 'kind:' field, one of {', '.join(JOB_KINDS)}.")
    return JOB_KINDS[kind].config.model_validate(data)


def config_flags(parser: argparse.ArgumentParser, cls, aliases: dict[str, tuple[str, ...]] | None = None) -> None:
    """A flag per field of the job config `cls`, with its type, choices and help taken from the field (`--block-size`
    for block_size; `aliases` adds short names). A flag not given leaves the field to the config file or default."""
    import types
    import typing

    for name, field in cls.model_fields.items():
        kind, args = typing.get_origin(field.annotation), typing.get_args(field.annotation)
        if kind in (typing.Union, types.UnionType):  # `X | None`: the flag takes an X
            kind, args = None, ()
            annotation = next(a for a in typing.get_args(field.annotation) if a is not type(None))
        else:
            annotation = field.annotation
        options = {"dest": name, "default": argparse.SUPPRESS, "help": (field.description or "").replace("%", "%%")}
        if kind is typing.Literal:
            options.update(choices=list(args), type=type(args[0]))
        elif annotation is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind is list:
            options.update(action="append", type=args[0] if args else str)
        elif kind is dict:
            options["type"] = json.loads
        else:
            options["type"] = annotation
        parser.add_argument(*(aliases or {}).get(name, ()), f"--{name.replace('_', '-')}", **options)


def config_from_args(args, kind: str):
    """The job config from `--config FILE` (if given) with the flags on top (a file of another kind, such as
    distill's stage 1, is taken as it is)."""
    data = {}
    if getattr(args, "config", None):
        loaded = load_config(args.config, kind)
        if loaded.kind != kind:
            return loaded
        data = loaded.model_dump(exclude_unset=True)
    cls = JOB_KINDS[kind].config
    data.update({k: v for k, v in vars(args).items() if k in cls.model_fields})
    return cls.model_validate(data)
