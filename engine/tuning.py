"""Hyperparameter studies on Optuna: the search space checked against the base job's own field bounds, the study's
storage (an RDB: SQLite in the workspace, PostgreSQL/MySQL between machines), sampler and pruner, and the trials as
rows. The coordinating recipe is engine/jobs/tune.py."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from pydantic import ValidationError

from .configs import JobConfig
from .configs.tune import BASE_CONFIGS, SearchRange, TuneConfig
from .errors import InvalidInput
# fields a trial sets itself or that name data and models: not hyperparameters
NOT_TUNABLE = {"model_id", "teacher_model_id", "student_model_id", "train_path", "eval_path", "output_name",
               "resume_from_run", "columns", "task", "score_before", "threads"}
HEARTBEAT_S, GRACE_S = 10, 40  # a trial whose study process stops beating for GRACE_S is marked failed


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"


def base_config(config: TuneConfig, **changes) -> JobConfig:
    cls = BASE_CONFIGS[config.base_kind]
    try:
        return cls.model_validate({**config.base, **changes})
    except ValidationError as exc:
        raise InvalidInput(f"the base {config.base_kind} config is not valid: {_first_error(exc)}") from None


def check_space(config: TuneConfig) -> dict[str, SearchRange]:
    """Every field of the space exists in the base job's config, is a hyperparameter, and every value the study can
    pick (each bound, each choice) passes that field's own bounds. Returns the space."""
    cls = BASE_CONFIGS[config.base_kind]
    space = config.search_space()
    if not space:
        raise InvalidInput("the search space is empty: name at least one field to tune")
    for name, rng in space.items():
        field = cls.model_fields.get(name)
        if field is None or name in NOT_TUNABLE:
            known = sorted(n for n in cls.model_fields if n not in NOT_TUNABLE)
            raise InvalidInput(f"'{name}' is not a field a {config.base_kind} study can tune; use one of "
                               f"{', '.join(known)}")
        if rng.choices is None and field.annotation not in (int, float):
            raise InvalidInput(f"'{name}' is not a number: give it choices, not a range")
        if rng.choices is None and field.annotation is int and not (float(rng.low).is_integer()
                                                                    and float(rng.high).is_integer()):
            raise InvalidInput(f"'{name}' takes whole numbers: give its range whole bounds")
        values = rng.choices if rng.choices is not None else [rng.low, rng.high]
        for value in values:
            value = int(value) if field.annotation is int and rng.choices is None else value
            try:
                cls.model_validate({**config.base, name: value})
            except ValidationError as exc:
                bad = [e for e in exc.errors() if e["loc"][:1] == (name,)]
                if bad:
                    raise InvalidInput(f"'{name}' = {value!r} is outside what {config.base_kind} accepts: "
                                       f"{bad[0]['msg']}") from None
    if config.sampler == "grid":
        grid_values(space)
    return space


def grid_values(space: dict[str, SearchRange]) -> dict[str, list]:
    """The grid sampler's values of each field: its choices, or its range on its step."""
    grid = {}
    for name, rng in space.items():
        if rng.choices is not None:
            grid[name] = list(rng.choices)
        elif rng.step is not None:
            count = int(round((rng.high - rng.low) / rng.step)) + 1
            grid[name] = [rng.low + i * rng.step for i in range(count)]
        else:
            raise InvalidInput(f"the grid sampler needs choices or a step for '{name}'")
    return grid


def storage_url(settings, config: TuneConfig) -> str:
    """The study's storage: the config's URL, or an SQLite file in the workspace."""
    if config.storage:
        return config.storage
    (Path(settings.home) / "tune").mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(settings.home) / 'tune' / 'studies.db'}"


def check_tune(engine, config: TuneConfig) -> None:
    """The study can run: its space fits the base job's fields, the objective is one the base run reports, the
    base job passes its own checks (data, model), the storage opens."""
    check_space(config)
    base = base_config(config, output_name=None)
    objective, key, _ = config.objective_key()
    if key == "score_after" and not base.eval_max_examples:
        raise InvalidInput("the objective 'score' needs held-out examples scored: set the base's eval_max_examples "
                           "above 0, or optimise eval_loss")
    if key == "task_score_student" and not base.task:
        raise InvalidInput("the objective 'task_score' needs a task in the base distill config, or optimise "
                           "heldout_ppl")
    if getattr(base, "backend", "") == "olive":  # Olive's Trainer runs without evaluation: no eval loss to read
        if objective == "eval_loss":
            raise InvalidInput("the Olive backend reports no eval loss: optimise 'score', or use backend "
                               "transformers")
        if config.pruner != "none":
            raise InvalidInput("the pruner reads the eval loss while a trial trains, which the Olive backend does "
                               "not report: set pruner none, or use backend transformers")
    engine.ready_model(base.model_ref())
    engine.check(base)  # the base kind's own checks
    open_storage(storage_url(engine.settings, config))


