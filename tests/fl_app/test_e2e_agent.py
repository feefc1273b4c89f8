"""Resident device agents in a real deployment: a SuperLink and SuperNodes on 127.0.0.1, each
SuperNode with its `edgesplit-device` agent (`harness.deployment`), and `flwr run` against them.

Every message reaches the device's handlers through a fresh, torch-free ClientApp process and the
agent's Unix socket. What must hold: training through agents gives the adapter of the path
without them, bit for bit (the in-process reference runs the same handlers in the ClientApp's
own process; `test_e2e_crash` proves a deployment without agents gives that adapter too); a
message the SuperNode failed to fetch is sent again and its client trains in the same round; an
agent killed mid-round costs only its client, with the reason, at once; an agent of another
version is refused, naming both versions.
"""

from __future__ import annotations

import json
import re
import sys

import pytest

import edgesplit
from clients.agent_link import PROTOCOL
from harness.configs import tiny_run_config
from harness.deployment import LocalDeployment
from harness.flaky_fleet import FlakyFleet
from harness.inprocess import run_in_process
from harness.runtime import kill_and_wait, run_status, started_run_id, wait_for
from tests.fl_app.test_e2e_crash import assert_bit_identical, final_lora, flwr_run

pytestmark = pytest.mark.e2e

CONFIG = tiny_run_config(allocator="fixed", local_steps=2, transport="stream",
                         calibration="measure", calibration_steps=1, eval_every=1,
                         min_train_clients=2)


def reference(tmp_path, config):
    """The adapter of the same run in-process (the ClientApp serving every message itself)."""
    _, lora, _ = run_in_process({**config, "run.output-dir": str(tmp_path / "reference"),
                                 "run.name": "reference"}, 2)
    return lora


def clientapp_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "clientapp pid" in line]


def test_one_round_through_agents_equals_the_in_process_adapter_and_a_lost_message_is_resent(
        harness, tmp_path):
    """SuperNode 1 reaches the SuperLink through a proxy that fails its fetch of the round's
    train message once, as the SuperLink's `database is locked` did on the testbed: the
    SuperNode drops the message (Flower 1.41), the server sends it again after 3 x the device's
    measured start-up + 10 s, and the client trains in the same round (not after the 600 s
    reply timeout). The adapter is the in-process run's, bit for bit."""
    deployment = LocalDeployment(harness)
    deployment.start_superlink()
    sockets = deployment.start_agents(["agent-0", "agent-1"])
    run_dir = tmp_path / "outputs" / "agents"
    with FlakyFleet(f"127.0.0.1:{deployment.http_port}") as proxy:
        deployment.start_supernode(0, 2, agent=sockets[0])
        deployment.start_supernode(1, 2, agent=sockets[1], superlink=proxy.address)
        rc, log = flwr_run(harness, "flwr-run", deployment.connection, {
            **CONFIG, "run.output-dir": str(run_dir.parent), "run.name": run_dir.name}, [])
    assert rc == 0, log[-6000:]
    assert run_status(harness, deployment.connection, started_run_id(log)) == \
        "finished:completed", log[-6000:]
    (row,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert row["completed"] == 2 and not row["failures"], row["failures"]
    # The fetch failed once, the SuperNode dropped that message, a second copy trained.
    assert len(proxy.failed) == 1
    assert f"Failed to receive message {proxy.failed[0]}" in harness.log("supernode-1")
    assert sorted(c.get("resent", 0) for c in row["clients"]) == [0, 1], row["clients"]
    assert "sending it again" in log
    # Every message went through an agent: profile (with calibration), train, evaluate.
    for node in ("0", "1"):
        lines = clientapp_lines(harness.log(f"supernode-{node}"))
        assert lines and all("via agent" in line for line in lines), lines
        assert "train.stream done" in harness.log(f"agent-{node}")
    print("client round times:", {c["node"]: round(c["measured_s"], 1) for c in row["clients"]},
          "| train phase", round(row["time_train_s"], 1), "s")
    assert_bit_identical(final_lora(run_dir, 1), reference(tmp_path, CONFIG))


def test_a_killed_agent_costs_only_its_client_and_an_agent_of_another_version_is_refused(
        harness, tmp_path):
    """Three devices: one healthy; one whose agent the test SIGKILLs while it trains (it holds
    still after step 0: `faults.inject` silent, step timeout 120 s); one whose agent runs
    another EdgeSplit version. The killed one is dropped from training at once with the reason
    (not after the step timeout), its evaluation message then finds no agent and fails at once
    too, and the round completes with the healthy one. The other version is refused at its
    profile query, naming both versions."""
    deployment = LocalDeployment(harness)
    deployment.start_superlink()
    sockets = deployment.start_agents(["agent-0", "agent-1", "agent-2"], {"agent-2": [
        sys.executable, "-c", "import sys, edgesplit; edgesplit.__version__ = '0.0.9'; "
        "from clients.agent import main; sys.exit(main())"]})
    for partition, socket_path in enumerate(sockets):
        deployment.start_supernode(partition, 3, agent=socket_path)
    run_dir = tmp_path / "outputs" / "kill"
    config = {**CONFIG, "faults.inject": "1:silent", "faults.step-timeout-s": 120.0,
              "train.min-clients": 1, "run.output-dir": str(run_dir.parent),
              "run.name": run_dir.name}
    killed = []

    def kill_agent_1_once_it_trains() -> bool:
        if "round 1: admitted" in harness.log("agent-1") and not killed:
            (agent,) = [p for name, p in harness.procs if name == "agent-1"]
            kill_and_wait([agent.pid])
            killed.append(agent.pid)
        return bool(killed)

    rc, log = flwr_run(harness, "flwr-run", deployment.connection, config, [], stream=False)
    assert rc == 0, log[-4000:]
    wait_for(kill_agent_1_once_it_trains, 300, "agent-1 to train", poll_s=0.2)
    wait_for(lambda: (run_dir / "status.json").is_file() and json.loads(
        (run_dir / "status.json").read_text())["status"] != "running", 420, "the run to end")
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    (row,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert row["sampled"] == 3 and row["completed"] == 1 and "train_loss" in row, row
    failures, evaluation = row["failures"], row["eval_failures"]
    assert len(failures) == 2, failures
    (killed_node,) = [n for n, reason in failures.items() if "mismatch" not in reason]
    (old_node,) = set(failures) - {killed_node}
    # Killed mid-round: its stream broke and its ClientApp said why, at once; its evaluation
    # message then found no agent.
    assert re.search(r"^step 1: (stream cancelled or lost|PayloadError: stream closed after 1 "
                     r"of 2 steps); client error \d+: .*device agent at .*agent-1\.sock closed "
                     r"the connection before replying to train\.stream", failures[killed_node]), \
        failures[killed_node]
    assert re.search(r"no device agent at .*agent-1\.sock", evaluation[killed_node]), evaluation
    mismatch = (f"the app runs EdgeSplit {edgesplit.__version__} (agent protocol {PROTOCOL}), "
                f"the device agent EdgeSplit 0.0.9 (agent protocol {PROTOCOL})")
    assert failures[old_node].startswith("profile: ") and mismatch in failures[old_node]
    assert mismatch in harness.log("agent-2")
    print("failures:", json.dumps({**failures, "evaluation": evaluation}, indent=1))
