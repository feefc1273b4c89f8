"""End to end through the real Flower runtime: Ray simulation driven by `flwr run`.

The test starts its own SuperLink (simulation mode, temporary FLWR_HOME, OS-chosen ports) and
never touches the user's local one (127.0.0.1:39091/39093); see harness/runtime.py for how
every process it starts, including the SuperExec / flwr-simulation / Ray tree, is stopped.
"""

from __future__ import annotations

import pytest

from harness.runtime import flwr_bin, run_status, started_run_id
from tests.fl_app.e2e_checks import (
    FAULT_CLIENTS,
    FAULT_STEP_TIMEOUT_S,
    SIMULATION_FAULTS,
    check_fault_round,
    check_run_outputs,
    fault_run_config,
)

pytestmark = pytest.mark.e2e

ROUNDS, CLIENTS = 2, 4
RUN_TIMEOUT_S = 300  # ~90-130 s seen on a loaded 2-core machine


@pytest.mark.parametrize("transport", ["stream", "flower"])
def test_simulation_two_rounds_through_flwr_run(simulation, tmp_path, transport):
    """4 clients on 2 Ray actors: clients must progress independently (a lockstep server would
    deadlock). Both data planes run the same job."""
    harness, superlink = simulation
    out = tmp_path / "outputs"
    run_config = (f'model.name="tiny-llama" data.corpus="synthetic" train.rounds={ROUNDS} '
                  f'allocation.fixed-split=3 train.local-steps=2 data.block-size=16 '
                  f'stream.transport="{transport}" run.output-dir="{out}" run.name="e2e"')
    rc, log = harness.run(f"flwr-run-{transport}", [
        flwr_bin("flwr"), "run", ".", superlink, "--run-config", run_config,
        "--federation-config", f"num-supernodes={CLIENTS} client-resources-num-cpus=1",
        "--stream",
    ], timeout_s=RUN_TIMEOUT_S)
    assert rc == 0, log[-6000:]
    run_id = started_run_id(log)
    assert run_status(harness, superlink, run_id) == "finished:completed", log[-6000:]
    run_dir = out / "e2e"
    assert (run_dir / "adapter").is_dir(), (
        f"no adapter: the run did not finish.\nflwr run:\n{log[-6000:]}\n"
        f"superlink:\n{harness.log('superlink')[-4000:]}")
    rows = check_run_outputs(run_dir, ROUNDS, CLIENTS)
    for r in rows:  # every split is a valid cut of the 4-layer tiny-llama
        assert all(1 <= c["split"] <= 3 for c in r["clients"]), r["clients"]


def test_simulation_drops_every_kind_of_faulty_client_and_completes_the_round(
        simulation, tmp_path):
    """Four faulty clients (raise, silent, disconnect, straggle; the crash runs in deployment,
    `e2e_checks.SIMULATION_FAULTS`) and three healthy ones: the round trains with the three and
    records why each other one was dropped. One Ray actor per client: sleeping faulty clients
    must not hold up the healthy ones."""
    harness, superlink = simulation
    out = tmp_path / "outputs"
    rc, log = harness.run("flwr-run-faults", [
        flwr_bin("flwr"), "run", ".", superlink, "--run-config",
        f'{fault_run_config(SIMULATION_FAULTS)} faults.step-timeout-s={FAULT_STEP_TIMEOUT_S} '
        f'run.output-dir="{out}" '
        'run.name="faults"',
        "--federation-config", f"num-supernodes={FAULT_CLIENTS} client-resources-num-cpus=1 "
        f"init-args-num-cpus={FAULT_CLIENTS}", "--stream",
    ], timeout_s=RUN_TIMEOUT_S + 120)
    assert rc == 0, log[-6000:]
    assert run_status(harness, superlink, started_run_id(log)) == "finished:completed", \
        log[-6000:]
    assert (out / "faults" / "metrics.jsonl").is_file(), log[-6000:]
    reasons = check_fault_round(out / "faults", log, SIMULATION_FAULTS)
    print("simulation fault reasons:", reasons)
