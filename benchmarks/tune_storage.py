"""Which Optuna storage survives several worker processes writing one study at once: an SQLite RDB file (what
`engine tune` uses, with the timeout engine/tuning.py sets) or a journal file. Each of N processes asks, reports
intermediate values and tells M trials as fast as it can; the script counts the trials stored, duplicates, errors
("database is locked") and the time.

    python benchmarks/tune_storage.py [--workers 8] [--trials 40]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def storage(kind: str, path: str):
    import optuna

    if kind == "sqlite":
        from engine.tuning import open_storage

        return open_storage(f"sqlite:///{path}.db")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(f"{path}.log"))


def worker(kind: str, path: str, trials: int, out) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    errors, done = [], 0
    try:
        study = optuna.load_study(study_name="s", storage=storage(kind, path))
    except Exception as exc:  # noqa: BLE001 - what fails is what we count
        out.put((0, [f"load: {type(exc).__name__}: {exc}"[:160]]))
        return
    for _ in range(trials):
        try:
            trial = study.ask()
            x = trial.suggest_float("x", -10, 10)
            for step in range(3):
                trial.report(x * x + step, step)
            study.tell(trial, x * x)
            done += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}"[:160])
    out.put((done, errors))


def measure(kind: str, workers: int, trials: int) -> dict:
    import optuna

    folder = tempfile.mkdtemp(prefix="tune-storage-")
    path = os.path.join(folder, "study")
    optuna.create_study(study_name="s", storage=storage(kind, path))
    out = mp.Queue()
    t0 = time.perf_counter()
    procs = [mp.Process(target=worker, args=(kind, path, trials, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    stored = optuna.load_study(study_name="s", storage=storage(kind, path)).get_trials(deepcopy=False)
    numbers = [t.number for t in stored]
    errors = [e for _, errs in results for e in errs]
    return {"storage": kind, "workers": workers, "told": sum(d for d, _ in results), "stored": len(stored),
            "complete": sum(t.state.name == "COMPLETE" for t in stored),
            "duplicate_numbers": len(numbers) - len(set(numbers)), "errors": len(errors),
            "locked": sum("locked" in e for e in errors), "first_error": errors[0] if errors else "",
            "wall_s": round(wall, 1), "trials_per_s": round(len(stored) / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=40, help="per worker")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Heartbeat of storage")
    print(f"{args.workers} processes x {args.trials} trials (ask, 3 reports, tell) on one study; "
          f"{os.cpu_count()} CPUs")
    for kind in ("sqlite", "journal"):
        print(measure(kind, args.workers, args.trials), flush=True)


if __name__ == "__main__":
    main()
