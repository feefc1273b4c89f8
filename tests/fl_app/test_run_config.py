"""The top-level check of a run config: names against their registries, cross-package rules."""

import csv
import re

import pytest

from edgesplit.privacy_report import COLUMNS
from fl_app.run_config import check_against_model, lowest_split, parse
from harness.configs import tiny_run_config
from harness.inprocess import run_in_process


@pytest.mark.parametrize("key, value, message", [
    ("train.optimizer", "adam", "config train.optimizer = 'adam': one of"),
    ("allocation.method", "magic", "config allocation.method = 'magic': one of"),
    ("data.partitioning", "by-play", "config data.partitioning = 'by-play': one of"),
    ("train.aggregation", "mean", "config train.aggregation = 'mean': one of"),
    ("stream.transport", "udp", "config stream.transport = 'udp': one of"),
    ("stream.dtype", "float64", "config stream.dtype = 'float64': one of"),
    ("channel.kind", "fog", "config channel.kind = 'fog': one of"),
    ("model.base-dtype", "int8", "config model.base-dtype = 'int8': one of"),
    ("compute.server-device", "gpu0", "config compute.server-device = 'gpu0': one of auto, cpu, "
                                      "cuda"),
    ("compute.client-device", "tpu",
     "config compute.client-device = 'tpu': one of auto, cpu, cuda"),
    ("train.learning-rate", -0.1, "config train.learning-rate = -0.1: must be > 0"),  # ranges too
    ("allocation.objective-weights", "1,0", "config allocation.objective-weights = '1,0': three "
                                            "finite weights"),
    ("allocation.objective-weights", "0,0,0", "config allocation.objective-weights = '0,0,0': "
                                              "three finite weights"),
    ("allocation.objective-weights", "1,-1,0", "config allocation.objective-weights = '1,-1,0': "
                                               "three finite"),
])
def test_a_wrong_name_gets_an_error_naming_the_key_and_the_choices(key, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse({key: value})


def test_a_setting_the_allocator_ignores_does_not_stop_the_run():
    """`split` only matters to fixed and heterogeneous-fixed: fp runs with any value."""
    check_against_model(parse({"allocation.method": "fp", "allocation.fixed-split": 4}),
                        num_layers=4)
    check_against_model(parse({"allocation.method": "fixed", "allocation.fixed-split": 3}),
                        num_layers=4)
    for allocator in ("fixed", "heterogeneous-fixed"):
        with pytest.raises(ValueError, match=re.escape(
                f"config allocation.fixed-split = 4: allocator {allocator} uses it: split 4 "
                "outside [1, 3] for a 4-layer model")):
            check_against_model(parse({"allocation.method": allocator,
                                       "allocation.fixed-split": 4}), num_layers=4)


def test_u_shaped_rules_need_the_stream_and_room_on_the_server():
    with pytest.raises(ValueError, match="privacy.device-tail-layers.*stream"):
        parse({"stream.transport": "flower", "privacy.device-tail-layers": 1})
    settings = parse({"privacy.device-tail-layers": 3, "allocation.method": "fp"})
    with pytest.raises(ValueError, match="privacy.device-tail-layers = 3: at most 2"):
        check_against_model(settings, num_layers=4)
    with pytest.raises(ValueError, match=re.escape("split 3 outside [1, 2] for a 4-layer model "
                                                   "with 1 tail layers on the device")):
        check_against_model(parse({"privacy.device-tail-layers": 1, "allocation.method": "fixed",
                                   "allocation.fixed-split": 3}),
                            num_layers=4)


def write_report(path, recovery, model="tiny-llama", wire="float32", noise=0.0):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for split, acc in enumerate(recovery, start=1):
            writer.writerow({c: 0 for c in COLUMNS} | {
                "model": model, "split": split, "wire": wire, "noise_std": noise,
                "token_accuracy": acc, "rouge_l_f1": acc})
    return str(path)


def test_the_split_floor_from_min_device_layers_and_from_a_leakage_budget(tmp_path):
    assert lowest_split(parse({}), num_layers=4) == 1
    assert lowest_split(parse({"privacy.min-device-layers": 2}), num_layers=4) == 2
    with pytest.raises(ValueError, match=re.escape(
            "config privacy.min-device-layers = 3: leaves no valid split: a 4-layer model splits "
            "in [1, 2]")):
        lowest_split(parse({"privacy.min-device-layers": 3, "privacy.device-tail-layers": 1}),
                     num_layers=4)
    report = write_report(tmp_path / "r.csv", [0.9, 0.4, 0.3])
    budget = {"model.name": "tiny-llama", "privacy.device-tail-layers": 1, "privacy.report": report}
    assert lowest_split(parse({**budget, "privacy.max-token-recovery": 0.5}), num_layers=5) == 2
    # The larger of the two floors wins.
    assert lowest_split(parse({**budget, "privacy.max-token-recovery": 0.5,
                               "privacy.min-device-layers": 3}),
                        num_layers=5) == 3
    with pytest.raises(ValueError, match="config privacy.max-token-recovery = 0.2: no split of "
                                         "tiny-llama"):
        lowest_split(parse({**budget, "privacy.max-token-recovery": 0.2}), num_layers=5)
    with pytest.raises(ValueError, match="config privacy.max-token-recovery = 0.5: the privacy "
                                         "report has no int8 rows"):  # int8 activations: int8 rows
        lowest_split(parse({**budget, "privacy.max-token-recovery": 0.5, "stream.dtype": "int8"}),
                     num_layers=5)
    with pytest.raises(ValueError, match="config privacy.report = .*absent.csv.*cannot read"):
        lowest_split(parse({**budget, "privacy.max-token-recovery": 0.5,
                            "privacy.report": str(tmp_path / "absent.csv")}), num_layers=5)


def test_a_leakage_budget_needs_a_report_and_a_u_shaped_split():
    with pytest.raises(ValueError, match="config privacy.max-token-recovery = 0.5: a leakage "
                                         "budget needs privacy.device-tail-layers >= 1"):
        parse({"privacy.max-token-recovery": 0.5, "privacy.report": "r.csv"})
    with pytest.raises(ValueError, match="config privacy.report = '': privacy.max-token-recovery < "
                                         "1"):
        parse({"privacy.max-token-recovery": 0.5, "privacy.device-tail-layers": 1})
    with pytest.raises(ValueError, match="config privacy.max-token-recovery = 1.5: must be in"):
        parse({"privacy.max-token-recovery": 1.5})
    with pytest.raises(ValueError,
                       match="config privacy.activation-noise-std = -0.1: must be >= 0"):
        parse({"privacy.activation-noise-std": -0.1})


def test_a_run_with_a_leakage_budget_keeps_every_client_at_its_floor(tmp_path):
    """The ServerApp wires the budget's floor into the allocator: `random` would pick splits 1
    and 2, the budget allows split 2 only (U-shaped, tiny-llama: splits 1-2)."""
    report = write_report(tmp_path / "r.csv", [0.9, 0.4, 0.3])
    config = tiny_run_config(allocator="random", device_tail_layers=1, transport="stream",
                             max_token_recovery=0.5, privacy_report=report,
                             num_server_rounds=2, output_dir=str(tmp_path), run_name="floor")
    _, _, rows = run_in_process(config, num_nodes=4)
    assert [c["split"] for r in rows for c in r["clients"]] == [2] * 8


def test_objective_weights_reach_the_allocator():
    from edgesplit.settings import objective_weights

    assert objective_weights(parse({
        "allocation.objective-weights": "1,0,0.5"}).objective_weights) == (
        1.0, 0.0, 0.5)
    assert objective_weights(parse({}).objective_weights) == (1.0, 0.0, 0.0)
