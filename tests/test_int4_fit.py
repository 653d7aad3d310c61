"""Calibrated int4 (GPTQ with Q4_1 blocks): the fit lies on a grid the affine export reads back exactly, it keeps a
layer's outputs on calibration data better than min/max rounding, and the quantize job uses it for weights that
were trained after rounding."""
import numpy as np

from engine.configs import QuantizeConfig
from tests.helpers import ROOT

TRAIN = ROOT / "assets" / "datasets" / "request_to_json.train.jsonl"


def test_gptq_fit_is_on_a_grid_minmax_reads_back_and_keeps_outputs_better_than_rounding():
    """A weight that is a Q4_1-grid matrix plus a 'training' change a tenth of a step: rounding snaps it back to
    the grid (the change is lost); the fit's output error on correlated inputs is far below rounding's."""
    import torch

    from engine.int4_fit import gptq_q41, output_error
    from engine.block_quant import round_affine_4bit

    torch.manual_seed(0)
    n, k = 24, 96
    grid = torch.randint(0, 16, (n, k)).float() * 0.01 - 0.08  # on a Q4_1 grid (step 0.01)
    weight = grid + 0.001 * torch.randn(n, k)
    x = torch.randn(512, 8) @ torch.randn(8, k) + 0.1 * torch.randn(512, k)  # inputs of low effective rank
    hessian = 2 * x.T @ x / len(x)
    fitted = gptq_q41(weight, hessian)
    readback = torch.from_numpy(round_affine_4bit(fitted.T.numpy(), 32).T.copy())
    assert torch.allclose(readback, fitted, atol=1e-6)  # min/max rounding recovers the fitted codes exactly
    rounded = torch.from_numpy(round_affine_4bit(weight.T.numpy(), 32).T.copy())
    assert output_error(weight, fitted, hessian) < 0.5 * output_error(weight, rounded, hessian)


def test_off_grid_share_tells_q41_weights_from_trained_ones(tmp_path):
    import torch
    from safetensors.torch import save_file

    from engine.int4_fit import off_grid_share

    torch.manual_seed(0)
    grid = torch.randint(0, 16, (8, 64)).float() * 0.02 - 0.1
    grid[:, ::32] = -0.1
    grid[:, 1::32] = 0.2  # every block spans its whole range, as llama.cpp's Q4_1 blocks do
    save_file({"model.layers.0.mlp.up_proj.weight": grid.contiguous()}, tmp_path / "a.safetensors")
    assert off_grid_share(tmp_path) == 0.0
    save_file({"model.layers.0.mlp.up_proj.weight": (grid + 1e-3 * torch.randn(8, 64)).contiguous()},
              tmp_path / "a.safetensors")
    assert off_grid_share(tmp_path) == 1.0


def test_quantize_job_fits_off_grid_weights_on_calibration_data(tiny_engine):
    """fit gptq on a tiny random model (off the grid): the export's 4-bit blocks are the fit's codes exactly, the
    fit beats rounding on its calibration data, and verify passes it."""
    run_id = tiny_engine.start_run(QuantizeConfig(model_id="tiny", fit="gptq", calibration_path=str(TRAIN),
                                                  calibration_examples=16, verify_tokens=256,
                                                  output_name="tiny-gptq"))
    run = tiny_engine.wait_run(run_id, timeout=600)
    assert run.status.value == "succeeded", (run.error, [m.message for m in tiny_engine.run_logs(run_id)][-10:])
    metrics = {m.name: m.value for m in tiny_engine.run_metrics(run_id)}
    assert run.summary["fit"] == "gptq" and metrics["grid_exact_share"] == 1.0
    assert metrics["fit_output_error"] < 1.0 and np.isfinite(metrics["ppl_ratio"])
    logs = "\n".join(m.message for m in tiny_engine.run_logs(run_id))
    assert "calibration tokens" in logs and tiny_engine.store.has_model("tiny-gptq")
    assert not list((tiny_engine.settings.runs_dir / str(run_id)).glob("fitted*"))  # the fitted copy is removed
    from slmops_ui.job_panel import made_model, progress_bar, status_markdown
    from slmops_ui.navigation import steps_for

    assert 'aria-valuenow="100"' in progress_bar(run) and "job-bar-succeeded" in progress_bar(run)

    shown = status_markdown(tiny_engine, run_id)  # the job panel names the export and what to do with it next
    assert "Made `tiny-gptq`" in shown
    assert steps_for(made_model(tiny_engine, run)) == ["chat", "evaluate", "benchmark"]  # not exported again

    auto = tiny_engine.wait_run(tiny_engine.start_run(QuantizeConfig(model_id="tiny", verify_tokens=0)), timeout=600)
    assert auto.status.value == "succeeded" and auto.summary["fit"] == "minmax"  # no known training data
    assert "no calibration data" in "\n".join(m.message for m in tiny_engine.run_logs(auto.id))
