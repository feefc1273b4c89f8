"""The privacy meter end to end on a tiny model: its report is what the run config reads; and
the frontier's join of training runs with the meter's rows."""

import csv
import dataclasses

import pytest
import torch

from edgesplit import framing
from edgesplit.inversion import AttackSettings
from edgesplit.privacy_report import ATTACKS, COLUMNS, read_report, split_floor
from experiments import privacy, privacy_frontier

TINY = dataclasses.replace(privacy.QUICK, max_blocks=40, attack=AttackSettings(width=16, epochs=1),
                           eval_blocks=8, whitebox_iterations=5, gradient_blocks=2)


def test_int8_condition_is_the_wire_codec_round_trip():
    hidden = torch.randn(3, 5, 16) * torch.logspace(0, 3, 16)
    sent = privacy.perturbation("int8", 0.0)(hidden, torch.Generator())
    frame = framing.decode(framing.encode({}, {"hidden": hidden}, torch.int8), 1 << 20)
    assert torch.equal(sent, frame.tensors["hidden"])
    assert privacy.perturbation("float32", 0.0) is None
    with pytest.raises(ValueError, match="wire must be one of"):
        privacy.perturbation("float16", 0.0)


def test_report_rows_columns_and_exact_clean_perplexity(tmp_path):
    conditions = [privacy.Condition(), privacy.Condition(noise_multiplier=0.05)]
    rows = privacy.measure("tiny-llama", conditions, TINY, out=tmp_path / "tiny-llama.csv")
    assert [(r["noise_std"], r["noise_multiplier"], r["split"], r["attack"]) for r in rows] == [
        (c.noise_std, c.noise_multiplier, k, a) for c in conditions for k in (1, 2, 3)
        for a in ATTACKS if a != "gradient" or k < 3]  # the gradient's channel: U-shaped splits
    assert all(list(r) == list(COLUMNS) for r in rows)
    for r in rows:
        assert 0 <= r["token_accuracy"] <= 1
        if r["attack"] == "gradient":
            assert 0 <= r["loss_row_accuracy"] <= 1 and r["rouge_l_f1"] == ""
        else:
            assert r["token_accuracy"] <= r["coverage"] and 0 <= r["rouge_l_f1"] <= 1
    clean = [r["perplexity"] for r in rows if r["noise_std"] == 0 and not r["noise_multiplier"]]
    assert clean == pytest.approx([clean[0]] * len(clean), rel=1e-4)  # the split is exact

    report = read_report(tmp_path / "tiny-llama.csv")  # written as the rows came
    assert len(report) == len(rows)
    loosest = max(r.token_accuracy for r in report if r.noise_std == 0 and not r.noise_multiplier)
    assert split_floor(report, "tiny-llama", "float32", 0.0, loosest, range(1, 3)) == 1
    privacy.main(["--plot-only", "--model", "tiny-llama", "--out", str(tmp_path)])
    assert (tmp_path / "tiny-llama.png").stat().st_size > 0


def test_splits_subset_then_resume_adds_only_the_missing_rows(tmp_path, monkeypatch):
    """--splits measures only those splits; --resume keeps the rows already there, so a costly
    condition can be added on a subset of a model's splits."""
    monkeypatch.setattr(privacy, "QUICK", TINY)
    quick = ["--quick", "--out", str(tmp_path), "--noise", "--dp", "--no-int8",
             "--attacks", "learned"]
    privacy.main([*quick, "--splits", "2"])
    privacy.main([*quick, "--resume", "--splits", "1", "2"])
    with (tmp_path / "tiny-llama.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["attack"], r["split"]) for r in rows] == [("learned", "2"), ("learned", "1")]
    with pytest.raises(ValueError, match="splits must be"):
        privacy.main([*quick, "--splits", "4"])  # tiny-llama: 4 layers


def run(split, epsilon, z, ppl):
    return {"model": "m", "split": split, "epsilon": epsilon, "noise_multiplier": z,
            "epsilon_spent": epsilon, "heldout_ppl": ppl, "base_ppl": 200.0}


def leak(split, z, attack, accuracy):
    return {"split": split, "wire": "float32", "noise_std": 0.0, "noise_multiplier": z,
            "attack": attack, "token_accuracy": accuracy,
            "loss_row_accuracy": 0.9 if attack == "gradient" else ""}


def test_frontier_joins_runs_with_the_strongest_attack_at_their_noise():
    training = [run(1, 0.0, 0.0, 100.0), run(1, 1e4, 0.02, 120.0), run(1, 8.0, 0.9, 190.0)]
    leakage = [leak(1, z, a, acc) for z, accs in ((0.0, (0.9, 0.5, 0.95)),
                                                  (0.02, (0.15, 0.05, 0.18)),
                                                  (0.9, (0.05, 0.0, 0.01)))
               for a, acc in zip(ATTACKS, accs, strict=True)]
    off, mid, strict = privacy_frontier.frontier(training, leakage)
    assert (off["strongest_attack"], off["strongest_recovery"]) == ("gradient", 0.95)
    assert off["ppl_cost"] == 0 and not off["goal_met"]
    assert (mid["strongest_attack"], mid["strongest_recovery"]) == ("gradient", 0.18)
    assert mid["ppl_cost"] == pytest.approx(0.2) and mid["goal_met"]  # <= 0.2 at <= 25 %
    assert strict["strongest_recovery"] == 0.05 and strict["ppl_cost"] == pytest.approx(0.9)
    assert not strict["goal_met"] and strict["loss_row_accuracy"] == 0.9


def test_the_report_section_renders_the_frontier_from_its_files(tmp_path):
    from experiments.plotting import write_csv
    from experiments.report import privacy_frontier as section

    folder = tmp_path / "privacy" / "frontier"
    folder.mkdir(parents=True)
    training = [{**run(1, e, z, p), "clients": 4, "rounds": 3, "local_steps": 4, "batch_size": 4,
                 "eval_tokens": 2000} for e, z, p in ((0.0, 0.0, 100.0), (1e4, 0.02, 130.0))]
    leakage = [leak(1, z, a, acc) | {"train_tokens": 9, "eval_tokens": 5, "width": 7,
                                     "epochs": 2}
               for z, accs in ((0.0, (0.9, 0.5, 0.95)), (0.02, (0.15, 0.05, 0.18)))
               for a, acc in zip(ATTACKS, accs, strict=True)]
    write_csv(training, folder / "training.csv")
    write_csv(leakage, folder / "m.csv")
    write_csv(privacy_frontier.frontier(training, leakage), folder / "frontier.csv")
    text = section.render(tmp_path)
    assert "| 1 | off |" in text and "| 1 | 10000 |" in text
    assert "No measured setting meets the goal" in text
    assert "costs 30.0 % in held-out perplexity" in text  # the cheapest private point
