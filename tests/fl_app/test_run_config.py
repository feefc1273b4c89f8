"""The top-level check of a run config: names against their registries, cross-package rules."""

import re

import pytest

from fl_app.run_config import check_against_model, parse


@pytest.mark.parametrize("key, value, message", [
    ("optimizer", "adam", "config optimizer = 'adam': one of"),
    ("allocator", "magic", "config allocator = 'magic': one of"),
    ("partitioning", "by-play", "config partitioning = 'by-play': one of"),
    ("aggregation", "mean", "config aggregation = 'mean': one of"),
    ("transport", "udp", "config transport = 'udp': one of"),
    ("stream-dtype", "float64", "config stream-dtype = 'float64': one of"),
    ("channel", "fog", "config channel = 'fog': one of"),
    ("base-dtype", "int8", "config base-dtype = 'int8': one of"),
    ("server-device", "gpu0", "config server-device = 'gpu0': one of auto, cpu, cuda"),
    ("client-device", "tpu", "config client-device = 'tpu': one of auto, cpu, cuda"),
    ("learning-rate", -0.1, "config learning-rate = -0.1: must be > 0"),  # ranges too
    ("objective-weights", "1,0", "config objective-weights = '1,0': three finite weights"),
    ("objective-weights", "0,0,0", "config objective-weights = '0,0,0': three finite weights"),
    ("objective-weights", "1,-1,0", "config objective-weights = '1,-1,0': three finite"),
])
def test_a_wrong_name_gets_an_error_naming_the_key_and_the_choices(key, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse({key: value})


def test_a_setting_the_allocator_ignores_does_not_stop_the_run():
    """`split` only matters to fixed and heterogeneous-fixed: fp runs with any value."""
    check_against_model(parse({"allocator": "fp", "split": 4}), num_layers=4)
    check_against_model(parse({"allocator": "fixed", "split": 3}), num_layers=4)
    for allocator in ("fixed", "heterogeneous-fixed"):
        with pytest.raises(ValueError, match=re.escape(
                f"config split = 4: allocator {allocator} uses it: split 4 outside [1, 3] "
                "for a 4-layer model")):
            check_against_model(parse({"allocator": allocator, "split": 4}), num_layers=4)


def test_u_shaped_rules_need_the_stream_and_room_on_the_server():
    with pytest.raises(ValueError, match="device-tail-layers.*stream"):
        parse({"transport": "flower", "device-tail-layers": 1})
    settings = parse({"device-tail-layers": 3, "allocator": "fp"})
    with pytest.raises(ValueError, match="device-tail-layers = 3: at most 2"):
        check_against_model(settings, num_layers=4)
    with pytest.raises(ValueError, match=re.escape("split 3 outside [1, 2] for a 4-layer model "
                                                   "with 1 tail layers on the device")):
        check_against_model(parse({"device-tail-layers": 1, "allocator": "fixed", "split": 3}),
                            num_layers=4)


def test_objective_weights_reach_the_allocator():
    from edgesplit.settings import objective_weights

    assert objective_weights(parse({"objective-weights": "1,0,0.5"}).objective_weights) == (
        1.0, 0.0, 0.5)
    assert objective_weights(parse({}).objective_weights) == (1.0, 1.0, 1.0)
