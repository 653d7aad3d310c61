import subprocess
import sys

from tests.helpers import ROOT


def test_import_engine_loads_no_ui_and_no_torch():
    code = ("import sys, engine; heavy = [m for m in ('gradio', 'plotly', 'torch', 'transformers') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_engine_sources_never_import_gradio_or_plotly():
    offenders = []
    for path in (ROOT / "engine").rglob("*.py"):
        for line in path.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import gradio", "from gradio", "import plotly", "from plotly")):
                offenders.append(f"{path}: {s}")
    assert offenders == []
