"""The dashboard's public API, started once with `--mcp`: through gradio_client, view_api() lists exactly the
documented endpoint names (every internal UI event is private) and a tiny model is registered, exported and followed
to success; through the `mcp` client (Model Context Protocol, Gradio's MCP server) an agent lists the same names as
tools, registers a model, starts a job, follows it to the end and chats."""
import ast
import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from tests.browser_helpers import free_port, wait_for_app
from tests.helpers import ROOT

PUBLIC = {"list_models", "register_model", "list_runs", "get_run", "cancel_run", "chat"}


def engine_kinds() -> set[str]:
    """The engine's own job kinds (other tests register probe kinds in this process, not in the app's)."""
    from engine import JOB_KINDS

    return {name for name, kind in JOB_KINDS.items() if kind.run.__module__.startswith("engine.jobs.")}


@pytest.fixture(scope="module")
def app_url(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    port = free_port()
    env = dict(os.environ, SLMOPS_HOME=str(tmp / "ws"), SLMOPS_OFFLINE="1")
    with open(tmp / "app.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--no-default-model", "--mcp",
                                 "--allow-path", str(tiny_model_dir.parent)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            yield wait_for_app(proc, port, tmp / "app.log")
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_view_api_lists_the_public_names_and_a_quantize_run_goes_through_them(tiny_model_dir, app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {f"/{name}" for name in PUBLIC | {f"start_{k}" for k in engine_kinds()}}
    assert api["unnamed_endpoints"] == {}

    model = client.predict(str(tiny_model_dir), "tiny", api_name="/register_model")
    assert model["id"] == "tiny" and model["status"] == "ready"
    assert "tiny" in [m["id"] for m in client.predict(api_name="/list_models")]
    run_id = client.predict(json.dumps({"model_id": "tiny", "verify_tokens": 128}), api_name="/start_quantize")
    deadline = time.monotonic() + 300
    while (run := client.predict(run_id, api_name="/get_run"))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, run
        time.sleep(1)
    assert run["status"] == "succeeded", run["error"]
    assert run["summary"]["output"] == "tiny-onnx-int4"
    assert [r["id"] for r in client.predict(5, "quantize", "", api_name="/list_runs")] == [run_id]


def test_an_mcp_agent_lists_models_starts_a_job_and_follows_it_to_the_end(tiny_model_dir, app_url):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    def value(result):
        """A tool's answer: Gradio's MCP server writes a returned object as its Python repr."""
        assert not result.isError, result.content
        text = result.content[0].text
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    async def agent() -> dict:
        async with streamable_http_client(app_url + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = {t.name: t for t in (await session.list_tools()).tools}
                assert set(tools) == PUBLIC | {f"start_{k}" for k in engine_kinds()}
                assert "GgufConfig" in tools["start_gguf"].description
                assert set(tools["chat"].inputSchema["properties"]) >= {"model", "message", "max_new_tokens"}

                model = value(await session.call_tool("register_model", {"ref": str(tiny_model_dir),
                                                                         "name": "agent-tiny"}))
                assert model["id"] == "agent-tiny" and model["status"] == "ready"
                assert "agent-tiny" in [m["id"] for m in value(await session.call_tool("list_models", {}))]
                config = {"model_id": "agent-tiny", "gguf_type": "f16", "verify_tokens": 64}
                run_id = value(await session.call_tool("start_gguf", {"config_json": json.dumps(config)}))
                deadline = time.monotonic() + 120
                while (run := value(await session.call_tool("get_run", {"run_id": run_id})))["status"] in (
                        "queued", "running"):
                    assert time.monotonic() < deadline, run
                    await asyncio.sleep(0.5)
                assert run["status"] == "succeeded", run["error"]
                # the same job again: refused at start with the reason, as a tool error an agent can read
                again = await session.call_tool("start_gguf", {"config_json": json.dumps(config)})
                assert again.isError and "already exists" in again.content[0].text
                reply = value(await session.call_tool("chat", {"model": "agent-tiny-gguf-f16", "message": "Hi",
                                                               "max_new_tokens": 4, "temperature": 0}))
                assert isinstance(reply, str)
                return run

    run = asyncio.run(agent())
    assert run["summary"]["gguf_type"] == "f16" and run["summary"]["first_token_agreement"] == 1.0
