"""Decode speed of one int4 export with the kernel library of two versions of the sources: each git revision's
`engine/kernels` is built with the engine's own compiler flags and put beside the export's files in a folder of its
own; one process per measurement (benchmarks/huge_pages.py's measurement: plain onnxruntime-genai, 2 threads, 3 chat
prompts × --new-tokens greedy tokens after an untimed warm-up), the two versions alternating so both see the same
machine. Medians with 95 % intervals (engine.stats).

    python benchmarks/kernel_ab.py MODEL_FOLDER --before REV [--after REV] [--rounds 6] [--new-tokens 128]

REV: a git revision of this repository; --after defaults to the working tree. Only the library differs: the
export's weights and graph are the same files, so the versions must read the same weight layout. Example (the
prefetch change of the fifth session): `--before 99cb5e9 --after 4d341bb`.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.kernels import HERE, LIBRARY_NAME, compile_library  # noqa: E402
from engine.stats import median_interval, within_noise  # noqa: E402


def version_folder(model: Path, rev: str | None, work: Path) -> Path:
    """A folder with the export's files (linked) and the library built from `rev`'s sources (None: the working
    tree's)."""
    name = rev or "working-tree"
    sources = HERE
    if rev:
        sources = work / f"src-{name}"
        sources.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "engine/kernels"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(sources), "--strip-components=2"], input=archive, check=True)
    folder = work / name
    folder.mkdir()
    for f in model.iterdir():
        if f.name != LIBRARY_NAME:
            (folder / f.name).symlink_to(f.resolve())
    compile_library(sources, folder / LIBRARY_NAME)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--before", required=True)
    ap.add_argument("--after")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=128)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folders = {label: version_folder(Path(args.model), rev, Path(tmp))
                   for label, rev in (("before", args.before), ("after", args.after))}
        speeds: dict[str, list[float]] = {label: [] for label in folders}
        for _ in range(args.rounds):
            for label, folder in folders.items():
                out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "huge_pages.py"), str(folder), "--one",
                                      "--new-tokens", str(args.new_tokens)], capture_output=True, text=True,
                                     check=True).stdout.split()
                speeds[label].append(float(out[0]))
    stats = {label: median_interval(values) for label, values in speeds.items()}
    print(f"{Path(args.model).name}: {args.rounds} alternating rounds × 3 prompts × {args.new_tokens} tokens, "
          "2 threads")
    for label, rev in (("before", args.before), ("after", args.after or "working tree")):
        m = stats[label]
        print(f"  {label} ({rev}): decode {m[0]:6.1f} tok/s (95 % CI {m[1]:.1f}–{m[2]:.1f}) "
              f"{[round(v, 1) for v in speeds[label]]}")
    ratio = stats["after"][0] / stats["before"][0]
    print(f"  ratio {ratio:.3f}" + (" (within noise)" if within_noise(stats["after"], stats["before"]) else ""))


if __name__ == "__main__":
    main()
