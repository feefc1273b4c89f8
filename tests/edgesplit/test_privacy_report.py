"""The split floor a leakage budget reads from a privacy report."""

import csv

import pytest

from edgesplit.privacy_report import (
    COLUMNS,
    REQUIRED,
    LeakageRow,
    read_report,
    report_wire,
    split_floor,
)

SPLITS = range(1, 6)


def rows(recovery, wire="float32", noise=0.0, model="m", attack="learned", multiplier=0.0):
    return [LeakageRow(model, k, wire, noise, acc, acc, attack, multiplier)
            for k, acc in zip(SPLITS, recovery, strict=True)]


def test_floor_is_the_shallowest_split_from_which_every_deeper_one_is_within_budget():
    report = rows([0.9, 0.7, 0.5, 0.4, 0.3])
    assert split_floor(report, "m", "float32", 0.0, 0.5, SPLITS) == 3
    assert split_floor(report, "m", "float32", 0.0, 0.95, SPLITS) == 1
    # Recovery rises again at split 4: split 3 alone is within budget but 4 is not.
    bumpy = rows([0.9, 0.7, 0.5, 0.6, 0.3])
    assert split_floor(bumpy, "m", "float32", 0.0, 0.5, SPLITS) == 5


def test_rows_of_the_runs_wire_and_the_largest_noise_not_above_its_own():
    report = (rows([0.9] * 5) + rows([0.9, 0.9, 0.2, 0.2, 0.2], wire="int8")
              + rows([0.9, 0.3, 0.3, 0.3, 0.3], noise=0.5) + rows([0.1] * 5, noise=2.0)
              + rows([0.0] * 5, model="other"))
    assert split_floor(report, "m", "int8", 0.0, 0.5, SPLITS) == 3
    assert split_floor(report, "m", "float32", 0.7, 0.5, SPLITS) == 2  # judged at 0.5
    assert split_floor(report, "m", "float32", 2.0, 0.5, SPLITS) == 1
    with pytest.raises(ValueError, match="no split of m keeps"):
        split_floor(report, "m", "float32", 0.4, 0.5, SPLITS)  # judged at 0: none qualifies


def test_the_strongest_attack_at_each_split_sets_the_floor():
    report = (rows([0.9, 0.7, 0.5, 0.4, 0.3]) + rows([0.2, 0.2, 0.6, 0.2, 0.2], attack="gradient")
              + rows([0.0] * 5, attack="white-box", multiplier=0.1))  # DP rows: not the floor's
    assert split_floor(report, "m", "float32", 0.0, 0.5, SPLITS) == 4
    with pytest.raises(ValueError, match=r"lacks splits \[5\] .* for the gradient attack"):
        split_floor(report[:-6], "m", "float32", 0.0, 0.5, SPLITS)


def test_a_report_that_cannot_answer_is_refused():
    with pytest.raises(ValueError, match="no float32 rows for model 'x'"):
        split_floor(rows([0.1] * 5), "x", "float32", 0.0, 0.5, SPLITS)
    with pytest.raises(ValueError, match=r"lacks splits \[6, 7\]"):
        split_floor(rows([0.1] * 5), "m", "float32", 0.0, 0.5, range(1, 8))
    with pytest.raises(ValueError, match="no float32 rows .* at a noise std <= 0.1"):
        split_floor(rows([0.1] * 5, noise=0.5), "m", "float32", 0.1, 0.5, SPLITS)


def test_read_report_round_trips_and_names_what_is_wrong(tmp_path):
    path = tmp_path / "report.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerow({c: 0 for c in COLUMNS} | {"model": "m", "split": 2, "wire": "int8",
                                                    "noise_std": 0.5, "token_accuracy": 0.25,
                                                    "rouge_l_f1": 0.125, "attack": "gradient",
                                                    "noise_multiplier": 0.01})
    assert read_report(path) == [LeakageRow("m", 2, "int8", 0.5, 0.25, 0.125, "gradient", 0.01)]
    first = tmp_path / "first.csv"  # a report of the first meter: no attack column
    with first.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=REQUIRED)
        writer.writeheader()
        writer.writerow({c: 0 for c in REQUIRED} | {"model": "m", "split": 1, "wire": "float32",
                                                     "token_accuracy": 0.5, "rouge_l_f1": 0.5})
    assert read_report(first) == [LeakageRow("m", 1, "float32", 0.0, 0.5, 0.5)]
    with pytest.raises(ValueError, match="cannot read the privacy report"):
        read_report(tmp_path / "absent.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a privacy report"):
        read_report(tmp_path / "other.csv")


def test_report_wire():
    assert [report_wire(w) for w in ("float32", "float16", "bfloat16", "int8")] == [
        "float32", "float32", "float32", "int8"]
