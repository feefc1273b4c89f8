"""The stream endpoint under a connection flood, in-process: the handshake limits of
`strategies.stream_admission` and a round that completes, unchanged, while 1000 bogus
connections hit its stream. (The wall-time cost is measured by `experiments.bench_flood`.)"""

import logging
import threading
import time

import grpc
import pytest
import torch

from clients.stream_client import StreamLink
from edgesplit import protocol
from harness.configs import tiny_run_config
from harness.flood import KINDS, flood
from harness.inprocess import run_in_process
from strategies.stream_admission import Busy, Handshakes, peer_host
from strategies.stream_sessions import LOGGED_REFUSALS


# ---- the limits --------------------------------------------------------------------------------
def test_peer_host_drops_the_port():
    assert peer_host("ipv4:10.0.0.7:5123") == "ipv4:10.0.0.7"
    assert peer_host("ipv6:[::1]:5123") == "ipv6:[::1]"
    assert peer_host("unix:/tmp/socket") == "unix:/tmp/socket"


def test_handshakes_are_bounded_in_all_and_per_address():
    handshakes = Handshakes(deadline_s=10, max_pending=3, per_address=2)
    a1 = handshakes.enter("ipv4:10.0.0.1:1", lambda: None)
    handshakes.enter("ipv4:10.0.0.1:2", lambda: None)
    with pytest.raises(Busy, match="2 handshakes in progress from ipv4:10.0.0.1"):
        handshakes.enter("ipv4:10.0.0.1:3", lambda: None)
    handshakes.enter("ipv4:10.0.0.2:1", lambda: None)
    with pytest.raises(Busy, match="3 handshakes in progress; retry"):
        handshakes.enter("ipv4:10.0.0.3:1", lambda: None)
    handshakes.leave(a1)
    handshakes.leave(a1)  # twice is harmless
    handshakes.enter("ipv4:10.0.0.1:4", lambda: None)
    assert handshakes.pending == 3


def test_a_handshake_past_its_deadline_is_cancelled_once():
    cancelled = []
    handshakes = Handshakes(deadline_s=0.05)
    ticket = handshakes.enter("ipv4:10.0.0.1:1", lambda: cancelled.append("late"))
    handshakes.enter("ipv4:10.0.0.1:2", lambda: cancelled.append("judged"))
    assert handshakes.expire(time.monotonic()) == 0
    time.sleep(0.1)
    handshakes.leave(next(t for t in handshakes._pending if t is not ticket))
    assert handshakes.expire(time.monotonic()) == 1
    assert handshakes.expire(time.monotonic()) == 0  # cancelled already; leave() frees it
    assert cancelled == ["late"] and handshakes.pending == 1


# ---- a round under a flood ---------------------------------------------------------------------
ATTEMPTS = 1000


def test_a_round_completes_unchanged_under_a_flood_of_bogus_connections(tmp_path, caplog):
    """Node 1 floods the round's stream (from the clients' own address, 127.0.0.1) before it
    trains, while nodes 2-4 stream their steps; then it trains too. Every bogus call is turned
    away, the round trains all four clients, and the adapter equals an undisturbed run's."""
    keys = {"train.rounds": 1, "faults.step-timeout-s": 5.0, "faults.reply-timeout-s": 120.0}
    outcomes, flooded_during = {}, threading.Event()

    def flood_then_train(msg):
        if msg.metadata.dst_node_id == 1 and msg.metadata.message_type == protocol.TRAIN_STREAM:
            link = StreamLink.from_record(msg.content[protocol.STREAM])
            outcomes.update(flood(link.address, ATTEMPTS, concurrency=16, silent_hold_s=0.5))
            flooded_during.set()
        return None

    caplog.set_level(logging.WARNING)
    strategy, flooded, (row,) = run_in_process(
        tiny_run_config(output_dir=str(tmp_path), run_name="flood", keys=keys), 4,
        fault=flood_then_train)
    _, quiet, _ = run_in_process(
        tiny_run_config(output_dir=str(tmp_path), run_name="quiet", keys=keys), 4)

    assert flooded_during.is_set() and sum(outcomes.values()) == ATTEMPTS
    assert row["completed"] == 4 and not row["failures"], row["failures"]
    for key in quiet:
        assert torch.equal(flooded[key], quiet[key]), key
    # No bogus call got a stream: refused at its hello, turned away by a limit, or cut.
    ended = {o.split(" ", 1)[1] for o in outcomes}
    assert ended <= {"closed", "error", grpc.StatusCode.PERMISSION_DENIED.name,
                     grpc.StatusCode.RESOURCE_EXHAUSTED.name,
                     grpc.StatusCode.DEADLINE_EXCEEDED.name, grpc.StatusCode.CANCELLED.name,
                     grpc.StatusCode.UNAVAILABLE.name}, outcomes
    calls = ATTEMPTS * 3 // len(KINDS)  # bad-hello, wrong-secret, silent: gRPC calls
    refused = strategy.transport.refused
    assert sum(refused.values()) >= 0.9 * calls, (refused, outcomes)  # the rest: gRPC's limit
    assert refused["wrong secret"] > 0 and refused["the caller left before its hello"] > 0
    assert any(r.startswith("bad hello frame") for r in refused)
    # The log names the first few refusals and sums up the rest; it is not flooded.
    lines = [r.getMessage() for r in caplog.records if "stream round 1: refused" in r.getMessage()]
    assert len(lines) == LOGGED_REFUSALS + 1, lines[-3:]
    assert "connections in all" in lines[-1]
