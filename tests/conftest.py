import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent  # the project root, so `engine` and `tests.*` import
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ["SLMOPS_OFFLINE"] = "1"  # tests never touch the network
os.environ["HF_HUB_OFFLINE"] = "1"

from engine import Engine, Settings  # noqa: E402
from tests.helpers import build_tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def engine(tmp_path):
    eng = Engine(Settings(home=tmp_path / "ws", offline=True))
    yield eng
    for run in eng.active_runs():
        eng.cancel_run(run.id)
        eng.wait_run(run.id, timeout=10)
    eng.close()


@pytest.fixture
def tiny_engine(engine, tiny_model_dir):
    engine.add_model(str(tiny_model_dir), name="tiny")
    return engine


@pytest.fixture(scope="session")
def real_home(tmp_path_factory) -> Path:
    """A workspace holding the bundled SmolLM2, converted from its GGUF once for the whole session."""
    home = tmp_path_factory.mktemp("real") / "ws"
    eng = Engine(Settings(home=home, offline=True))
    model = eng.ensure_default_model()
    if model.run_id is not None:
        run = eng.wait_run(model.run_id, timeout=600)
        assert run.status.value == "succeeded", (run.error, [line.message for line in eng.run_logs(run.id)])
    eng.close()
    return home


@pytest.fixture
def real_engine(real_home):
    eng = Engine(Settings(home=real_home, offline=True))
    yield eng
    eng.close()


@pytest.fixture
def copy_of(tmp_path):
    def make(src: Path, name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst
    return make


@pytest.fixture(scope="module")
def app_url(real_home, tmp_path_factory):
    """The app on the bundled model's workspace, started once for each browser test module."""
    from tests.browser_helpers import free_port, wait_for_app
    tmp_path = tmp_path_factory.mktemp("app")
    port = free_port()
    env = dict(os.environ, SLMOPS_HOME=str(real_home), SLMOPS_OFFLINE="1")
    with open(tmp_path / "app.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        yield wait_for_app(proc, port, tmp_path / "app.log")
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="session")
def kernel_lib(tmp_path_factory):
    """The fused kernels' library, built once per session (tests/test_q41_kernel.py, tests/test_attention_op.py)."""
    from engine.kernels import library

    return library(tmp_path_factory.mktemp("kernels"))
