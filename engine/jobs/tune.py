"""Job `tune`: a hyperparameter study on Optuna. The run coordinates; each trial is a run of its own (fine-tune or
distill, queued like any other and linked to the study's run), whose eval loss is reported to Optuna as it trains so
the pruner can stop it ("pruned", not "failed"). Several study runs — here or on other machines sharing an RDB
storage — can work on one study at once; a study that exists is continued."""
from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass

from ..configs.tune import BASE_CONFIGS, TuneConfig
from ..errors import Cancelled, InvalidInput
from ..records import RunStatus
from ..tuning import HEARTBEAT_S, base_config, check_space, open_study, storage_url, suggest, trial_rows

CONFIG = TuneConfig
POLL_S = 2.0
MAX_FAILED_IN_A_ROW = 3  # then the study stops: a failure that repeats is the base job's, not the sampled values'


class StudyFailed(RuntimeError):
    pass


@dataclass
class _InFlight:
    trial: object  # optuna.Trial
    run_id: int
    reported_step: int = -1
    pruning: bool = False


def run(ctx, config: TuneConfig) -> None:
    t0 = time.perf_counter()
    engine = ctx.engine()  # starts the trials (the queue's slots are shared)
    name = config.study_name or f"study-run{ctx.run_id}"
    study = open_study(config, storage_url(ctx.settings, config), name)
    objective, key, direction = config.objective_key()
    ctx.summary(study=name, objective=objective, direction=direction)
    ctx.log(f"study '{name}': {direction} {objective} ({key} of each {config.base_kind} run), "
            f"{config.trials} trials, sampler {config.sampler}, pruner {config.pruner}")
    try:
        Study(ctx, engine, config, study).run()
    finally:
        _summarise(ctx, study)
        ctx.summary(wall_s=round(time.perf_counter() - t0, 1))


