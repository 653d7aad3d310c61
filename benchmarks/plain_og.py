"""Shared by the benchmark scripts that must not use SLMOps code: an export loaded by plain onnxruntime-genai."""
from __future__ import annotations

import json

import onnxruntime_genai as og


def load_model(folder: str, threads: int):
    """og.Model of `folder` with `threads` intra-op threads (one inter-op thread), as the benchmark job runs it."""
    config = og.Config(folder)
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    return og.Model(config)
