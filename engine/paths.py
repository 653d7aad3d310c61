"""Which local files a request may name. A local, unshared app reads any path its user types; an app that is
shared (`--share`) or listens beyond localhost reads only the workspace, the bundled assets and the folders the
operator allowed at start-up (`--allow-path`, SLMOPS_ALLOWED_PATHS), so a visitor cannot load /etc or a home folder."""
from __future__ import annotations

from pathlib import Path

from .errors import InvalidInput
from .settings import PROJECT_ROOT, Settings


def allowed_roots(settings: Settings) -> list[Path]:
    return [settings.home, PROJECT_ROOT / "assets", *settings.allowed_roots]


def check_local_path(settings: Settings, path: str | Path, what: str) -> Path:
    """The resolved path (symlinks and '..' followed), or InvalidInput when a restricted app may not read it."""
    resolved = Path(path).expanduser().resolve()
    if not settings.restrict_paths:
        return resolved
    roots = allowed_roots(settings)
    if any(resolved.is_relative_to(root) for root in roots):
        return resolved
    raise InvalidInput(f"{what} '{path}' is outside the folders this shared app may read "
                       f"({', '.join(str(r) for r in roots)}). Upload the file instead, copy it into the workspace, "
                       "or ask the operator to restart the app with --allow-path FOLDER.")


def check_config_paths(settings: Settings, config) -> None:
    """Every `*_path` field of a job config (datasets, prompt sets), and the file a GGUF conversion reads, must pass
    `check_local_path`."""
    for name, value in config:
        if name.endswith("_path") and isinstance(value, str) and value.strip():
            check_local_path(settings, value.strip(), name.replace("_", " ").capitalize())
    if getattr(config, "source", None) == "gguf":
        check_local_path(settings, config.source_ref, "GGUF file")
