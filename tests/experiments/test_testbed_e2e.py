"""`python -m experiments.testbed --verdict` end to end: a 2-device fleet on the emulated testbed,
the tiny model, 1 round, 2 methods, 1 repeat; the verdict table has its columns and every
method's run completed, each message went through the device's resident agent, and each client's
round is measured part by part on its declared class and shaped link (runs as root with
namespaces and cgroups, as in CI on these machines; skipped with the reason elsewhere)."""

from __future__ import annotations

import csv
import json

import pytest

from experiments import testbed, testbed_verdict
from harness import testbed as emulated
from harness.testbed import leftovers

MISSING = emulated.Testbed.missing()

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(MISSING), reason=MISSING)]

FLEET = """
[server]
cpu-cores = 1.0
memory-mb = 6000
class = "cpu-epyc-9654"

[cell]
bandwidth-mhz = 20

[classes.in-cell]
cpu-cores = 0.4
memory-mb = 2000
uplink-mbit = 10        # with the whole band: 0.5 bit/s/Hz
downlink-mbit = 40
catalogue = "raspberry-pi-5"
cell = true

[classes.fast-link]
cpu-cores = 0.4
memory-mb = 2000
uplink-mbit = 40
downlink-mbit = 80
catalogue = "jetson-orin-nano"

[fleet]
in-cell = 1
fast-link = 1
"""
METHODS = ("fp", "edge-only")


def test_a_verdict_on_two_emulated_devices_tabulates_every_methods_completed_run(tmp_path):
    fleet, out = tmp_path / "fleet_two.toml", tmp_path / "verdict"
    fleet.write_text(FLEET)
    before = leftovers()
    testbed.main(["--verdict", "--fleet", str(fleet), "--model", "tiny-llama", "--layers", "4",
                  "--corpus", "synthetic", "--block-size", "16", "--rounds", "1",
                  "--local-steps", "1", "--repeats", "1", "--only", ",".join(METHODS),
                  "--out", str(out)])
    assert leftovers() == before  # every namespace, veth and cgroup is gone

    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcome"] == "completed" and not summary["verdict"]["failed_runs"]
    for method in METHODS:  # each run's own record says it completed
        status = json.loads((out / "runs" / f"{method}-r0.status.json").read_text())
        assert status["status"] == "completed", (method, status)
    with (out / "verdict_rounds.csv").open() as f:
        rounds = list(csv.DictReader(f))
    assert [(r["method"], r["round"], r["completed"]) for r in rounds] == [
        (m, "1", "2") for m in METHODS]
    assert all(float(r["measured_round_s"]) > 0 and float(r["heldout_ppl"]) > 0 for r in rounds)
    with (out / "verdict.csv").open() as f:
        table = list(csv.DictReader(f))
    columns = ["method", "repeats",
               *(f"{q}_{s}" for q in (*testbed_verdict.QUANTITIES, testbed_verdict.CALIBRATION)
                 for s in ("mean", "ci95")),
               "target_ppl", "reached", "target_round", "time_to_target_s_mean",
               "time_to_target_s_ci95"]
    assert list(table[0]) == columns
    # One round: nothing past calibration to average, but every run reaches the target (the
    # highest last-round perplexity) in round 1, after that round's measured time.
    by_method = {r["method"]: r for r in table}
    assert list(by_method) == list(METHODS)
    times = {r["method"]: float(r["measured_round_s"]) for r in rounds}
    for method, row in by_method.items():
        assert (row["repeats"], row["reached"], row["target_round"]) == ("1", "1/1", "1")
        assert float(row["time_to_target_s_mean"]) == pytest.approx(times[method])
        assert row["measured_round_s_mean"] == ""
    assert (out / "verdict.png").is_file()

    # Every message went through the device's agent, which logged its progress.
    for index in range(2):
        lines = [line for line in (out / "logs" / f"supernode-{index}.log").read_text()
                 .splitlines() if "clientapp pid" in line]
        assert lines and all("via agent" in line for line in lines), lines
        agent_log = (out / "logs" / f"agent-{index}.log").read_text()
        for progress in ("device code loaded", "round 1: dialling", "round 1: admitted",
                         "train.stream done"):
            assert progress in agent_log, (progress, agent_log[-3000:])
    # Each device declared its class and shaped link; the model charged its transfers at that
    # rate (the cell device's at its subchannels' share of the band, 0.5 bit/s/Hz), and the
    # round measured each part of each client's time.
    for method in METHODS:
        (row,) = [json.loads(line) for line in (out / "runs" / f"{method}-r0.jsonl").open()]
        assert row["completed"] == 2 and not row["failures"], row
        clients = {c["label"]: c for c in row["clients"]}
        assert {k: c["device_class"] for k, c in clients.items()} == {
            "in-cell": "raspberry-pi-5", "fast-link": "jetson-orin-nano"}
        assert clients["fast-link"]["rate_bps"] == 40e6
        cell = clients["in-cell"]
        assert 1 <= cell["subchannels"] <= 50  # allocation.cell-subchannels, by default
        assert cell["bandwidth_hz"] == pytest.approx(cell["subchannels"] * 20e6 / 50)
        assert cell["rate_bps"] == pytest.approx(cell["bandwidth_hz"] * 0.5)
        for client in row["clients"]:
            for part in ("device", "server", "queue", "transfer", "dataplane"):
                assert client[f"measured_{part}_s"] >= 0, (part, client)
