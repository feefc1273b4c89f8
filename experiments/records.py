"""Run records kept under results/ name no machine's folders.

A run's own `config.json` and `status.json` hold absolute paths (its output folder, the
interpreter, the app, the base model): right for the user who loads the adapter from them, noise
in a committed record, which should read the same whoever made it. `portable` rewrites them:
the project's folder becomes a relative path, a temporary folder `<scratch>`, the home folder
`~`. Every experiment that keeps a run's records in results/ goes through `keep_run` (copying
from a scratch folder) or `make_portable` (a run written there directly).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
#: The run records rewritten by `keep_run` and `make_portable` (logs and adapters are kept as
#: they are: a log is what the process printed, an adapter's base-model path is for loading).
RECORDS = ("config.json", "status.json", "summary.json")


def _rules() -> list[tuple[re.Pattern[str], str]]:
    project, end = re.escape(str(PROJECT)), r"(?=[\s\"']|$)"
    scratch = re.escape(str(Path(tempfile.gettempdir()).resolve()))
    return [(re.compile(project + "/"), ""), (re.compile(project + end), "."),
            (re.compile(scratch + r"/[^/\s\"']+"), "<scratch>"),
            (re.compile(re.escape(str(Path.home())) + r"(?=/|[\s\"']|$)"), "~")]


def portable(value: Any) -> Any:
    """`value` (a JSON value) with every path inside the project made relative to it, every
    temporary folder `<scratch>` and the home folder `~`, also inside longer strings."""
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item) for item in value]
    if isinstance(value, str):
        for pattern, replacement in _rules():
            value = pattern.sub(replacement, value)
    return value


def write_portable(source: Path, target: Path) -> None:
    """The JSON file `source` written to `target` with `portable` paths (indent 2, as runs
    write them)."""
    data = portable(json.loads(source.read_text()))
    target.write_text(json.dumps(data, indent=2) + "\n")


def keep_run(folder: Path, out: Path, names: Iterable[str]) -> None:
    """Copy the files and folders `names` of the run folder `folder` into `out`, the run
    records among them (`RECORDS`) with portable paths."""
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        source, target = folder / name, out / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif name in RECORDS:
            write_portable(source, target)
        else:
            shutil.copy(source, target)


def make_portable(folder: Path) -> None:
    """Rewrite every run record (`RECORDS`, or `*.status.json`) under `folder` in place."""
    for path in sorted(folder.rglob("*.json")):
        if path.name in RECORDS or path.name.endswith(".status.json"):
            write_portable(path, path)
