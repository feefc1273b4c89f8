"""How to rerun everything: the scripts `experiments.run_all` runs, and those it leaves out."""

from __future__ import annotations

from pathlib import Path

from experiments.run_all import SCRIPTS, SKIPPED

from .stats import table


def command(name: str, arguments: list[str]) -> str:
    module = name.split(":")[0]
    return "`" + " ".join(["python -m", f"experiments.{module}", *arguments]).format(
        out="results") + "`"


def rerun(name: str) -> str:
    """The command `run_all` reruns script ``name`` with, in backticks."""
    return command(name, SCRIPTS[name][0])


def render(results: Path) -> str:
    ran = [[name, command(name, full), "yes" if quick else "no (full run only)"]
           for name, (full, quick) in SCRIPTS.items()]
    skipped = [[name, reason] for name, reason in SKIPPED.items()]
    return f"""### Reproduce everything

`python -m experiments.run_all` reruns these scripts into `results/`, one after another, each in
its own process (`--only NAME ...` picks some); `python -m experiments.run_all --quick --out DIR`
runs those with a quick mode on tiny models and small sizes (what CI runs after the tests). The
full sequence takes hours on a 2-core machine and has not been timed end to end; each run writes
the wall time of every script to `run_all.csv`. Then `python -m experiments.report` rewrites this
page from the files.

{table(["name", "full run", "in --quick"], ran)}
Left out, and why:

{table(["script", "reason"], skipped)}"""
