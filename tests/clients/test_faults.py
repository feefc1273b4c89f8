"""Fault injection: the `faults.inject` spec, each fault's device-side behaviour, and the round
going on without the faulty clients (in-process, both transports; the Flower runtimes are in
tests/fl_app/test_e2e_*.py)."""

import json
import re
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from clients import faults
from fl_app.client_app import app as client_app
from fl_app.run_config import parse
from fl_app.server_app import train
from harness.configs import tiny_run_config
from harness.inprocess import InProcessGrid

BASE = tiny_run_config(local_steps=2)


def device(spec, partition=0, step_timeout_s=0.05):
    """What `faults.at_step` reads of a `clients.device.Device`."""
    kind = faults.parse(spec).get(partition)
    return SimpleNamespace(fault_in=lambda _round: kind, partition_id=partition,
                           step_timeout_s=step_timeout_s)


# ---- the spec ----------------------------------------------------------------------------------
def test_parse_reads_partitions_and_kinds():
    assert faults.parse("") == {}
    assert faults.parse(" 0:raise, 3:crash ,12:straggle,") == {0: "raise", 3: "crash",
                                                               12: "straggle"}
    assert set(faults.parse(",".join(f"{i}:{k}" for i, k in enumerate(faults.KINDS))).values()) \
        == set(faults.KINDS)


