"""Exports to ONNX Runtime GenAI: what the model builder supports, the checks before a build, and the build itself
(the builder runs as a child process, offline, with its caches in the workspace, and is killed on cancel)."""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .configs import QuantizeConfig
from .errors import InvalidInput, UnsupportedModel


@functools.lru_cache(maxsize=1)
def builder_architectures() -> frozenset[str]:
    """The HF architectures the installed onnxruntime-genai model builder knows (read from its source)."""
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime_genai.models.builder")
    if spec is None or spec.origin is None:
        return frozenset()
    text = Path(spec.origin).read_text(encoding="utf-8")
    return frozenset(re.findall(r'architectures\[0\]\s*==\s*"(\w+)"', text))


def model_widths(folder: Path) -> dict:
    """The input widths of the model's weight matrices (what an int4 block must divide), from config.json."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    arch = (config.get("architectures") or ["?"])[0]
    if "hidden_size" not in config:
        return {"architecture": arch, "widths": []}
    hidden = int(config["hidden_size"])
    heads = int(config.get("num_attention_heads") or 1)
    head_dim = int(config.get("head_dim") or hidden // heads)
    widths = {hidden, int(config.get("intermediate_size") or hidden), heads * head_dim}
    return {"architecture": arch, "widths": sorted(widths)}


def check_export(folder: Path, config: QuantizeConfig, params: int | None) -> dict:
    """Refuse what cannot be built, with the reason; returns the facts used (widths, bytes needed)."""
    from .onnx_affine import check_block_size

    facts = model_widths(folder)
    supported = builder_architectures()
    if facts["architecture"] not in supported:
        raise UnsupportedModel(f"{facts['architecture']} is not supported by the ONNX Runtime GenAI model builder "
                               f"installed here; it supports {', '.join(sorted(supported)[:12])} and "
                               f"{max(len(supported) - 12, 0)} more.")
    if config.execution_provider == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise InvalidInput("The cuda execution provider needs a CUDA GPU and onnxruntime-gpu; this machine has "
                               "neither. Choose cpu.")
    if config.precision == "int4":
        check_block_size(facts["widths"], config.block_size)
    if config.precision != "int4" and config.method == "affine" and config.block_size != 32:
        raise InvalidInput("Block size applies to int4 only.")
    n = params or 0
    per_param = {"fp32": 4.0, "int8": 1.2, "int4": 0.9}[config.precision]
    fp32_pass = 4.0 if config.precision == "int4" and config.method in ("affine", "olive") else 0.0
    facts["bytes_needed"] = int(n * (per_param + fp32_pass) * 1.1) + (200 << 20)
    return facts


def check_disk(where: Path, bytes_needed: int) -> None:
    free = shutil.disk_usage(where).free
    if free < bytes_needed:
        raise InvalidInput(f"Not enough disk space in {where}: the export needs about {bytes_needed / 1e9:.2f} GB, "
                           f"{free / 1e9:.2f} GB are free. Delete unused models or runs first.")


def builder_command(src: Path, out: Path, precision: str, config: QuantizeConfig, cache_dir: Path) -> list[str]:
    extra = []
    if precision == "int4":
        extra += [f"block_size={config.block_size}", f"accuracy_level={config.accuracy_level}",
                  f"is_symmetric={'true' if config.symmetric else 'false'}"]
        if not config.symmetric:
            extra.append("shared_embeddings=false")  # asymmetric + shared embeddings builds but does not load
        if config.higher_precision == "last_matmul":
            extra += ["matmul_mixed_precision=last_matmul:int8", "shared_embeddings=false"]
        elif config.higher_precision == "mixed_layers":
            extra += ["algo_config=k_quant_mixed", "shared_embeddings=false"]
    elif precision == "int8":
        extra.append(f"accuracy_level={config.accuracy_level}")
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(out), "-p", precision,
           "-e", config.execution_provider, "-c", str(cache_dir)]
    if extra:
        cmd += ["--extra_options", *dict.fromkeys(extra)]
    return cmd


def run_builder(cmd: list[str], workdir: Path, log, check_cancelled, timeout_s: float = 3600) -> None:
    """Run the model builder in a child process; its output goes to the run log; cancel kills it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    log("builder: " + " ".join(cmd[2:]))
    logfile = workdir / "builder.log"
    # cwd is an empty folder: a file there named like a module the builder imports would break the build
    cwd = workdir / "builder-cwd"
    cwd.mkdir(exist_ok=True)
    returncode = run_child(cmd, logfile, cwd, env, check_cancelled, timeout_s, "the model builder")
    tail = logfile.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
    if returncode != 0:
        raise RuntimeError(f"the ONNX Runtime GenAI builder failed (exit {returncode}):\n" + "\n".join(tail))
    for line in tail[-3:]:
        log("builder: " + line)


