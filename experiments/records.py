"""Run records kept under results/ name no machine's folders.

A run's own `config.json` and `status.json` hold absolute paths (its output folder, the
interpreter, the app, the base model): right for the user who loads the adapter from them, noise
in a committed record, which should read the same whoever made it. `portable` rewrites them:
the project's folder (or the checkout the run was made in, recognised by its `results/` or
`experiments/` folder) becomes a relative path, a temporary folder `<scratch>`, the home folder
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
_END = r"(?=[\s\"']|$)"
#: A path with a `results` or `experiments` folder in it lies in a checkout of this project,
#: the folder above it (a record made in another worktree or clone names that one).
_CHECKOUT = re.compile(r"(?<![^\s\"'=])(/[^\s\"']*?)/(?:results|experiments)(?=/|[\s\"']|$)")


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [value] if isinstance(value, str) else []


def _rules(strings: list[str]) -> list[tuple[re.Pattern[str], str]]:
    """Project folders (this checkout's, then any other the strings name, deepest first) made
    relative, then the temporary folder and the home folder."""
    others = {m.group(1) for s in strings for m in _CHECKOUT.finditer(s)} - {str(PROJECT)}
    rules = []
    for root in [str(PROJECT), *sorted(others, key=len, reverse=True)]:
        rules += [(re.compile(re.escape(root) + "/"), ""), (re.compile(re.escape(root) + _END),
                                                            ".")]
    scratch = re.escape(str(Path(tempfile.gettempdir()).resolve()))
    return [*rules, (re.compile(scratch + r"/[^/\s\"']+"), "<scratch>"),
            (re.compile(re.escape(str(Path.home())) + r"(?=/|[\s\"']|$)"), "~")]


def _rewrite(value: Any, rules: list[tuple[re.Pattern[str], str]]) -> Any:
    if isinstance(value, dict):
        return {key: _rewrite(item, rules) for key, item in value.items()}
    if isinstance(value, list):
        return [_rewrite(item, rules) for item in value]
    if isinstance(value, str):
        for pattern, replacement in rules:
            value = pattern.sub(replacement, value)
    return value


def portable(value: Any) -> Any:
    """`value` (a JSON value) with every path inside the project, or inside another checkout
    of it that the value names, made relative to it, every temporary folder `<scratch>` and the
    home folder `~`, also inside longer strings."""
    return _rewrite(value, _rules(_strings(value)))


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
