"""Ray simulation on an existing Ray cluster: the simulation attaches to it instead of starting
its own Ray (the SuperLink's environment carries `RAY_ADDRESS`).

The test starts a head node with no CPUs and a worker node with one (so clients run on the
worker), runs one round, and reads the cluster's job table: the `flwr-simulation` process must
be one of its drivers, and no second Ray may have been started.
"""

from __future__ import annotations

import json
import sys

import pytest

from harness.runtime import (
    _cmdline,
    flwr_bin,
    run_status,
    start_ray_cluster,
    start_simulation_superlink,
    started_run_id,
)

pytestmark = pytest.mark.e2e


def test_simulation_runs_on_an_existing_ray_cluster(harness, tmp_path):
    address = start_ray_cluster(harness, head_cpus=0, worker_cpus=1)
    ours = {pid for pid in harness.owned_pids() if "gcs_server" in _cmdline(pid)}
    assert len(ours) == 1, ours  # the cluster's own GCS
    connection = start_simulation_superlink(harness, "e2e-ray", env={"RAY_ADDRESS": address})
    run_config = (f'model.name="tiny-llama" data.corpus="synthetic" train.rounds=1 '
                  f'train.local-steps=1 data.block-size=16 eval.every=0 train.min-clients=2 '
                  f'run.output-dir="{tmp_path}" run.name="ray"')
    rc, out = harness.run("flwr-run", [
        flwr_bin("flwr"), "run", ".", connection, "--stream",
        "--federation-config", "num-supernodes=2 client-resources-num-cpus=1",
        "--run-config", run_config], timeout_s=300)
    assert rc == 0, out[-4000:]
    assert run_status(harness, connection, started_run_id(out)) == "finished:completed", out[-4000:]
    assert (tmp_path / "ray" / "checkpoints" / "round-0001.pt").is_file()
    gcs = {pid for pid in harness.owned_pids() if "gcs_server" in _cmdline(pid)}
    assert gcs == ours, "the simulation started a Ray of its own"
    # The cluster's job table (kept by its GCS): the simulation was one of its drivers.
    code = ("import json, ray; from ray._private import state; "
            f"ray.init(address='{address}', logging_level='ERROR'); "
            "print(json.dumps([j['Entrypoint'] for j in state.jobs()]))")
    rc, out = harness.run("ray-jobs", [sys.executable, "-c", code], timeout_s=120)
    assert rc == 0, out[-4000:]
    drivers = json.loads(out.strip().splitlines()[-1])
    assert any("flwr-simulation" in d for d in drivers), drivers
    # Ray's daemons (gcs_server, the raylets) sit out SIGTERM for the fixture's whole 10 s
    # grace before its SIGKILL: end this throwaway cluster with a short grace instead (the
    # fixture still stops whatever is left and checks that nothing survived).
    survivors = harness.stop(grace_s=1.0)
    assert not survivors, survivors
