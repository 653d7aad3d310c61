"""Safe sharing: no exposed start without a login, a login that is enforced, file routes that serve only the
workspace exports, typed paths limited to the workspace when shared, and no unsafe loading in our code."""
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from engine import Engine, FineTuneConfig, InvalidInput, PrepareModelConfig, Settings
from tests.helpers import ROOT

TRAIN = ROOT / "assets" / "datasets" / "request_to_json.train.jsonl"


def start(args, home: Path, **env):
    env = {k: v for k, v in dict(os.environ, SLMOPS_HOME=str(home), SLMOPS_OFFLINE="1", **env).items()
           if k not in ("SPACE_ID", "SLMOPS_AUTH")}
    return subprocess.run([sys.executable, "app.py", "--no-default-model", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [["--share"], ["--host", "0.0.0.0"], ["--host", "192.168.1.5", "--share"]],
                         ids=["share", "all-interfaces", "lan-share"])
def test_an_exposed_start_without_a_login_is_refused(tmp_path, args):
    result = start(args, tmp_path / "ws")
    assert result.returncode != 0
    assert "Refusing to start" in result.stderr and "--auth USER:PASSWORD" in result.stderr, result.stderr
    assert not (tmp_path / "ws").exists()  # refused before anything was created or loaded


def test_the_host_from_gradio_server_name_is_guarded_too(tmp_path):
    result = start([], tmp_path / "ws", GRADIO_SERVER_NAME="0.0.0.0")
    assert result.returncode != 0 and "--host 0.0.0.0" in result.stderr, result.stderr


def test_access_policy_login_from_env_and_on_a_space(monkeypatch):
    import app

    for name in ("SPACE_ID", "SLMOPS_AUTH", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert app.access_policy(app.parse_args([])) == (None, False)  # local: no login, any typed path
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    assert app.parse_args([]).port == 7999
    monkeypatch.setenv("SLMOPS_AUTH", "ops:pw:with:colons")
    assert app.access_policy(app.parse_args(["--share"])) == (("ops", "pw:with:colons"), True)
    monkeypatch.delenv("SLMOPS_AUTH")
    assert app.access_policy(app.parse_args(["--mcp"])) == (None, False)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    with pytest.raises(SystemExit, match="Refusing to start"):
        app.access_policy(app.parse_args([]))
    # the MCP endpoint has no login: this machine only, and not behind --auth (its calls would fail)
    with pytest.raises(SystemExit, match="--mcp has no login"):
        app.access_policy(app.parse_args(["--mcp", "--auth", "ops:pw"]))
    monkeypatch.setenv("SPACE_ID", "someone/slmops-studio")  # the Space's visibility guards it; paths restricted
    assert app.access_policy(app.parse_args([])) == (None, True)


def test_allowed_folders_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SLMOPS_ALLOWED_PATHS", os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]))
    monkeypatch.setenv("SLMOPS_RESTRICT_PATHS", "1")
    settings = Settings.from_env(home=tmp_path / "ws")
    assert settings.restrict_paths and settings.allowed_roots == (tmp_path / "a", tmp_path / "b")


def test_a_malformed_login_is_refused(tmp_path):
    result = start(["--host", "0.0.0.0", "--auth", "admin"], tmp_path / "ws")
    assert result.returncode != 0 and "USER:PASSWORD" in result.stderr


@pytest.fixture(scope="module")
def guarded_app(tmp_path_factory):
    from tests.browser_helpers import free_port, wait_for_app

    tmp = tmp_path_factory.mktemp("guarded")
    home = tmp / "ws"
    port = free_port()
    log = open(tmp / "app.log", "w")
    env = {k: v for k, v in dict(os.environ, SLMOPS_HOME=str(home), SLMOPS_OFFLINE="1").items() if k != "SPACE_ID"}
    proc = subprocess.Popen([sys.executable, "app.py", "--no-default-model", "--port", str(port),
                             "--auth", "ops:s3cret", "--max-file-size", "64kb"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = wait_for_app(proc, port, tmp / "app.log")
    yield url, home
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def get(opener, url) -> int:
    try:
        return opener.open(url, timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_login_is_enforced(guarded_app):
    url, _ = guarded_app
    anonymous = urllib.request.build_opener()
    assert get(anonymous, url + "config") == 401
    jar = CookieJar()
    session = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    wrong = urllib.parse.urlencode({"username": "ops", "password": "nope"}).encode()
    assert get(session, urllib.request.Request(url + "login", data=wrong)) in (400, 401)
    assert get(session, url + "config") == 401
    right = urllib.parse.urlencode({"username": "ops", "password": "s3cret"}).encode()
    assert get(session, urllib.request.Request(url + "login", data=right)) == 200
    assert get(session, url + "config") == 200


def test_file_routes_serve_the_exports_and_nothing_else(guarded_app):
    url, home = guarded_app
    session = logged_in(url)
    exports = home / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    (exports / "runs.csv").write_text("id,kind\n1,finetune\n")
    (home / "models" / "m").mkdir(parents=True, exist_ok=True)
    (home / "models" / "m" / "config.json").write_text("{}")
    route = url + "gradio_api/file="
    assert get(session, route + str(exports / "runs.csv")) == 200  # the one thing that must work
    refused = {
        "absolute": "/etc/passwd",
        "store": str(home / "slmops.db"),
        "weights": str(home / "models" / "m" / "config.json"),
        "dot-dot": f"{exports}/../slmops.db",
        "encoded-dot-dot": f"{exports}/..%2fslmops.db",
        "double-encoded": f"{exports}/%252e%252e%252fslmops.db",
        "relative": "../../../../etc/passwd",
        "project-source": str(ROOT / "app.py"),
    }
    codes = {name: get(session, route + path) for name, path in refused.items()}
    print(codes)
    assert all(code in (400, 403, 404) for code in codes.values()), codes


def logged_in(url):
    session = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    login = urllib.parse.urlencode({"username": "ops", "password": "s3cret"}).encode()
    assert get(session, urllib.request.Request(url + "login", data=login)) == 200
    return session


def upload(session, url, size: int) -> int:
    boundary = "slmopsboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"d.jsonl\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n")
    body = head.encode() + b"x" * size + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "gradio_api/upload", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    return get(session, request)


def test_uploads_have_a_size_limit(guarded_app):
    url, _ = guarded_app
    session = logged_in(url)
    assert upload(session, url, 1_000) == 200
    assert upload(session, url, 200_000) == 413  # over --max-file-size 64kb


def test_typed_paths_stay_in_the_workspace_when_shared(tmp_path, tiny_model_dir, copy_of):
    allowed = tmp_path / "team-models"
    allowed.mkdir()
    inside = copy_of(tiny_model_dir, "team-models/tiny")
    engine = Engine(Settings(home=tmp_path / "ws", offline=True, restrict_paths=True, allowed_roots=(allowed,)))
    try:
        outside = copy_of(tiny_model_dir, "elsewhere")
        with pytest.raises(InvalidInput, match="outside the folders this shared app may read.*--allow-path"):
            engine.add_model(str(outside), name="outside")
        with pytest.raises(InvalidInput, match="outside the folders"):
            engine.add_model(f"{allowed}/../elsewhere", name="sneaky")  # '..' is resolved before the check
        assert engine.add_model(str(inside), name="tiny").ready
        with pytest.raises(InvalidInput, match="Train path '/etc/passwd' is outside"):
            engine.check(FineTuneConfig(model_id="tiny", train_path="/etc/passwd"))
        with pytest.raises(InvalidInput, match="Dataset path"):
            engine.validate_dataset("tiny", str(TRAIN.parent.parent.parent / "README.md"), 64)
        data = engine.settings.home / "datasets" / "mine.jsonl"  # an upload or a dataset of the workspace
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text("".join(TRAIN.read_text().splitlines(keepends=True)[:20]))
        assert engine.validate_dataset("tiny", str(data), 64).rows == 20
        assert engine.validate_dataset("tiny", str(TRAIN), 64).rows > 0  # the bundled assets stay readable
        with pytest.raises(InvalidInput, match="Model path '/etc/hostname' is outside"):
            engine.add_model("/etc/hostname", name="g", source="gguf")
        with pytest.raises(InvalidInput, match="GGUF file '/etc/passwd' is outside"):  # a run started directly
            engine.start_run(PrepareModelConfig(model_id="g", source="gguf", source_ref="/etc/passwd"))
        assert engine.list_runs() == []
        assert [m.id for m in engine.list_models()] == ["tiny"]  # nothing was registered by the refusals
    finally:
        engine.close()


def test_our_code_never_trusts_remote_code_or_unpickles():
    risky = re.compile(r"trust_remote_code\s*[=:]\s*True|[\"']trust_remote_code[\"']\s*:\s*True|torch\.load\(|"
                       r"pickle\.loads?\(|joblib\.load\(")
    hits = [f"{p.relative_to(ROOT)}:{n}" for folder in ("engine", "slmops_ui") for p in (ROOT / folder).rglob("*.py")
            for n, line in enumerate(p.read_text().splitlines(), 1) if risky.search(line)]
    assert hits == []
