"""Running a job in this process instead of a worker: used by `python -m engine finetune` under torchrun, where
every rank runs the same recipe (DDP over gloo on CPU, NCCL on GPUs) and rank 0 alone writes to the store."""
from __future__ import annotations

import os
import traceback

from ..records import RunStatus
from ..store import utcnow
from ..errors import Cancelled
from .context import JobContext


class ReplicaContext(JobContext):
    """A non-zero rank: reads the store (to see a cancel request), writes nothing."""

    def progress(self, fraction, stage):
        pass

    def stage(self, text):
        pass

    def log(self, message, level="info"):
        pass

    def metric(self, name, value, step=0):
        pass

    def summary(self, **values):
        pass

    def artifact(self, kind, path, model_id=None):
        pass


def world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def run_in_process(engine, config) -> int:
    """Run `config`'s job here on every rank; returns the run id (recorded by rank 0, shared with the others)."""
    import torch
    import torch.distributed as dist

    from .registry import job_kind

    kind = job_kind(config.kind)
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    run_id = None
    if rank == 0:
        run_id = engine.store.add_run(config.kind, config.model_dump_json(), kind.target, config.model_ref())
        engine.store.update_run(run_id, status=RunStatus.RUNNING.value, started_at=utcnow(), pid=os.getpid(),
                                stage=f"running on {size} processes")
    if size > 1:
        box = [run_id]
        dist.broadcast_object_list(box, src=0)
        run_id = box[0]
    context_cls = JobContext if rank == 0 else ReplicaContext
    ctx = context_cls(run_id, engine.store, engine.settings, engine_factory=lambda: engine)
    ctx.summary(world_size=size)
    try:
        kind.run(ctx, config)
    except Cancelled as exc:
        if rank == 0:
            engine.store.finish_run(run_id, RunStatus.CANCELLED, str(exc))
        raise
    except BaseException as exc:
        if rank == 0:
            ctx.log(traceback.format_exc(), "error")
            engine.store.finish_run(run_id, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    if rank == 0:
        engine.store.finish_run(run_id, RunStatus.SUCCEEDED)
    if size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return run_id
