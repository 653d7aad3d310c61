"""The dashboard's public API through gradio_client: view_api() lists exactly the documented endpoint names (every
internal UI event is private), and a tiny model is registered, exported and followed to success through them."""
import json
import os
import subprocess
import sys
import time

from tests.helpers import ROOT
from tests.browser_helpers import free_port, wait_for_app

PUBLIC = {"/list_models", "/register_model", "/list_runs", "/get_run", "/cancel_run", "/chat"}


def test_view_api_lists_the_public_names_and_a_quantize_run_goes_through_them(tiny_model_dir, tmp_path):
    from gradio_client import Client

    from engine import JOB_KINDS

    port = free_port()
    env = dict(os.environ, SLMOPS_HOME=str(tmp_path / "ws"), SLMOPS_OFFLINE="1")
    with open(tmp_path / "app.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--no-default-model",
                                 "--allow-path", str(tiny_model_dir.parent)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            client = Client(wait_for_app(proc, port, tmp_path / "app.log"), verbose=False)
            api = client.view_api(print_info=False, return_format="dict")
            # the engine's own kinds (other tests register probe kinds in this process, not in the app's)
            kinds = {name for name, kind in JOB_KINDS.items() if kind.run.__module__.startswith("engine.jobs.")}
            assert set(api["named_endpoints"]) == PUBLIC | {f"/start_{kind}" for kind in kinds}
            assert api["unnamed_endpoints"] == {}

            model = client.predict(str(tiny_model_dir), "tiny", api_name="/register_model")
            assert model["id"] == "tiny" and model["status"] == "ready"
            assert [m["id"] for m in client.predict(api_name="/list_models")] == ["tiny"]
            run_id = client.predict(json.dumps({"model_id": "tiny", "verify_tokens": 128}),
                                    api_name="/start_quantize")
            deadline = time.monotonic() + 300
            while (run := client.predict(run_id, api_name="/get_run"))["status"] in ("queued", "running"):
                assert time.monotonic() < deadline, run
                time.sleep(1)
            assert run["status"] == "succeeded", run["error"]
            assert run["summary"]["output"] == "tiny-onnx-int4"
            assert [r["id"] for r in client.predict(5, "quantize", "", api_name="/list_runs")] == [run_id]
        finally:
            proc.terminate()
            proc.wait(timeout=20)
