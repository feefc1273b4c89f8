"""The family sweep: each family's verdict as a user meets it, each in its own child process;
a crash or an inexact split fails the sweep; and docs/models.md names what the table found."""

import csv
import re
from pathlib import Path

import pytest

from experiments import families

ROOT = Path(__file__).resolve().parents[2]


def table(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / "families.csv").open() as f:
        return {row["family"]: row for row in csv.DictReader(f)}


def test_verdicts_exact_refused_from_config_and_after_loading(tmp_path):
    assert families.main(["--only", "falcon-alibi", "mamba", "openai-gpt",
                          "--out", str(tmp_path)]) == 0
    rows = table(tmp_path)
    assert rows["falcon-alibi"]["status"] == "exact"
    assert float(rows["falcon-alibi"]["grad_gap"]) < families.EXACT
    assert int(rows["falcon-alibi"]["cuts"]) == 8  # 5 head/tail + 3 U-shaped at 4 layers
    assert rows["mamba"]["status"] == "refused" and "state-space" in rows["mamba"]["reason"]
    assert "differ from the model's own forward" in rows["openai-gpt"]["reason"]
    assert "transformers" in (tmp_path / "families_versions.txt").read_text()


def test_a_failing_oracle_is_a_crash_and_fails_the_sweep(tmp_path, monkeypatch):
    def broken(model):
        raise RuntimeError("boom")

    monkeypatch.setattr(families, "cut_errors", broken)  # the forked child inherits it
    assert families.main(["--only", "gptj", "--out", str(tmp_path)]) == 1
    row = table(tmp_path)["gptj"]
    assert row["status"] == "crash" and "RuntimeError: boom" in row["reason"]


def test_a_gap_at_the_bound_is_inexact_and_fails_the_sweep(tmp_path, monkeypatch):
    monkeypatch.setattr(families, "cut_errors", lambda model: {
        (1,): {"logits": 0.0, "loss": 0.0, "grad": 0.0},
        (2,): {"logits": families.EXACT, "loss": 0.0, "grad": 0.0}})
    assert families.main(["--only", "gptj", "--out", str(tmp_path)]) == 1
    row = table(tmp_path)["gptj"]
    assert row["status"] == "inexact" and row["reason"].endswith("(2,)")


def test_a_child_that_never_answers_is_killed_and_left_untested(tmp_path, monkeypatch):
    monkeypatch.setattr(families, "check", lambda *args: __import__("time").sleep(60))
    assert families.main(["--only", "gptj", "--timeout-s", "2", "--out", str(tmp_path)]) == 0
    row = table(tmp_path)["gptj"]
    assert row["status"] == "untested" and "no answer in 2 s" in row["reason"]


def test_unknown_family_names_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        families.main(["--only", "no-such-family", "--out", str(tmp_path)])


def listed(section: str) -> set[str]:
    """The model types docs/models.md lists under a heading (backquoted names)."""
    text = (ROOT / "docs" / "models.md").read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([\w.-]+)`", body))


def test_docs_list_the_verdicts_of_the_committed_table():
    rows = table(ROOT / "results")
    exact = {r["model_type"] for r in rows.values() if r["status"] == "exact"}
    assert listed("Split exactly") == exact
    for section, status in (("Refused", "refused"), ("Not checked", "untested")):
        assert listed(section) == {r["family"] for r in rows.values() if r["status"] == status}
    assert not any(r["status"] in ("crash", "inexact") for r in rows.values())


def test_report_section_reads_every_verdict_from_the_table(tmp_path):
    from experiments.report import families as section

    rows = [{"family": "gptj", "model_type": "gptj", "status": "exact", "reason": "",
             "cuts": "8", "logits_gap": "0", "loss_gap": "0", "grad_gap": "0", "seconds": "1"},
            {"family": "mamba", "model_type": "mamba", "status": "refused",
             "reason": "mamba has a | pipe", "cuts": "", "logits_gap": "", "loss_gap": "",
             "grad_gap": "", "seconds": "1"},
            {"family": "x", "model_type": "x", "status": "crash", "reason": "TypeError: y",
             "cuts": "", "logits_gap": "", "loss_gap": "", "grad_gap": "", "seconds": "1"}]
    with (tmp_path / "families.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "families_versions.txt").write_text("transformers 9.9\n")
    text = section.render(tmp_path)
    assert "| 3 | 1 | 1 | 0 | 1 | 0 |" in text and "transformers 9.9" in text
    assert "| gptj | gptj | 8 | 0 | 0 | 0 |" in text
    assert "mamba has a \\| pipe" in text and "### Crashed (a bug)" in text
    assert "### Untested" not in text
    assert "| 191 |" in section.render(ROOT / "results")  # the committed table renders
