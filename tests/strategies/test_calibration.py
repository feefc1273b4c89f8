"""Calibration by measurement, and modelled against measured time in every round's metrics."""

import math
import re

import pytest
from flwr.app import ConfigRecord

from allocation.measurement import Measured, fit_measured, time_interleaved
from edgesplit.protocol import CALIBRATION, PROFILE, QUERY_PROFILE
from harness.configs import tiny_run_config
from harness.inprocess import run_in_process


def run(tmp_path, name="run", fault=None, grid_hook=None, **overrides):
    config = tiny_run_config(allocator="fp", calibration="measure", calibration_steps=2,
                             num_server_rounds=2, output_dir=str(tmp_path), run_name=name,
                             keys=overrides)
    return run_in_process(config, 4, fault=fault, grid_hook=grid_hook)


def test_fit_measured_is_the_line_through_two_sizes_and_survives_noise():
    assert fit_measured((1, 4), (0.3, 0.9)) == Measured(pytest.approx(0.2), pytest.approx(0.1))
    assert fit_measured((1, 5), (1.0, 0.8)) == Measured(0.16, 0.0)  # slope < 0: mean per layer


def test_time_interleaved_alternates_and_drops_the_warm_up():
    calls = []
    medians = time_interleaved([lambda: calls.append("a"), lambda: calls.append("b")], 3)
    assert calls == ["a", "b"] * 4 and len(medians) == 2 and min(medians) >= 0


def test_devices_and_server_are_measured_once_and_every_client_is_compared(tmp_path):
    asked = []

    def count(msg):
        if msg.metadata.message_type == QUERY_PROFILE and CALIBRATION in msg.content:
            asked.append(msg.metadata.dst_node_id)

    _, _, rows = run(tmp_path, fault=count)
    assert sorted(asked) == [1, 2, 3, 4]  # once each, in round 1, in its profile query
    first = rows[0]["calibration"]
    assert sorted(first["devices"]) == ["1", "2", "3", "4"] and not first["failures"]
    assert first["server"]["layer_s"] > 0 and first["server"]["concurrency"] == 1.0
    assert "calibration" not in rows[1]
    for row in rows:
        for c in row["clients"]:
            assert c["measured_device_s"] > 0 and c["measured_server_s"] > 0
            assert c["measured_s"] >= c["measured_device_s"] + c["measured_server_s"] - 1e-9
            assert c["modelled_s"] == pytest.approx(sum(
                c[f"modelled_{p}_s"] for p in ("device", "transfer", "server", "queue")))
            assert c["server_share"] > 0 and c["device_class"]
        assert row["modelled_over_measured_device_median"] > 0


def test_tracking_keeps_each_clients_start_for_a_fifo_servers_model(tmp_path):
    """Under a first-come-first-served server's model the allocator's queue is the FIFO one,
    and every client's start offset (round message to first step) is measured and kept."""
    config = tiny_run_config(allocator="fp", calibration="track", calibration_steps=2,
                             num_server_rounds=2, server_queue="fifo",
                             output_dir=str(tmp_path), run_name="fifo")
    strategy, _, rows = run_in_process(config, 3)
    for row in rows:
        for c in row["clients"]:
            assert 0 < c["measured_start_s"] < c["measured_s"]
            assert c["modelled_queue_s"] == pytest.approx(c["modelled_fifo_queue_s"])
    last = {str(c["node"]): c["measured_start_s"] for c in rows[-1]["clients"]}
    assert {str(n): s for n, s in strategy.calibrator.starts.items()} == last


