"""The privacy meter end to end on a tiny model: its report is what the run config reads."""

import csv

import pytest
import torch

from edgesplit import framing
from edgesplit.inversion import AttackSettings
from edgesplit.privacy_report import COLUMNS, read_report, split_floor
from experiments import privacy


def test_int8_condition_is_the_wire_codec_round_trip():
    hidden = torch.randn(3, 5, 16) * torch.logspace(0, 3, 16)
    sent = privacy.perturbation("int8", 0.0)(hidden, torch.Generator())
    frame = framing.decode(framing.encode({}, {"hidden": hidden}, torch.int8), 1 << 20)
    assert torch.equal(sent, frame.tensors["hidden"])
    assert privacy.perturbation("float32", 0.0) is None
    with pytest.raises(ValueError, match="wire must be one of"):
        privacy.perturbation("float16", 0.0)


def test_report_rows_columns_and_exact_clean_perplexity(tmp_path):
    budget = privacy.Budget(max_blocks=40, attack=AttackSettings(width=16, epochs=1),
                            ppl_blocks=2)
    rows = privacy.measure("tiny-llama", [1.0], budget, out=tmp_path / "tiny-llama.csv")
    assert [(r["wire"], r["noise_std"], r["split"]) for r in rows] == [
        (wire, noise, k) for wire, noise in (("float32", 0.0), ("float32", 1.0), ("int8", 0.0))
        for k in (1, 2, 3)]
    assert all(list(r) == list(COLUMNS) for r in rows)
    assert all(0 <= r["token_accuracy"] <= r["coverage"] <= 1 and 0 <= r["rouge_l_f1"] <= 1
               for r in rows)
    clean = [r["perplexity"] for r in rows if r["wire"] == "float32" and r["noise_std"] == 0]
    assert clean == pytest.approx([clean[0]] * 3, rel=1e-4)  # the split is exact (oracle 1)

    report = read_report(tmp_path / "tiny-llama.csv")  # written as the rows came
    assert len(report) == len(rows)
    loosest = max(r.token_accuracy for r in report if r.wire == "float32" and r.noise_std == 0)
    assert split_floor(report, "tiny-llama", "float32", 0.0, loosest, range(1, 4)) == 1
    privacy.main(["--plot-only", "--model", "tiny-llama", "--out", str(tmp_path)])
    assert (tmp_path / "tiny-llama.png").stat().st_size > 0



def test_splits_subset_then_resume_adds_only_the_missing_rows(tmp_path):
    """--splits measures only those splits; --resume keeps the rows already there, so a costly
    condition can be added on a subset of a model's splits."""
    quick = ["--quick", "--out", str(tmp_path), "--noise"]  # tiny-llama, no noise level
    privacy.main([*quick, "--splits", "3", "1"])
    privacy.main([*quick, "--resume", "--splits", "2", "3"])
    with (tmp_path / "tiny-llama.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["wire"], r["split"]) for r in rows] == [
        ("float32", "1"), ("float32", "3"), ("int8", "1"), ("int8", "3"),
        ("float32", "2"), ("int8", "2")]
    with pytest.raises(ValueError, match="splits must be"):
        privacy.main([*quick, "--splits", "4"])
