"""SLMOps Studio: `python app.py` starts the dashboard on http://127.0.0.1:7860 with the bundled default model."""
from __future__ import annotations

import argparse
import logging
import threading
import time

from engine import DEFAULT_MODEL_ID, Engine, Settings

log = logging.getLogger("slmops")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="SLMOps Studio dashboard")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--home", default=None, help="workspace folder (default $SLMOPS_HOME or ./workspace)")
    p.add_argument("--offline", action="store_true", default=None, help="never contact the Hugging Face Hub")
    p.add_argument("--no-default-model", action="store_true", help="do not prepare the bundled SmolLM2 model")
    return p.parse_args(argv)


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
    t0 = time.monotonic()
    from pathlib import Path

    settings = Settings.from_env(home=Path(args.home).resolve() if args.home else None, offline=args.offline)
    log.info("workspace %s%s", settings.home, " (offline)" if settings.offline else "")
    engine = Engine(settings)
    log.info("store ready: %d models, %d runs", len(engine.list_models()), len(engine.list_runs()))
    if not args.no_default_model:
        model = engine.ensure_default_model()
        if model.status == "preparing":
            log.info("default model '%s': converting the bundled GGUF in run %s (first start only)",
                     DEFAULT_MODEL_ID, model.run_id)
            threading.Thread(target=follow_preparation, args=(engine, model.run_id), daemon=True).start()
        else:
            log.info("default model '%s' is %s", DEFAULT_MODEL_ID, model.status)
    log.info("building the UI")
    from slmops_ui import build_app
    from slmops_ui.layout import ASSETS, THEME

    app = build_app(engine)
    log.info("serving on http://%s:%d (started in %.1f s)", args.host, args.port, time.monotonic() - t0)
    app.queue(default_concurrency_limit=4).launch(
        server_name=args.host, server_port=args.port, theme=THEME, css_paths=[ASSETS / "style.css"],
        show_error=True, footer_links=["api"],
        # dataset and run-history downloads; nothing else of the workspace
        allowed_paths=[str(settings.home / "datasets"), str(settings.home / "exports")])


if __name__ == "__main__":
    main()
