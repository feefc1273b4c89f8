"""Which Python and which packages a run really uses, and a warning when they are not the
project's.

`flwr run` in simulation hands the run to a local SuperLink that it starts once and that keeps
running, with the environment of its first start: the app code comes from the project being run
(Flower puts it first on `sys.path`), but the interpreter and every installed package come from
the SuperLink's environment, which may be another checkout's venv. Flower does not say which, so
the ServerApp logs it at start, keeps it in the run's status.json, and warns when a package the
project's pyproject.toml pins with `==` has another version here.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (flwr depends on tomli)
    import tomli as tomllib

import edgesplit

APP_DIR = Path(__file__).resolve().parents[1]  # the Flower app: holds fl_app/ and pyproject.toml
_PIN = re.compile(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[[^\]]*\])?\s*==\s*([^;,\s]+)")


def pins(pyproject: Path) -> dict[str, str]:
    """Package -> version of every `==` pin in ``pyproject``'s `[project].dependencies`."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return {m.group(1): m.group(2) for m in map(_PIN.match, dependencies) if m}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def runtime(pyproject: Path = APP_DIR / "pyproject.toml") -> dict[str, Any]:
    """The interpreter, where the app and `edgesplit` were imported from, the installed
    versions of the pinned packages and torch, and the mismatches (see `mismatches`)."""
    pinned = pins(pyproject) if pyproject.is_file() else {}
    return {"python": sys.executable, "app": str(APP_DIR),
            "edgesplit": str(Path(edgesplit.__file__).resolve().parent),
            "versions": {p: _version(p) for p in sorted({*pinned, "torch"})},
            "mismatches": mismatches(pinned)}


def mismatches(pinned: dict[str, str]) -> list[str]:
    """What differs from the project: pinned packages at other versions, and an `edgesplit`
    imported from outside the app (another checkout installed in this environment)."""
    found = [f"{p}=={want} pinned, {have or 'not installed'} in {sys.prefix}"
             for p, want in sorted(pinned.items()) if (have := _version(p)) != want]
    package = Path(edgesplit.__file__).resolve().parent
    if package.parent != APP_DIR:
        found.append(f"edgesplit imported from {package}, not from the app {APP_DIR}")
    return found