def run_child(cmd: list[str], logfile: Path, cwd: Path, env: dict, check_cancelled, timeout_s: float,
              what: str) -> int:
    """Run a child process with its output in `logfile`; cancel or timeout kill it. Returns its exit code."""
    with open(logfile, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        t0 = time.monotonic()
        try:
            while proc.poll() is None:
                check_cancelled()
                if time.monotonic() - t0 > timeout_s:
                    raise TimeoutError(f"{what} ran longer than {timeout_s:.0f} s")
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return proc.returncode


def export_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())  # adapters/ included


OLIVE_PASSES = {"rtn": "OnnxBlockWiseRtnQuantization", "kquant": "OnnxKQuantQuantization"}


def run_olive(src_dir: Path, out_dir: Path, config: QuantizeConfig, workdir: Path, cache_dir: Path, log,
              check_cancelled, timeout_s: float = 3600) -> None:
    """Quantize the builder's fp32 export with an Olive ONNX pass (block-wise RTN, or k-quant) in a child
    process, offline and with telemetry off, everything written under the run folder and the workspace cache;
    then give the result the source's output names and GenAI files so onnxruntime-genai runs it."""
    import onnx

    olive_dir = workdir / "olive"
    shutil.rmtree(olive_dir, ignore_errors=True)
    olive_dir.mkdir(parents=True)
    pass_config = {"type": OLIVE_PASSES[config.olive_pass], "block_size": config.block_size}
    if config.olive_pass == "rtn":
        pass_config.update(is_symmetric=config.symmetric, accuracy_level=config.accuracy_level)
    workflow = {
        "input_model": {"type": "ONNXModel", "model_path": str(src_dir), "onnx_file_name": "model.onnx"},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [
            {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}},
        "passes": {"quantize": pass_config}, "host": "local_system", "target": "local_system",
        "cache_dir": str(olive_dir / "cache"), "output_dir": str(olive_dir / "out"), "log_severity_level": 1}
    (olive_dir / "workflow.json").write_text(json.dumps(workflow, indent=1), encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", CI="1", OLIVE_DISABLE_TELEMETRY="1",
               OLIVE_TELEMETRY_CACHE_DIR=str(cache_dir / "olive-telemetry"))
    log(f"olive: {pass_config['type']} {json.dumps({k: v for k, v in pass_config.items() if k != 'type'})}")
    logfile = olive_dir / "olive.log"
    returncode = run_child([sys.executable, "-m", "olive", "run", "--config", str(olive_dir / "workflow.json")],
                           logfile, olive_dir, env, check_cancelled, timeout_s, "Olive")
    produced = olive_dir / "out" / "model.onnx"
    if returncode != 0 or not produced.is_file():
        tail = logfile.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-12:]
        raise RuntimeError(f"Olive failed (exit {returncode}):\n" + "\n".join(tail))
    # Olive's quantizer renames a graph output it quantizes ('logits' → 'logits_Q4'): give back the names
    # genai_config.json expects.
    expected = [o.name for o in onnx.load(str(src_dir / "model.onnx"), load_external_data=False).graph.output]
    model = onnx.load(str(produced))
    renames = {}
    for output in model.graph.output:
        if output.name not in expected:
            base = output.name.rsplit("_Q", 1)[0]
            if base in expected:
                renames[output.name] = base
                output.name = base
    for node in model.graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    onnx.save_model(model, str(out_dir / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=1024)
    for f in src_dir.iterdir():
        if f.is_file() and not f.name.startswith("model.onnx"):
            shutil.copy2(f, out_dir / f.name)
    shutil.rmtree(olive_dir / "cache", ignore_errors=True)  # hundreds of MB of intermediate copies
    if renames:
        log(f"olive: restored output names {renames}")