def open_storage(url: str):
    """Optuna's RDB storage with heartbeats (a trial whose process dies is marked failed by the next worker).
    SQLite waits for its lock instead of failing with 'database is locked'."""
    import optuna

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9; they are what we need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds; all mean "cannot open"
        raise InvalidInput(f"the study storage {url!r} cannot be opened ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]}); give an RDB URL such as sqlite:///path/studies.db or "
                           "postgresql://user:password@host/db") from None


BASELINE_NOTE = "baseline: the base config's own values"


def make_sampler(config: TuneConfig, space: dict[str, SearchRange]):
    import optuna

    if config.sampler == "grid":
        return optuna.samplers.GridSampler(grid_values(space), seed=config.seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=config.seed)
    # TPE's default of 10 random trials first would leave a 12-trial study almost no guided ones
    return optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=max(2, min(10, config.trials // 3)))


def make_pruner(config: TuneConfig):
    import optuna

    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=config.pruner_startup_trials, n_warmup_steps=0)
    if config.pruner == "halving":
        # rungs at the trials' own evaluation steps (eval_steps, 3×, 9× …): Optuna's "auto" guesses 1 % of the first
        # trial's steps, so every evaluation would face a rung and a trial would stop at its first eval unless it led
        eval_steps = config.base.get("eval_steps") or BASE_CONFIGS[config.base_kind].model_fields["eval_steps"].default
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=int(eval_steps), reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(config: TuneConfig, storage_url: str, name: str, create: bool = True):
    """The study `name` in the storage: created (with the config in its user attributes, so a worker elsewhere can
    join it knowing only the URL and the name) or, when it exists, continued."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url)
    space = config.search_space()
    _, _, direction = config.objective_key()
    if not create and name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        raise InvalidInput(f"no study named '{name}' in {storage_url}")
    study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True,
                                sampler=make_sampler(config, space), pruner=make_pruner(config))
    if "config" not in study.user_attrs:  # new
        study.set_user_attr("config", config.model_dump_json())
        baseline = baseline_params(config, space)
        if config.baseline_first and baseline:
            study.enqueue_trial(baseline, user_attrs={"note": BASELINE_NOTE})
    return study


def baseline_params(config: TuneConfig, space: dict[str, SearchRange]) -> dict | None:
    """The base config's values of the searched fields, when every one lies in the space (else None)."""
    base = BASE_CONFIGS[config.base_kind].model_validate(config.base)
    values = {name: getattr(base, name) for name in space}
    for name, rng in space.items():
        value = values[name]
        inside = value in rng.choices if rng.choices is not None else rng.low <= value <= rng.high
        if not inside:
            return None
    return values


def stored_config(storage_url: str, name: str) -> TuneConfig:
    """The config a study was created with (a joining worker uses it)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise InvalidInput(f"no study named '{name}' in {storage_url}") from None
    if "config" not in study.user_attrs:
        raise InvalidInput(f"study '{name}' was not made by SLMOps Studio (it has no config to run trials with)")
    return TuneConfig.model_validate_json(study.user_attrs["config"])


def study_of_run(settings, run):
    if run.kind != TuneConfig.kind:
        raise InvalidInput(f"Run {run.id} is a {run.kind} run, not a study.")
    if "study" not in run.summary:
        raise InvalidInput(f"Run {run.id} has not opened its study yet.")
    config = TuneConfig.model_validate_json(run.config_json)
    return open_study(config, storage_url(settings, config), run.summary["study"], create=False)


def best_config(study) -> JobConfig:
    try:
        best = study.best_trial
    except ValueError:
        raise InvalidInput(f"study '{study.study_name}' has no finished trial yet") from None
    return base_config(TuneConfig.model_validate_json(study.user_attrs["config"]), **best.params)


def suggest(trial, space: dict[str, SearchRange], base_cls: type[JobConfig]) -> dict:
    params = {}
    for name, rng in space.items():
        if rng.choices is not None:
            params[name] = trial.suggest_categorical(name, rng.choices)
        elif base_cls.model_fields[name].annotation is int:
            params[name] = trial.suggest_int(name, int(rng.low), int(rng.high), step=int(rng.step or 1))
        else:
            params[name] = trial.suggest_float(name, rng.low, rng.high, log=rng.log, step=rng.step)
    return params


def trial_rows(study) -> list[dict]:
    """One row per trial: number, state, objective, params, training steps, its run."""
    rows = []
    sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0  # the pruner saw sign × eval loss
    for t in study.get_trials(deepcopy=False):
        note = t.user_attrs.get("note", "")
        if t.state.name == "PRUNED" and t.intermediate_values:
            step = max(t.intermediate_values)
            note = f"pruned at step {step}: eval loss {sign * t.intermediate_values[step]:.4f}"
        elif t.state.name == "FAIL" and note in ("", BASELINE_NOTE):  # every failure of ours says why in its note
            note = ("baseline; " if note else "") + "failed: its study process stopped (no heartbeat), marked by " \
                "another worker"
        rows.append({"trial": t.number, "state": t.state.name.lower(),
                     "value": t.value if t.state.name == "COMPLETE" else None,  # (a pruned trial's: its last report)
                     "steps": t.user_attrs.get("steps"), "run": t.user_attrs.get("run_id"),
                     "params": json.dumps(t.params), "note": note})
    return rows