@pytest.mark.parametrize("how,reason", [
    ("error", "calibration: RuntimeError: ValueError: .*'no-such-optimizer'"),
    ("nan", r"layer-s = nan is not a credible number of seconds"),
    ("missing", "calibration: KeyError"),
])
def test_a_bad_calibration_reply_keeps_the_catalogue_figures(tmp_path, how, reason):
    """Node 2's calibration fails on the device (an optimizer it cannot build: it says why in
    its profile reply), or its reply says nonsense or nothing: its profile stands, it trains on
    its catalogue figures."""
    def tamper(grid):
        device = grid.app

        def app(msg, context):
            asked = (msg.metadata.message_type == QUERY_PROFILE
                     and msg.metadata.dst_node_id == 2 and CALIBRATION in msg.content)
            if asked and how == "error":
                msg.content[CALIBRATION]["optimizer"] = "no-such-optimizer"
            reply = device(msg, context)
            if asked and how == "nan":
                reply.content[CALIBRATION] = ConfigRecord({"layer-s": math.nan, "fixed-s": 0.0})
            elif asked and how == "missing":
                del reply.content[CALIBRATION]
            assert not asked or PROFILE in reply.content  # the profile itself stands
            return reply
        grid.app = app

    _, _, rows = run(tmp_path, grid_hook=tamper)
    calibration = rows[0]["calibration"]
    assert sorted(calibration["devices"]) == ["1", "3", "4"]
    assert list(calibration["failures"]) == ["2"]
    assert re.search(reason, calibration["failures"]["2"])
    assert all(r["completed"] == 4 and not r["failures"] for r in rows)


def test_a_resumed_run_reads_its_calibration_back_instead_of_measuring(tmp_path):
    run(tmp_path, name="stopped")
    asked = []

    def count(msg):
        if msg.metadata.message_type == QUERY_PROFILE and CALIBRATION in msg.content:
            asked.append(msg.metadata.dst_node_id)

    _, _, rows = run(tmp_path, name="resumed", fault=count, **{
        "train.rounds": 3, "run.resume-from": str(tmp_path / "stopped")})
    assert asked == [] and "calibration" not in rows[-1]
    assert [r["round"] for r in rows] == [1, 2, 3]


def test_track_rescales_each_device_and_the_server_by_the_rounds_measured_time():
    from strategies.calibration import Calibrator

    calibrator = Calibrator(3, 2, "adamw", 1e-3, 1, False)
    calibrator.devices = {1: Measured(0.1, 0.02), 2: Measured(0.2, 0.0)}
    calibrator.server = Measured(0.05, 0.01)
    clients = [  # node 1 ran 2x slower than predicted, node 2 half as long; node 3 uncalibrated
        {"node": 1, "modelled_device_s": 1.0, "measured_device_s": 2.0,
         "modelled_server_s": 1.0, "measured_server_s": 0.25},
        {"node": 2, "modelled_device_s": 1.0, "measured_device_s": 0.5,
         "modelled_server_s": 3.0, "measured_server_s": 0.75},
        {"node": 3, "modelled_device_s": 1.0, "measured_device_s": 9.0,
         "measured_start_s": 42.0}]
    learnt = calibrator.track(clients)
    assert calibrator.start_offsets([3, 1]) == [42.0, None]  # for a "fifo" server's overlaps
    assert calibrator.devices[1] == pytest.approx(Measured(0.2, 0.04))
    assert calibrator.devices[2] == pytest.approx(Measured(0.1, 0.0))
    assert 3 not in calibrator.devices
    assert calibrator.server == pytest.approx(Measured(0.0125, 0.0025))  # 1 s of 4 predicted
    assert set(learnt["devices"]) == {"1", "2"} and learnt["server"]["layer_s"] == 0.0125
    # A resumed run takes the tracked speeds, the latest last.
    resumed = Calibrator(3, 2, "adamw", 1e-3, 1, False)
    resumed.restore([{"calibration": {"devices": {"1": {"layer_s": 0.1, "fixed_s": 0.02}},
                                      "server": {"layer_s": 0.05, "fixed_s": 0.01,
                                                 "concurrency": 1.0},
                                      "tracked": learnt}, "clients": clients}])
    assert resumed.devices == calibrator.devices and resumed.server == calibrator.server
    assert resumed.starts == calibrator.starts
