"""Crash and restart for real: the ServerApp (and, in deployment, the whole edge server) is
SIGKILLed mid-round under `flwr run`, a new `flwr run` resumes with `run.resume-from`, and the final
adapter equals an uninterrupted run's, bit for bit.

Mid-round means while the round's training stream is open: the run is given a fixed
`stream.port`, which only listens while a round trains, and the kill comes once it listens after
the previous round's checkpoint. The uninterrupted reference runs in-process
(`harness.inprocess`, the same ServerApp and ClientApp code): every random draw of a round is
seeded by (seed, round), and with two clients at one fixed split nothing depends on the node ids,
which each Flower run draws afresh (two-client FedAvg is a sum of two terms, the same in either
order).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.configs import tiny_run_config
from harness.deployment import start_deployment
from harness.inprocess import run_in_process
from harness.runtime import (
    accepts_connections,
    flwr_bin,
    free_ports,
    kill_and_wait,
    processes_named,
    run_config_arg,
    run_status,
    start_simulation_superlink,
    started_run_id,
    wait_for,
)

pytestmark = pytest.mark.e2e

CLIENTS = 2
CONFIG = tiny_run_config(allocator="fixed", local_steps=2, transport="stream")
RUN_TIMEOUT_S = 420  # one flwr run (Ray start, model load, rounds) on a loaded 2-core machine
SIMULATION = ["--federation-config", f"num-supernodes={CLIENTS} client-resources-num-cpus=1"]


def reference(tmp_path: Path, rounds: int) -> dict[str, torch.Tensor]:
    """The adapter of an uninterrupted run of the same config, in-process."""
    _, lora, _ = run_in_process({**CONFIG, "train.rounds": rounds,
                                 "run.output-dir": str(tmp_path / "reference"),
                                 "run.name": "reference"}, CLIENTS)
    return lora


def final_lora(run_dir: Path, rounds: int) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run_dir / "checkpoints" / f"round-{rounds:04d}.pt",
                            weights_only=True)
    assert checkpoint["round"] == rounds and len(checkpoint["metrics"]) == rounds
    assert [r["round"] for r in checkpoint["metrics"]] == list(range(1, rounds + 1))
    return checkpoint["lora"]


def assert_bit_identical(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key


def kill_mid_round(harness, run_dir: Path, server_round: int, stream_port: int,
                   process: str) -> None:
    """Wait until round `server_round` trains, then SIGKILL the ServerApp process(es)."""
    wait_for(lambda: (run_dir / "checkpoints" / f"round-{server_round - 1:04d}.pt").is_file(),
             RUN_TIMEOUT_S, f"round {server_round - 1}'s checkpoint")
    wait_for(lambda: accepts_connections(stream_port), RUN_TIMEOUT_S,
             f"round {server_round}'s stream")
    pids = processes_named(harness, process)
    assert pids, f"no {process} process"
    kill_and_wait(pids)
    assert not (run_dir / "checkpoints" / f"round-{server_round:04d}.pt").exists(), \
        f"round {server_round} finished before the kill"


def flwr_run(harness, name: str, connection: str, config: dict, extra: list[str],
             stream: bool = True) -> tuple[int, str]:
    argv = [flwr_bin("flwr"), "run", ".", connection, "--run-config", run_config_arg(config),
            *extra, *(["--stream"] if stream else [])]
    if stream:
        return harness.run(name, argv, timeout_s=RUN_TIMEOUT_S)
    return harness.run(name, argv, timeout_s=120)  # returns once the run is submitted


def stop_dead_run(harness, connection: str, run_id: int, name: str) -> None:
    """What docs/deployment.md tells the operator after a crash: stop the dead run. Otherwise a
    SuperNode that was receiving one of its messages waits on it until the SuperLink gives the
    run up (two missed heartbeats, about 60 s), and only then takes the next run's."""
    rc, out = harness.run(name, [flwr_bin("flwr"), "stop", str(run_id), connection],
                          timeout_s=60)
    assert rc == 0, out[-4000:]
    assert run_status(harness, connection, run_id) == "finished:stopped"


