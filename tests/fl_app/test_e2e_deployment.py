"""End to end through the real Flower runtime: local deployment on 127.0.0.1, insecure.

One SuperLink (no --simulation) and two SuperNodes (partition 0 and 1 of 2), all started by the
test with a temporary FLWR_HOME and OS-chosen ports, and `flwr run . <connection>` against them.
Deployment starts a fresh ClientApp process per message (~7-9 s per round trip, see
shared/design/flower-facts.md), so this runs 1 round of 1 local step. tests/flower_harness.py
explains how every process started here (SuperExecs and ClientApp/ServerApp processes included)
is stopped.
"""

from __future__ import annotations

import json

import pytest

from tests.flower_harness import (
    check_run_outputs,
    flwr_bin,
    free_ports,
    run_status,
    started_run_id,
)

pytestmark = pytest.mark.e2e

ROUNDS, CLIENTS = 1, 2
RUN_TIMEOUT_S = 420  # ~170 s seen on a loaded 2-core machine; leave room


@pytest.fixture(params=["insecure", "tls"])
def deployment(request, harness, tls_files):
    """SuperLink + 2 SuperNodes, in plaintext or with TLS from a test CA; returns the `flwr`
    connection name and the run-config text that puts the data-plane stream under the same TLS.
    """
    tls = request.param == "tls"
    ca = tls_files["tls-ca-certfile"]
    link_security = (["--ssl-certfile", tls_files["tls-certfile"], "--ssl-keyfile",
                      tls_files["tls-keyfile"], "--ssl-ca-certfile", ca] if tls else ["--insecure"])
    node_security = ["--root-certificates", ca] if tls else ["--insecure"]
    http_port, control_port, *node_ports = free_ports(2 + CLIENTS)
    link = harness.start("superlink", [
        flwr_bin("flower-superlink"), *link_security,
        "--isolation", "subprocess", "--disable-runtime-dependency-installation",
        # 1.41: one HTTP port (--host/--port) serves the Runtime, Control and Fleet APIs. The
        # gRPC Control API address is deprecated (not opened) but pinned so no default is used.
        "--control-api-address", f"127.0.0.1:{control_port}",
        "--host", "127.0.0.1", "--port", str(http_port),
        "--database", str(harness.home / "state.db"),
    ])
    harness.wait_healthy(http_port, link, ca_file=ca if tls else "")
    for partition, port in enumerate(node_ports):
        harness.start(f"supernode-{partition}", [
            flwr_bin("flower-supernode"), *node_security,
            "--superlink", f"127.0.0.1:{http_port}",
            "--port", str(port),  # this SuperNode's own runtime API (its ClientApps connect here)
            "--node-config", f"partition-id={partition} num-partitions={CLIENTS}",
        ])
    harness.write_connection("e2e-deploy", f"127.0.0.1:{http_port}", ca if tls else "")
    stream_tls = " ".join(f'{k}="{v}"' for k, v in tls_files.items()) if tls else ""
    return "e2e-deploy", stream_tls


def test_deployment_one_round_two_supernodes(harness, deployment, tmp_path):
    """One round over the stream data plane (the default transport) between real processes."""
    deployment, stream_tls = deployment
    out = tmp_path / "outputs"
    run_config = (f'model-name="tiny-llama" corpus="synthetic" num-server-rounds={ROUNDS} '
                  f'split=3 local-steps=2 block-size=16 min-train-clients={CLIENTS} '
                  f'eval-every=1 transport="stream" output-dir="{out}" run-name="e2e" '
                  f'{stream_tls}')
    rc, log = harness.run("flwr-run", [
        flwr_bin("flwr"), "run", ".", deployment, "--run-config", run_config, "--stream",
    ], timeout_s=RUN_TIMEOUT_S)
    assert rc == 0, log[-6000:]
    run_id = started_run_id(log)
    assert run_status(harness, deployment, run_id) == "finished:completed", log[-6000:]
    run_dir = out / "e2e"
    assert (run_dir / "adapter").is_dir(), (
        f"no adapter: the run did not finish.\nflwr run:\n{log[-6000:]}\n"
        f"superlink:\n{harness.log('superlink')[-3000:]}\n"
        f"supernode-0:\n{harness.log('supernode-0')[-3000:]}")
    rows = check_run_outputs(run_dir, ROUNDS, CLIENTS)
    # Both partitions took part: each SuperNode is one client.
    assert len({c["node"] for c in rows[0]["clients"]}) == CLIENTS
    timings = {k: rows[0][k] for k in ("time_round_s", "time_allocate_s", "time_train_s",
                                        "time_eval_s", "client_exchange_s", "server_tail_step_s")}
    print("deployment round timings:", json.dumps(timings))
