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


def imports_of(path, package: str) -> set[str]:
    """Every module `path` imports (top level and inside functions), as dotted names; `from p import x` counts as
    the module p.x when x is one, else as p."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = package.split(".")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            for alias in node.names:
                module_path = ROOT.joinpath(*f"{base}.{alias.name}".split("."))
                is_module = module_path.with_suffix(".py").is_file() or (module_path / "__init__.py").is_file()
                found.add(f"{base}.{alias.name}" if is_module else base)
    return found


def engine_modules() -> dict[str, set[str]]:
    """engine's modules → the engine modules each imports."""
    graph = {}
    for path in (ROOT / "engine").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = name if rel.name == "__init__" else name.rsplit(".", 1)[0]
        graph[name] = {m for m in imports_of(path, package) if m == "engine" or m.startswith("engine.")}
    return graph


def test_no_module_outside_the_jobs_package_imports_a_recipe():
    from engine import JOB_KINDS

    recipes = {kind.run.__module__ for kind in JOB_KINDS.values() if kind.run.__module__.startswith("engine.jobs.")}
    assert {"engine.jobs.quantize", "engine.jobs.finetune"} <= recipes
    offenders = [(m, sorted(deps & recipes)) for m, deps in engine_modules().items()
                 if not m.startswith("engine.jobs") and deps & recipes]
    offenders += [(str(p), sorted(imports_of(p, "slmops_ui") & recipes)) for p in (ROOT / "slmops_ui").rglob("*.py")
                  if imports_of(p, "slmops_ui") & recipes]
    assert offenders == []


def test_engine_has_no_import_cycles():
    graph = engine_modules()
    cycles, state = [], {}

    def visit(module, stack):
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if dep == "engine" or dep not in graph:  # the package itself is the public surface, imported by none
                continue
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
    assert not any("engine" in deps for m, deps in graph.items() if m != "engine")  # nothing inside imports the facade


def test_the_ui_imports_only_the_engines_public_names():
    import ast

    import engine

    offenders = []
    for path in [ROOT / "app.py", *(ROOT / "slmops_ui").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engine"):
                if node.module != "engine":
                    offenders.append(f"{path.name}: from {node.module} import …")
                offenders += [f"{path.name}: {a.name} is not in engine.__all__" for a in node.names
                              if node.module == "engine" and a.name not in engine.__all__]
            elif isinstance(node, ast.Import):
                offenders += [f"{path.name}: import {a.name}" for a in node.names if a.name.startswith("engine.")]
    assert offenders == []
