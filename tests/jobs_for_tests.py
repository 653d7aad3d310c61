"""A job used only by the runner tests: it exercises success, progress, failures and cancellation on purpose."""
from __future__ import annotations

import os
import time
from typing import ClassVar, Literal

from engine.configs import JobConfig
from engine.jobs.registry import JobKind, register


class ProbeJob(JobConfig):
    kind: ClassVar[str] = "test_probe"
    behaviour: Literal["succeed", "raise", "exit", "stubborn"] = "succeed"
    steps: int = 5
    step_s: float = 0.05


class ExclusiveProbe(ProbeJob):
    kind: ClassVar[str] = "test_probe_exclusive"


def run(ctx, config: ProbeJob) -> None:
    for i in range(config.steps):
        if config.behaviour == "stubborn":
            time.sleep(60)  # never looks at the cancel flag: only a signal can stop it
        ctx.check_cancelled()
        if config.behaviour == "raise" and i == 1:
            raise ValueError("boom on purpose at step 1")
        if config.behaviour == "exit" and i == 1:
            os._exit(3)
        ctx.metric("value", i * 2.0, step=i)
        ctx.progress((i + 1) / config.steps, f"step {i + 1}/{config.steps}")
        time.sleep(config.step_s)
    ctx.summary(last_value=(config.steps - 1) * 2.0)


# registered on import, in the test process and in the worker that imports this module to run a probe
register(JobKind(ProbeJob, run))
register(JobKind(ExclusiveProbe, run, exclusive=True))