def test_simulation_serverapp_killed_mid_round_resumes_to_the_uninterrupted_adapter(
        harness, tmp_path):
    rounds = 2
    connection = start_simulation_superlink(harness, "e2e-crash")
    (stream_port,) = free_ports(1)
    run_dir = tmp_path / "outputs" / "crash"
    config = {**CONFIG, "train.rounds": rounds, "stream.port": stream_port,
              "run.output-dir": str(run_dir.parent), "run.name": run_dir.name}
    rc, log = flwr_run(harness, "flwr-run-1", connection, config, SIMULATION, stream=False)
    assert rc == 0, log[-4000:]
    killed_run = started_run_id(log)
    kill_mid_round(harness, run_dir, 2, stream_port, "flwr-simulation")

    rc, log = flwr_run(harness, "flwr-run-2", connection,
                       {**config, "run.resume-from": str(run_dir)}, SIMULATION)
    assert rc == 0, log[-6000:]
    assert run_status(harness, connection, started_run_id(log)) == "finished:completed", \
        log[-6000:]
    assert "round 2/2" in log and "round 1/2" not in log, log[-6000:]  # resumed at round 2
    assert_bit_identical(final_lora(run_dir, rounds), reference(tmp_path, rounds))
    print("the killed run:", run_status(harness, connection, killed_run))


def test_deployment_serverapp_and_then_the_edge_server_killed_mid_round_resume_to_the_same_adapter(
        harness, tmp_path):
    """Round 2 of the first run: the ServerApp process dies; a second run resumes from round
    1's checkpoint. Round 2 of that run: the whole edge server dies (SuperLink, SuperExec,
    ServerApp); the SuperLink comes back on its state database, the SuperNodes (still running)
    reconnect, the operator stops the dead run there, and a third run resumes from round 1's
    checkpoint again."""
    rounds = 2
    deployment = start_deployment(harness, CLIENTS)
    connection = deployment.connection
    (stream_port,) = free_ports(1)
    run_dir = tmp_path / "outputs" / "crash"
    config = {**CONFIG, "train.rounds": rounds, "stream.port": stream_port,
              "train.min-clients": CLIENTS, "run.output-dir": str(run_dir.parent),
              "run.name": run_dir.name}
    rc, log = flwr_run(harness, "flwr-run-1", connection, config, [], stream=False)
    assert rc == 0, log[-4000:]
    killed_run = started_run_id(log)
    kill_mid_round(harness, run_dir, 2, stream_port, "flwr-serverapp")
    stop_dead_run(harness, connection, killed_run, "flwr-stop-1")

    resumed = {**config, "run.resume-from": str(run_dir)}
    rc, log = flwr_run(harness, "flwr-run-2", connection, resumed, [], stream=False)
    assert rc == 0, log[-4000:]
    killed_run = started_run_id(log)
    wait_for(lambda: accepts_connections(stream_port), RUN_TIMEOUT_S, "round 2's stream")
    killed = deployment.kill_superlink()
    assert not (run_dir / "checkpoints" / "round-0002.pt").exists()
    assert not processes_named(harness, "flwr-serverapp"), "a ServerApp survived"

    deployment.start_superlink()  # same port, same state database
    stop_dead_run(harness, connection, killed_run, "flwr-stop-2")  # the database still has it
    rc, log = flwr_run(harness, "flwr-run-3", connection, resumed, [])
    assert rc == 0, log[-6000:]
    assert run_status(harness, connection, started_run_id(log)) == "finished:completed", (
        f"{log[-6000:]}\nsuperlink:\n{harness.log('superlink-2')[-3000:]}")
    assert "round 2/2" in log and "round 1/2" not in log, log[-6000:]  # resumed at round 2
    print(f"killed the edge server's processes {killed}")
    assert_bit_identical(final_lora(run_dir, rounds), reference(tmp_path, rounds))