class Study:
    """The coordinating loop: keep up to `parallel` trials running until the budget is spent, report their eval
    loss, prune, and tell Optuna how each ended."""

    def __init__(self, ctx, engine, config: TuneConfig, study):
        import optuna

        self.ctx, self.engine, self.config, self.study = ctx, engine, config, study
        self.space = check_space(config)
        self.base_cls = BASE_CONFIGS[config.base_kind]
        _, self.key, direction = config.objective_key()
        self.sign = -1.0 if direction == "maximize" else 1.0  # eval loss: lower is better
        self.active: dict[int, _InFlight] = {}
        self.failed_in_a_row = 0
        self.states = optuna.trial.TrialState
        self.deadline = time.monotonic() + 60 * config.minutes if config.minutes else None

    def run(self) -> None:
        from optuna.storages import fail_stale_trials

        stop_beat = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(stop_beat,), daemon=True)
        beat.start()
        try:
            while True:
                if self.ctx.cancelled:
                    raise Cancelled("cancelled by request; `runs resume` continues the study")
                for flight in list(self.active.values()):
                    self._poll(flight)
                fail_stale_trials(self.study)  # another worker's trial whose process stopped beating
                if self._may_start():
                    self._start()
                elif not self.active and not self._others_running():
                    break  # (another worker's trial may still fail, and leave the budget to spend)
                self._progress()
                time.sleep(POLL_S)
        except BaseException as exc:  # cancelled, SIGTERM, a failure: the trials in flight stop and are told so
            self._stop_all(f"the study stopped ({type(exc).__name__}: {exc})")
            raise
        finally:
            stop_beat.set()

    def _counted(self) -> int:
        s = self.states
        return len(self.study.get_trials(deepcopy=False, states=(s.COMPLETE, s.PRUNED, s.RUNNING)))

    def _others_running(self) -> bool:
        running = self.study.get_trials(deepcopy=False, states=(self.states.RUNNING,))
        return any(t.number not in self.active for t in running)

    def _may_start(self) -> bool:
        if len(self.active) >= self.config.parallel or self._counted() >= self.config.trials:
            return False
        if self.deadline is not None and time.monotonic() > self.deadline:
            return False
        sampler = self.study.sampler
        return not (self.config.sampler == "grid" and sampler.is_exhausted(self.study))

    def _start(self) -> None:
        with warnings.catch_warnings():  # "heartbeats are meant for optimize": this loop beats itself (_heartbeat)
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = self.study.ask()
        self.study._storage.record_heartbeat(trial._trial_id)  # from the start: a crash before the first beat
        s = self.states  # would leave the trial running for ever
        earlier = [t for t in self.study.get_trials(deepcopy=False, states=(s.COMPLETE, s.PRUNED, s.RUNNING))
                   if t.number < trial.number]
        if len(earlier) >= self.config.trials:  # another worker asked for the last trial at the same moment
            trial.set_user_attr("note", "not run: the budget was spent by another worker")
            self._tell(trial, state=self.states.FAIL)
            return
        params = suggest(trial, self.space, self.base_cls)
        changes = {**params, "output_name": f"{self.study.study_name}-t{trial.number}"}
        if self.config.base_kind == "finetune":
            changes["score_before"] = False  # every trial has the same base: its score says nothing per trial
        try:
            run_id = self.engine.start_run(base_config(self.config, **changes), parent_run_id=self.ctx.run_id)
        except InvalidInput as exc:
            self._fail(trial, f"not started: {exc}")
            self.ctx.log(f"trial {trial.number} could not start: {exc}", "warning")
            return
        trial.set_user_attr("run_id", run_id)
        trial.set_user_attr("study_run", self.ctx.run_id)
        self.active[trial.number] = _InFlight(trial, run_id)
        self.ctx.log(f"trial {trial.number}: run {run_id} with {params}")

    def _poll(self, flight: _InFlight) -> None:
        store = self.ctx.store
        run = store.get_run(flight.run_id)
        points = store.metrics(flight.run_id)
        for p in sorted((p for p in points if p.name == "eval_loss" and p.step > flight.reported_step),
                        key=lambda p: p.step):
            flight.trial.report(self.sign * p.value, p.step)
            flight.reported_step = p.step
            if not flight.pruning and not run.status.final and flight.trial.should_prune():
                flight.pruning = True
                store.request_cancel(flight.run_id, prune=True)
                self.ctx.log(f"trial {flight.trial.number}: pruned at step {p.step} (eval loss {p.value:.4f})")
        if not run.status.final:
            return
        steps = max((p.step for p in points), default=0)
        flight.trial.set_user_attr("steps", steps)
        del self.active[flight.trial.number]
        if run.status is RunStatus.SUCCEEDED and self.key in run.summary:
            self._tell(flight.trial, float(run.summary[self.key]))
            self.ctx.log(f"trial {flight.trial.number}: {self.key} = {run.summary[self.key]} after {steps} steps")
        elif run.status is RunStatus.PRUNED:
            self._tell(flight.trial, state=self.states.PRUNED)
        elif run.status is RunStatus.SUCCEEDED:
            self._fail(flight.trial, f"run {run.id} reported no {self.key}")
        else:
            self._fail(flight.trial, f"run {run.id} {run.status.value}: {run.error or ''}".strip())

    def _fail(self, trial, note: str) -> None:
        trial.set_user_attr("note", note)
        self._tell(trial, state=self.states.FAIL)
        self.failed_in_a_row += 1
        if self.failed_in_a_row >= MAX_FAILED_IN_A_ROW:
            raise StudyFailed(f"{self.failed_in_a_row} trials in a row failed; the last: trial {trial.number}, "
                              f"{note}. Fix the base settings, then resume the study.")

    def _tell(self, trial, value: float | None = None, state=None) -> None:
        if state is None or state == self.states.PRUNED:
            self.failed_in_a_row = 0
        try:
            self.study.tell(trial, value, state=state)
        except RuntimeError as exc:  # the trial is stored; the grid sampler then stops `optimize`, which we do not
            if "Study.stop" not in str(exc):  # use (`_may_start` asks the sampler whether its grid is spent)
                raise

    def _stop_all(self, note: str) -> None:
        for flight in list(self.active.values()):
            self.engine.cancel_run(flight.run_id)
            flight.trial.set_user_attr("note", note)
            self._tell(flight.trial, state=self.states.FAIL)
        self.active.clear()

    def _heartbeat(self, stop: threading.Event) -> None:
        """Tell the storage this study process is alive for each trial it runs (Optuna's `optimize` does this
        itself; a study driven by ask/tell does it here)."""
        storage = self.study._storage
        while not stop.wait(HEARTBEAT_S):
            for flight in list(self.active.values()):
                storage.record_heartbeat(flight.trial._trial_id)

    def _progress(self) -> None:
        """Trials done plus the progress of those running, over the budget (or the time limit, if nearer)."""
        s = self.states
        done = len(self.study.get_trials(deepcopy=False, states=(s.COMPLETE, s.PRUNED)))
        running = ", ".join(f"trial {n} (run {f.run_id})" for n, f in sorted(self.active.items()))
        partial = sum(self.ctx.store.get_run(f.run_id).progress for f in self.active.values())
        fraction = min((done + partial) / self.config.trials, 0.99)
        if self.deadline is not None:
            fraction = max(fraction, min(1 - (self.deadline - time.monotonic()) / (60 * self.config.minutes), 0.99))
        self.ctx.progress(fraction, f"{done}/{self.config.trials} trials done" + (f"; running {running}" if running
                                                                                 else ""))


def _summarise(ctx, study) -> None:
    rows = trial_rows(study)
    states = [r["state"] for r in rows]
    values = {"complete": states.count("complete"), "pruned": states.count("pruned"),
              "failed": states.count("fail"), "steps": sum(r["steps"] or 0 for r in rows)}
    try:
        best = study.best_trial
    except ValueError:  # no finished trial yet
        best = None
    if best is not None:
        values.update(best_value=round(best.value, 4), best_trial=best.number, best_run=best.user_attrs.get("run_id"),
                      best_params=best.params)
    ctx.summary(**values)
