"""Known-vulnerability audit of what the venv installed: pip-audit first; for packages pip-audit could not look up
(its per-version PyPI query is not answered from every network, e.g. behind a registry mirror), PyPI's project
JSON, whose `vulnerabilities` list covers the latest release, is used when the installed version is that release.

Exit 1 when a vulnerability is found; exit 0 otherwise, with the packages no source could check listed (never
reported as clean). Run: .venv/bin/python .ci/audit.py"""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request


def pip_audit() -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off"],
                         capture_output=True, text=True, timeout=900)
    try:
        return json.loads(out.stdout)["dependencies"]
    except (ValueError, KeyError):
        print(f"pip-audit gave no report (exit {out.returncode}): {out.stderr.strip()[-300:]}")
        return []


def installed_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def latest_release_advisories(name: str, version: str) -> list[str] | None:
    """Advisory ids for `name` when `version` is its latest release on PyPI; None when that cannot be told."""
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=20) as resp:
            data = json.load(resp)
    except (OSError, ValueError):
        return None
    if data["info"]["version"] != version.split("+")[0]:
        return None
    return [v["id"] for v in data.get("vulnerabilities") or []]


def main() -> int:
    deps = pip_audit()
    if not deps:
        print("audit: no package list from pip-audit; nothing was checked")
        return 0
    found, by_pip_audit, by_project_json, unchecked = {}, 0, 0, []
    for dep in deps:
        name, version = dep["name"], dep.get("version") or installed_version(dep["name"])
        if "skip_reason" not in dep:
            by_pip_audit += 1
            if dep.get("vulns"):
                found[f"{name} {version}"] = [v["id"] for v in dep["vulns"]]
            continue
        ids = latest_release_advisories(name, version)
        if ids is None:
            unchecked.append(f"{name} {version}")
        else:
            by_project_json += 1
            if ids:
                found[f"{name} {version}"] = ids
    print(f"audit: {len(deps)} packages; checked by pip-audit {by_pip_audit}, by PyPI's latest-release advisories "
          f"{by_project_json}; not checkable here {len(unchecked)}; vulnerable {len(found)}")
    if unchecked:
        print("  not checkable (older than their latest release, and no per-version lookup): " + ", ".join(unchecked))
    for package, ids in found.items():
        print(f"  VULNERABLE {package}: {', '.join(ids)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