@pytest.mark.parametrize("spec, message", [
    ("1:explode", "unknown kind 'explode'"),
    ("1", "is not 'partition:kind'"),
    ("one:raise", "is not 'partition:kind'"),
    ("-1:raise", "is not 'partition:kind'"),
    ("2:raise,2:silent", "partition 2 twice"),
])
def test_a_bad_spec_stops_the_run_at_start_naming_the_key(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        parse({"faults.inject": spec})
    assert str(info.value).startswith("config faults.inject = ")


def test_random_faults_hit_at_the_rate_the_same_in_every_run():
    kinds = ("raise", "straggle")
    draws = {(r, p): faults.drawn(0.1, kinds, 0, r, p) for r in range(1, 201) for p in range(8)}
    assert draws == {(r, p): faults.drawn(0.1, kinds, 0, r, p) for r, p in draws}  # seeded
    hits = [k for k in draws.values() if k is not None]
    assert 0.07 < len(hits) / len(draws) < 0.13  # 1600 draws: 3.8 standard deviations
    assert set(hits) == set(kinds)
    assert draws != {(r, p): faults.drawn(0.1, kinds, 1, r, p) for r, p in draws}  # other seed
    assert all(faults.drawn(1.0, kinds, 0, r, 0) in kinds for r in range(1, 50))
    assert faults.drawn(0.0, kinds, 0, 1, 0) is None


def test_a_device_without_a_fixed_fault_draws_one_per_round():
    from clients.device import Device
    from edgesplit.settings import DataSettings, LoraSettings

    device = Device("tiny-llama", LoraSettings(), DataSettings(seed=3), partition_id=2,
                    num_partitions=4, node_config={}, step_timeout_s=1.0, fault_rate=0.5,
                    fault_kinds=("raise",))
    assert [device.fault_in(r) for r in range(1, 40)] == [
        faults.drawn(0.5, ("raise",), 3, r, 2) for r in range(1, 40)]
    assert {device.fault_in(r) for r in range(1, 40)} == {None, "raise"}
    fixed = Device("tiny-llama", LoraSettings(), DataSettings(), 0, 1, {}, 1.0, fault="crash",
                   fault_rate=0.5)
    assert {fixed.fault_in(r) for r in range(1, 20)} == {"crash"}


@pytest.mark.parametrize("spec", ["", "raise,explode", " , "])
def test_bad_fault_kinds_stop_the_run_at_start_naming_the_key(spec):
    with pytest.raises(ValueError, match=re.escape(f"config faults.kinds = {spec!r}")):
        parse({"faults.kinds": spec})


def test_a_fault_rate_outside_zero_one_names_the_key():
    with pytest.raises(ValueError, match=re.escape("config faults.rate = 1.5: must be in [0, 1]")):
        parse({"faults.rate": 1.5})


# ---- one device --------------------------------------------------------------------------------
def test_only_the_named_partition_misbehaves_and_only_at_the_fault_step():
    faults.at_step(device("0:raise", partition=1), 1, faults.FAULT_STEP, 4)  # another partition
    for step in (0, faults.FAULT_STEP + 1):
        faults.at_step(device("0:raise"), 1, step, 4)
    faults.at_step(device("0:raise"), 1, faults.FAULT_STEP, faults.FAULT_STEP)  # no such step
    with pytest.raises(faults.InjectedFault, match="injected fault: raise"):
        faults.at_step(device("0:raise"), 1, faults.FAULT_STEP, 4)


def test_silent_gives_up_but_a_straggler_carries_on():
    with pytest.raises(faults.InjectedFault, match="silent .* without answering"):
        faults.at_step(device("0:silent"), 1, faults.FAULT_STEP, 4)
    faults.at_step(device("0:straggle"), 1, faults.FAULT_STEP, 4)


def test_disconnect_cuts_the_stream_or_behaves_as_a_lost_message():
    class Call:
        cancelled = False

        def cancel(self):
            self.cancelled = True

    call = Call()
    faults.at_step(device("0:disconnect"), 1, faults.FAULT_STEP, 4, call)
    assert call.cancelled
    with pytest.raises(faults.InjectedFault, match="disconnect .* without answering"):
        faults.at_step(device("0:disconnect"), 1, faults.FAULT_STEP, 4)  # Flower transport


def test_crash_kills_the_process():
    code = ("from types import SimpleNamespace\n"
            "from clients import faults\n"
            "d = SimpleNamespace(fault_in=lambda r: 'crash', partition_id=0, "
            "step_timeout_s=1.0)\n"
            "faults.at_step(d, 1, 0, 4)\n"
            "print('step 0 passed', flush=True)\n"
            f"faults.at_step(d, 1, {faults.FAULT_STEP}, 4)\n"
            "print('survived')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout == "step 0 passed\n"


# ---- a round with faulty clients, in-process ---------------------------------------------------
class TakingTurns:
    """The ClientApp for handlers in threads of one process: Flower-message handlers share the
    process's head model without a lock (Flower runs one per process), so they take turns here;
    a device sleeping in a fault lets the others run meanwhile."""

    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, msg, context):
        with self.lock:
            return client_app(msg, context)

    def sleep(self, seconds):
        self.lock.release()
        try:
            time.sleep(seconds)
        finally:
            self.lock.acquire()


# Partition p is node p + 1; nodes 5 and 6 are healthy. Every fault hits local step 1.
SPEC = "0:raise,1:silent,2:disconnect,3:straggle"
REASONS = {
    "stream": {
        "1": r"client error 2: .*injected fault: raise",
        "2": r"step 1: no activations within 2 s",
        "3": r"step 1: .*(cancelled|closed)",
        "4": r"step 1: no activations within 2 s",
    },
    "flower": {
        "1": r"step 1: PayloadError: client error 2: .*injected fault: raise",
        "2": r"step 1: no reply within 5 s",
        "3": r"step 1: no reply within 5 s",  # a lost message
        "4": r"step 1: no reply within 5 s",
    },
}


@pytest.mark.parametrize("transport, step_timeout_s", [("stream", 2.0), ("flower", 5.0)])
def test_faulty_clients_are_dropped_with_their_reason_and_the_round_completes(
        tmp_path, monkeypatch, transport, step_timeout_s):
    config = {**BASE, "stream.transport": transport, "faults.inject": SPEC,
              "faults.step-timeout-s": step_timeout_s, "run.output-dir": str(tmp_path),
              "run.name": transport}
    app = client_app
    if transport == "flower":
        app = TakingTurns()
        monkeypatch.setattr(faults, "time", SimpleNamespace(sleep=app.sleep))
    # Concurrent: a silent or straggling handler must not hold up the server (as in Flower).
    grid = InProcessGrid(app, config, 6, concurrent=True)
    train(grid, parse(config))
    (row,) = [json.loads(line) for line in (tmp_path / transport / "metrics.jsonl").open()]
    assert row["sampled"] == 6 and row["completed"] == 2 and "skipped" not in row
    assert sorted(row["failures"]) == sorted(REASONS[transport])
    for node, reason in REASONS[transport].items():
        assert re.search(reason, row["failures"][node]), (node, row["failures"][node])
    assert "injected fault: raise" not in row["failures"]["3"]
    assert row["train_loss"] > 0
    assert (tmp_path / transport / "checkpoints" / "round-0001.pt").is_file()


def test_below_the_minimum_the_round_is_skipped_cleanly(tmp_path):
    config = {**BASE, "stream.transport": "stream", "faults.inject": "0:raise,1:disconnect",
              "train.min-clients": 3, "faults.step-timeout-s": 2.0, "run.output-dir": str(tmp_path),
              "run.name": "skip"}
    grid = InProcessGrid(client_app, config, 3, concurrent=True)
    strategy = train(grid, parse(config))
    (row,) = [json.loads(line) for line in (tmp_path / "skip" / "metrics.jsonl").open()]
    assert row["completed"] == 1 and sorted(row["failures"]) == ["1", "2"]
    assert row["skipped"] == "1 clients completed, 3 needed" and "train_loss" not in row
    assert all(v.abs().sum() == 0 for k, v in strategy.global_lora.items() if "lora_B" in k)


def test_random_faults_drop_exactly_the_drawn_clients_round_after_round(tmp_path):
    """faults.rate in a run: the clients dropped in each round are those whose partition drew a
    fault for that round (in-process node n is partition n - 1)."""
    config = {**BASE, "stream.transport": "stream", "faults.rate": 0.3,
              "faults.kinds": "raise,disconnect",
              "train.rounds": 3, "faults.step-timeout-s": 5.0, "run.output-dir": str(tmp_path),
              "run.name": "rate"}
    train(InProcessGrid(client_app, config, 6, concurrent=True), parse(config))
    rows = [json.loads(line) for line in (tmp_path / "rate" / "metrics.jsonl").open()]
    expected = [{str(p + 1) for p in range(6)
                 if faults.drawn(0.3, ("raise", "disconnect"), 0, r, p)} for r in (1, 2, 3)]
    assert [set(row["failures"]) for row in rows] == expected
    assert 0 < sum(map(len, expected)) < 18  # some clients failed, others did not
