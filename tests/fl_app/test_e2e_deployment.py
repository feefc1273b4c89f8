"""End to end through the real Flower runtime: local deployment on 127.0.0.1, plaintext or TLS.

One SuperLink (no --simulation) and two SuperNodes (partition 0 and 1 of 2), each with its
resident device agent (`edgesplit-device`), all started by the test (`harness.deployment`) with
a temporary FLWR_HOME and OS-chosen ports, and `flwr run . <connection>` against them. The TLS
run also authenticates SuperNodes: their keys are generated and registered by the test, and two
strangers are turned away. Flower still starts a ClientApp process per message, but it only
forwards the message to the agent, which keeps torch and the model loaded (without agents every
message paid a cold process that imports torch: `test_e2e_crash` runs that plain path). The
fault-injection run has 7 SuperNodes, 5 of them faulty. harness/runtime.py explains how every
process started here (SuperExecs, agents and ClientApp/ServerApp processes included) is stopped.
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from edgesplit import framing, protocol
from harness.deployment import LocalDeployment, start_deployment, supernode_key_pair
from harness.runtime import (
    flwr_bin,
    free_ports,
    run_status,
    started_run_id,
)
from tests.fl_app.e2e_checks import (
    FAULT_CLIENTS,
    FAULT_RUN_CONFIG,
    FAULT_STEP_TIMEOUT_S,
    check_fault_round,
    check_run_outputs,
)

pytestmark = pytest.mark.e2e

ROUNDS, CLIENTS = 1, 2
RUN_TIMEOUT_S = 420  # ~170 s seen on a loaded 2-core machine without agents; leave room


@pytest.fixture
def deployment(harness, tls_files, tmp_path):
    """SuperLink with TLS from a test CA and SuperNode authentication; two SuperNodes whose
    keys the operator registered, and two strangers: one with a key nobody registered, one
    with no key. Returns the deployment, the registered node ids and the strangers."""
    deployment = LocalDeployment(harness, tls_files, supernode_auth=True)
    deployment.start_superlink()
    keys = tmp_path / "keys"
    keys.mkdir()
    registered = []
    agents = deployment.start_agents([f"agent-{p}" for p in range(CLIENTS)])
    for partition in range(CLIENTS):
        private, public = supernode_key_pair(keys, f"supernode-{partition}")
        registered.append(deployment.register(public))
        deployment.start_supernode(partition, CLIENTS, private, agent=agents[partition])
    unregistered, _ = supernode_key_pair(keys, "stranger")
    strangers = {name: deployment.start_supernode(0, CLIENTS, key, name=name)
                 for name, key in (("stranger-key", unregistered), ("stranger-no-key", None))}
    return deployment, registered, strangers


def dial_with_a_bogus_hello(port, ca_file, stop):
    """Dial the round's stream (TLS, verified against the test CA) until it is open, with a
    hello that claims node 1 and a made-up secret; return the status codes it answered."""
    hello = framing.encode({"kind": protocol.HELLO, "node": 1, "secret": "0" * 64})
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes())
    codes = []
    while not stop.is_set() and (not codes or codes[-1] == grpc.StatusCode.UNAVAILABLE):
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            try:
                list(channel.stream_stream(protocol.METHOD_PATH)(iter([hello]), timeout=10))
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        time.sleep(0.5)
    return codes


def test_deployment_one_round_two_authenticated_supernodes(harness, deployment, tls_files,
                                                          tmp_path):
    """One round over the TLS-protected stream data plane between real processes, with
    SuperNode authentication: SuperNodes whose key is not registered are refused by the
    SuperLink and the round trains with the registered ones. A stranger dialling the round's
    stream with a made-up secret is refused too (it claims node 1, which is never a selected
    node id: the wrong-secret and stale-secret cases of a selected node are tested in-process,
    tests/strategies/test_stream_transport.py)."""
    deployment, registered, strangers = deployment
    tls = tls_files
    out = tmp_path / "outputs"
    (stream_port,) = free_ports(1)
    stream_tls = " ".join(f'{k}="{v}"' for k, v in tls.items()) + f" stream.port={stream_port}"
    with ThreadPoolExecutor(1) as pool:  # dials while the round runs
        stop = threading.Event()
        dialled = pool.submit(dial_with_a_bogus_hello, stream_port, tls["stream.tls-ca-certfile"],
                              stop)
        try:
            rc, log = run_one_round(harness, deployment.connection, out, stream_tls)
        finally:
            stop.set()
    codes = dialled.result()
    assert codes and codes[-1] == grpc.StatusCode.PERMISSION_DENIED, codes
    refusal = re.search(r"stream round 1: refused ipv4:127\.0\.0\.1:\d+ \(node 1\): "
                        r"node not selected this round", log)
    assert refusal, log[-6000:]
    print("bogus hello:", [c.name for c in codes], "| ServerApp log:", refusal.group(0))
    assert rc == 0, log[-6000:]
    run_id = started_run_id(log)
    assert run_status(harness, deployment.connection, run_id) == "finished:completed", \
        log[-6000:]
    run_dir = out / "e2e"
    assert (run_dir / "adapter").is_dir(), (
        f"no adapter: the run did not finish.\nflwr run:\n{log[-6000:]}\n"
        f"superlink:\n{harness.log('superlink')[-3000:]}\n"
        f"supernode-0:\n{harness.log('supernode-0')[-3000:]}")
    rows = check_run_outputs(run_dir, ROUNDS, CLIENTS)
    # The registered SuperNodes, and only they, took part.
    assert sorted(c["node"] for c in rows[0]["clients"]) == sorted(registered)
    # The SuperLink turned the strangers away; each gave up (Flower's exit code 305).
    for name, stranger in strangers.items():
        assert stranger.wait(timeout=120) != 0, harness.log(name)[-3000:]
        assert "Exit Code: 305" in harness.log(name), harness.log(name)[-3000:]
    assert "[code: 2004] Failed to activate SuperNode" in harness.log("stranger-key")
    assert ("[code: 2001] SuperNode authentication is enabled. All SuperNodes must be "
            "registered") in harness.log("stranger-no-key")
    link_log = harness.log("superlink")
    assert "No SuperNode found with the given public key" in link_log
    assert link_log.count("[Fleet.ActivateNode] Activated node_id=") == CLIENTS
    timings = {k: rows[0][k] for k in ("time_round_s", "time_allocate_s", "time_train_s",
                                        "time_eval_s", "client_exchange_s", "server_tail_step_s")}
    print("deployment round timings:", json.dumps(timings))


def run_one_round(harness, deployment, out, stream_tls):
    run_config = (f'model.name="tiny-llama" data.corpus="synthetic" train.rounds={ROUNDS} '
                  f'allocation.fixed-split=3 train.local-steps=2 data.block-size=16 '
                  f'train.min-clients={CLIENTS} eval.every=1 stream.transport="stream" '
                  f'run.output-dir="{out}" run.name="e2e" {stream_tls}')
    return harness.run("flwr-run", [
        flwr_bin("flwr"), "run", ".", deployment, "--run-config", run_config, "--stream",
    ], timeout_s=RUN_TIMEOUT_S)


def test_deployment_drops_every_kind_of_faulty_client_and_completes_the_round(harness,
                                                                              tmp_path):
    """Five faulty SuperNodes (raise, silent, crash, disconnect, straggle) and two healthy
    ones, each with its agent. A crash kills the process doing the device's work, its agent
    (SIGKILL, as a device losing power); the SuperNode lives on, its ClientApp answers that
    the agent died, and the server goes on without that client. The faults fire in training, so
    calibration is off; the one-round test above runs it over real SuperNodes."""
    deployment = start_deployment(harness, FAULT_CLIENTS, agents=True).connection
    out = tmp_path / "outputs"
    rc, log = harness.run("flwr-run", [
        flwr_bin("flwr"), "run", ".", deployment, "--run-config",
        f'{FAULT_RUN_CONFIG} faults.step-timeout-s={FAULT_STEP_TIMEOUT_S} '
        f'allocation.calibration="none" run.output-dir="{out}" run.name="faults"', "--stream",
    ], timeout_s=RUN_TIMEOUT_S)
    assert rc == 0, log[-6000:]
    assert run_status(harness, deployment, started_run_id(log)) == "finished:completed", \
        log[-6000:]
    assert (out / "faults" / "metrics.jsonl").is_file(), log[-6000:]
    reasons = check_fault_round(out / "faults", log)
    print("deployment fault reasons:", reasons)
