"""docs/results.md, rendered from the committed files under results/.

    python -m experiments.report                 # rewrite docs/results.md
    python -m experiments.report --check         # exit 1 if the committed doc differs
    python -m experiments.report --section NAME  # print one section

The doc is the sections of `SECTIONS` in order. Each is a module of this package with
`render(results: Path) -> str`, the section's markdown, in which every number is read from a
file under `results/` (helpers in `stats.py`): prose may say what a number means, never the
number itself. So the doc cannot drift from its data, and a test fails when it does.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
DOC = ROOT / "docs" / "results.md"

HEADER = """# Results

Rendered by `python -m experiments.report` from the files under `results/` (do not edit by hand:
change the section's module in `experiments/report/` or rerun the experiment). Each section names
the command that rewrites its files.
"""

#: The doc's sections, in order: module names in this package.
SECTIONS: tuple[str, ...] = (
    "seed_allocation",
    "allocation_tradeoffs",
    "allocation_baselines",
    "allocation_cell",
    "seed_allocation_makespan",
    "model_fit",
    "queue_oracle",
    "testbed",
    "verdict",
    "seed_b",
    "privacy",
    "privacy_frontier",
    "training",
    "families",
    "benchmarks",
    "scale",
    "reliability",
    "device_agent",
    "bench_allocation",
    "allocation_scale",
    "reproduce",
)


def render_section(name: str, results: Path = RESULTS) -> str:
    """One section's markdown (ends with a newline)."""
    text = importlib.import_module(f"{__name__}.{name}").render(results)
    return text.rstrip("\n") + "\n"


def render(results: Path = RESULTS) -> str:
    """The whole doc."""
    return "\n".join([HEADER, *(render_section(name, results) for name in SECTIONS)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed doc instead of writing it")
    parser.add_argument("--section", choices=SECTIONS, help="print only this section")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.section:
        sys.stdout.write(render_section(args.section, args.results))
        return 0
    text = render(args.results)
    if args.check:
        if DOC.read_text() != text:
            print(f"{DOC.relative_to(ROOT)} differs from its rendering: run "
                  "`python -m experiments.report`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    return 0
