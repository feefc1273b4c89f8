"""Oracle 9: docs/results.md is what `python -m experiments.report` renders from results/, every
section renders, every section module is in the doc, and run_all accounts for every experiment
script the doc names."""

import ast
import math
from pathlib import Path

import pytest

from experiments import report
from experiments.report import stats
from experiments.run_all import SCRIPTS, SKIPPED

REPORT_DIR = Path(report.__file__).parent
HELPERS = {"__init__", "__main__", "stats"}


@pytest.mark.parametrize("name", report.SECTIONS)
def test_every_section_renders_from_the_committed_results(name):
    text = report.render_section(name)
    assert text.startswith("#") and text.endswith("\n")
    assert "{" not in text.replace("{out}", ""), "an f-string placeholder was left unfilled"


def test_the_committed_doc_is_the_rendering():
    committed = report.DOC.read_text()
    rendered = report.render()
    assert committed == rendered, (
        "docs/results.md differs from its rendering: run `python -m experiments.report` "
        "(and commit the doc with the results it reads)")


def test_every_section_module_is_in_the_doc():
    modules = {p.stem for p in REPORT_DIR.glob("*.py")} - HELPERS
    assert modules == set(report.SECTIONS)
    assert len(report.SECTIONS) == len(set(report.SECTIONS))


def test_a_missing_results_file_fails_the_section_loudly(tmp_path):
    with pytest.raises(FileNotFoundError):
        report.render_section(report.SECTIONS[0], tmp_path)


def experiment_scripts() -> set[str]:
    """Modules of experiments/ with a `main` function."""
    found = set()
    for path in (REPORT_DIR.parent).glob("*.py"):
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            found.add(path.stem)
    return found - {"run_all"}


def test_run_all_runs_or_names_a_reason_for_every_experiment_script():
    ran = {name.split(":")[0] for name in SCRIPTS}
    assert not ran & set(SKIPPED)
    assert experiment_scripts() == ran | set(SKIPPED)
    assert all(reason.strip() for reason in SKIPPED.values())


def test_the_number_helpers():
    mean, half = stats.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert stats.fmt_ci([1.0, 2.0, 3.0]) == "2.0 ± 2.5 (n=3)"
    assert stats.fmt_ci([0.5], 2, " s") == "0.50 s (single run)"
    assert stats.num(11789.3) == "1.18e4" and stats.num(0.0342, 2) == "0.034"
    assert stats.pct(-0.003) == "0%" and stats.pct(0.125, 1, sign=True) == "+12.5%"
    assert stats.spread([3.0, 1.0]) == "1-3" and stats.spread([-1.0, 2.0]) == "-1 to 2"
    assert stats.spread([2.0, 2.0]) == "2"
    assert stats.median([3.0, 1.0, 2.0, 10.0]) == 2.5
