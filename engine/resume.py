"""What continuing a run means for each resumable kind: the config of the new run that picks up where `run` left
off (Engine.resume_run starts it)."""
from __future__ import annotations

from .configs import GenerateDataConfig, JobConfig, TuneConfig
from .errors import Busy, InvalidInput
from .jobs.registry import JOB_KINDS, job_kind


def resume_config(settings, run, extra_epochs: float | None = None) -> JobConfig:
    """A cancelled, interrupted or failed run resumes where it stopped (checkpoints, rows written, a study's
    trials); a finished training run continues for `extra_epochs` more."""
    from .training import last_checkpoint

    resumable = [k.name for k in JOB_KINDS.values() if k.resumable]
    if run.kind not in resumable:
        raise InvalidInput(f"Run {run.id} is a {run.kind} run; {', '.join(resumable)} runs resume.")
    if not run.status.final:
        raise Busy(f"Run {run.id} is still {run.status.value}.")
    config = job_kind(run.kind).config.model_validate_json(run.config_json)
    if run.kind == TuneConfig.kind:  # the study continues in its storage, with the trials it has
        return config.model_copy(update={"study_name": run.summary.get("study") or config.study_name})
    if run.kind == GenerateDataConfig.kind:
        if run.status.value == "succeeded":
            raise InvalidInput(f"Run {run.id} already answered every prompt.")
        return config.model_copy(update={"resume_from_run": run.id})
    if last_checkpoint(settings.runs_dir / str(run.id)) is None:
        raise InvalidInput(f"Run {run.id} left no checkpoint (it stopped before its first save); start it again "
                           "instead.")
    changes = {"resume_from_run": run.id}
    if run.status.value == "succeeded":
        if not extra_epochs or extra_epochs <= 0:
            raise InvalidInput(f"Run {run.id} finished: say how many more epochs to train.")
        changes.update(epochs=config.epochs + extra_epochs, max_steps=0)
    return config.model_copy(update=changes)
