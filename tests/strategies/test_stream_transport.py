"""Oracle 5 and the stream transport's security and failure handling, in-process.

The in-process grid runs the real ClientApp; with `concurrent=True` every node's handler runs in
its own thread, as in Flower, because a stream handler blocks while the server serves its round.
Misbehaving devices are injected through the grid's `fault` hook: either the real handler runs
on a tampered message, or a hand-written client speaks the stream protocol and breaks it.
"""

import queue
import re
import threading
import time
from collections import Counter

import grpc
import pytest
import torch

from clients.stream_client import StreamLink
from edgesplit import framing, protocol
from edgesplit.protocol import CONFIG, RoundTask
from edgesplit.records import to_record
from edgesplit.split_model import SplitModel
from harness.configs import tiny_run_config
from harness.inprocess import DROP, run_in_process
from strategies.stream_transport import StreamTransport, _next_frame

HIDDEN = 64  # tiny-llama's hidden size (checked in the rogue client below)


def run(tmp_path, transport="stream", fault=None, num_nodes=4, grid_hook=None, **overrides):
    # No resends unless a test asks: on a loaded machine an in-process client can miss its
    # connect deadline (3 x a start-up of milliseconds + 10 s), and a second copy of its round
    # message would change what the test counts; a client that never connects is dropped after
    # a minute, not the default ten.
    keys = {"faults.connect-resends": 0, "faults.reply-timeout-s": 60.0, **overrides}
    config = tiny_run_config(output_dir=str(tmp_path), run_name=transport, transport=transport,
                             keys=keys)
    return run_in_process(config, num_nodes, fault=fault, grid_hook=grid_hook)


# ---- oracle 5 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["tiny-llama", "tiny-gpt2"])
def test_both_transports_give_bit_identical_adapters(tmp_path, tls_files, model_name):
    """Oracle 5: same seeds, fp32 on the wire -> the same adapters bit for bit, round after
    round, over plaintext and over TLS."""
    common = {"model.name": model_name, "train.rounds": 2}
    _, flower, flower_rows = run(tmp_path / "f", "flower", **common)
    _, plain, plain_rows = run(tmp_path / "p", **common)
    _, tls, tls_rows = run(tmp_path / "t", **common, **tls_files)
    assert len({c["split"] for r in flower_rows for c in r["clients"]}) > 1  # a mix of splits
    assert flower.keys() == plain.keys() == tls.keys()
    for key in flower:
        assert torch.equal(plain[key], flower[key]) and torch.equal(tls[key], flower[key]), key
    for rows in (plain_rows, tls_rows):
        assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in flower_rows]
        assert all(r["completed"] == 4 and not r["failures"] for r in rows)
        assert all(r["bytes_up"] > 0 and r["bytes_down"] > 0 for r in rows)
    assert any(v.abs().max() > 0 for k, v in flower.items() if "lora_B" in k)  # it did train


@pytest.mark.parametrize("wire", ["float16", "bfloat16"])
def test_half_precision_wire_trains_close_to_fp32(tmp_path, wire):
    strategy, fp32, fp32_rows = run(tmp_path / "a", **{"train.rounds": 1})
    _, half, rows = run(tmp_path / "b", **{"train.rounds": 1, "stream.dtype": wire})
    assert rows[0]["completed"] == 4
    assert rows[0]["train_loss"] == pytest.approx(fp32_rows[0]["train_loss"], rel=1e-3)
    start = SplitModel("tiny-llama", strategy.settings.lora, seed=0).lora_state()
    def norm(tensors):
        return torch.cat([t.flatten() for t in tensors]).norm().item()

    moved = norm(fp32[k] - start[k] for k in fp32)
    off = norm(half[k] - fp32[k] for k in fp32)
    assert 0 < off < 0.1 * moved  # rounded on the wire: not identical (1-2 %), same training


def test_int8_wire_trains_close_to_fp32_with_a_quarter_of_the_bytes(tmp_path, monkeypatch):
    """int8 (absmax per token) both ways: the same training up to rounding, about 4x fewer
    data-plane bytes per step, and a system model that charges the bits actually sent."""
    per_step = []  # each client's data-plane bytes per step (adapters, sent as fp32, left out)
    real = StreamTransport.train_round

    def counting(self, jobs, tail_step):
        outcomes = real(self, jobs, tail_step)
        for job in jobs:
            out = outcomes[job.node_id]
            assert out.head_lora is not None, (job.node_id, out.failure, out.resent)
            adapters = to_record(job.head_lora).count_bytes() + \
                to_record(out.head_lora).count_bytes()
            per_step.append((out.bytes_up + out.bytes_down - adapters) / out.steps_done)
        return outcomes

    monkeypatch.setattr(StreamTransport, "train_round", counting)
    strategy, fp32, fp32_rows = run(tmp_path / "a", **{"train.rounds": 1})
    fp32_bytes, per_step[:] = list(per_step), []
    int8_strategy, int8, rows = run(tmp_path / "b", **{"train.rounds": 1,
                                                       "stream.dtype": "int8"})
    assert rows[0]["completed"] == 4 and not rows[0]["failures"]
    assert rows[0]["train_loss"] == pytest.approx(fp32_rows[0]["train_loss"], rel=1e-3)
    start = SplitModel("tiny-llama", strategy.settings.lora, seed=0).lora_state()

    def norm(tensors):
        return torch.cat([t.flatten() for t in tensors]).norm().item()

    moved = norm(fp32[k] - start[k] for k in fp32)
    assert 0 < norm(int8[k] - fp32[k] for k in fp32) < 0.1 * moved  # rounded, same training
    # Per step: hidden 4x16x64 both ways (fp32 16 KiB; int8 4 KiB + 64 scales), plus the mask
    # and labels (int64, exact) and the headers: 3.2x in all on this tiny model.
    assert len(fp32_bytes) == len(per_step) == 4
    assert 3.0 < sum(fp32_bytes) / sum(per_step) < 4.0
    assert strategy.costs.activation_bits == 32
    assert int8_strategy.costs.activation_bits == 8 + 32 / HIDDEN


# ---- security ----------------------------------------------------------------------------------
def _tamper(node, edit):
    def fault(msg):
        if msg.metadata.dst_node_id == node and msg.metadata.message_type == protocol.TRAIN_STREAM:
            edit(msg)
        return None
    return fault


def _set(key, value):
    return lambda msg: msg.content[protocol.STREAM].__setitem__(key, value)


class _StaleSecret:
    """Round 1 runs normally; in round 2 node 2 presents its round-1 secret."""

    def __init__(self):
        self.first = None

    def __call__(self, msg):
        if msg.metadata.dst_node_id != 2 or msg.metadata.message_type != protocol.TRAIN_STREAM:
            return None
        link = msg.content[protocol.STREAM]
        if self.first is None:
            self.first = link["secret"]
        else:
            link["secret"] = self.first
        return None


@pytest.mark.parametrize("case, fault, reason", [
    ("wrong secret", _tamper(2, _set("secret", "0" * 64)), "wrong secret"),
    ("not selected", _tamper(2, _set("node-id", "99")), "node not selected this round"),
    ("stale secret", _StaleSecret(), "stale secret"),
])
def test_a_connection_without_the_rounds_secret_is_refused(tmp_path, case, fault, reason):
    rounds = 2 if case == "stale secret" else 1
    strategy, final, rows = run(tmp_path, fault=fault, **{"train.rounds": rounds})
    row = rows[-1]
    assert row["completed"] == 3 and "train_loss" in row
    assert list(row["failures"]) == ["2"] and "PERMISSION_DENIED" in row["failures"]["2"]
    (refusal,) = strategy.transport.refusals
    assert refusal.server_round == rounds and reason in refusal.reason
    assert all(r["completed"] == 4 for r in rows[:-1])
    assert all(torch.isfinite(v).all() for v in final.values())


def test_a_silent_dialler_is_cut_without_harming_the_round(tmp_path):
    codes = []

    def mute_then_deliver(msg):
        if msg.metadata.dst_node_id == 2 and msg.metadata.message_type == protocol.TRAIN_STREAM:
            link = StreamLink.from_record(msg.content[protocol.STREAM])
            with link.channel(2**20) as channel:  # connects, never says hello
                try:
                    list(channel.stream_stream(protocol.METHOD_PATH)(iter(queue.Queue().get, None),
                                                                    timeout=5))
                except grpc.RpcError as exc:
                    codes.append(exc.code())
        return None  # then the real device runs its round

    strategy, _, (row,) = run(tmp_path, fault=mute_then_deliver,
                              **{"train.rounds": 1, "faults.step-timeout-s": 3.0})
    assert row["completed"] == 4 and not row["failures"]
    (refusal,) = strategy.transport.refusals
    assert "no hello frame within 3 s" in refusal.reason and refusal.peer.startswith("ipv4:")
    assert codes == [grpc.StatusCode.CANCELLED]  # cut by the server's hello timer


# ---- failures ----------------------------------------------------------------------------------
class Rogue:
    """A device that follows the protocol for `steps` steps, then breaks it in one `way`."""

    def __init__(self, node, way, steps=1, hold_s=2.0):
        self.node, self.way, self.steps, self.hold_s = node, way, steps, hold_s
        self.errors = []

    def __call__(self, msg):
        if msg.metadata.dst_node_id != self.node or \
                msg.metadata.message_type != protocol.TRAIN_STREAM:
            return None
        try:
            self.play(StreamLink.from_record(msg.content[protocol.STREAM]),
                      RoundTask.from_record(msg.content[CONFIG]))
        except grpc.RpcError as exc:
            self.errors.append(exc.code())
        return DROP  # a crashed device never replies through Flower either

    def play(self, link, task):
        acts = {"hidden": torch.zeros(task.batch_size, 16, HIDDEN),
                "attention_mask": torch.ones(task.batch_size, 16, dtype=torch.int64),
                "labels": torch.zeros(task.batch_size, 16, dtype=torch.int64)}
        outbox = queue.Queue()
        outbox.put(framing.encode({"kind": "hello", "node": link.node_id,
                                   "secret": link.secret}))
        with link.channel(2**26) as channel:
            responses = channel.stream_stream(protocol.METHOD_PATH)(iter(outbox.get, None),
                                                                   timeout=10)
            for step in range(self.steps):
                outbox.put(framing.encode({"kind": "activations", "step": step}, acts))
                assert framing.decode(next(responses), 2**26).meta["step"] == step
            if self.way == "replay":  # a second connection with the same (valid) secret
                other = queue.Queue()
                other.put(framing.encode({"kind": "hello", "node": link.node_id,
                                          "secret": link.secret}))
                with link.channel(2**20) as second:
                    list(second.stream_stream(protocol.METHOD_PATH)(iter(other.get, None),
                                                                   timeout=5))
            elif self.way == "stall":
                time.sleep(self.hold_s)
            elif self.way == "oversized":
                outbox.put(bytes(2**22))
                next(responses)
            elif self.way == "garbage":
                outbox.put(framing.encode({"kind": "activations", "step": self.steps},
                                          {"hidden": torch.zeros(1)}))
                next(responses)
            # "disconnect": leaving the block closes the channel mid-round


@pytest.mark.parametrize("way, reason, timeout_s", [
    ("disconnect", r"step 1: .*(closed after 1 of 3 steps|cancelled)", 2.0),
    # Which end of gRPC refuses the oversized frame first is a race; either way the stream ends.
    ("oversized", r"step 1: .*(RESOURCE_EXHAUSTED|cancelled|closed after 1 of 3 steps)", 2.0),
    ("garbage", "step 1: PayloadError: keys differ", 2.0),
    ("stall", "step 1: no activations within 0.5 s", 0.5),
])
def test_a_client_that_breaks_off_is_dropped_and_the_round_completes(tmp_path, way, reason,
                                                                     timeout_s):
    """Broken streams end the client's round at once; a stall ends it after the timeout.
    The rogue never replies through Flower, so each run still waits out one step timeout: 2 s
    (the healthy in-process clients meet even the stall case's 0.5 s), and a break the server
    missed would read "no activations within 2 s", not the expected reason."""
    rogue = Rogue(2, way)
    _, final, rows = run(tmp_path, fault=rogue,
                         **{"train.rounds": 1, "faults.step-timeout-s": timeout_s})
    (row,) = rows
    assert row["completed"] == 3 and "train_loss" in row
    assert list(row["failures"]) == ["2"] and re.search(reason, row["failures"]["2"])
    assert all(torch.isfinite(v).all() for v in final.values())


def test_a_call_dropped_mid_read_is_named_not_an_empty_rpc_error():
    """gRPC raises a bare RpcError (empty text) when a call is cut while the server reads it;
    the disconnect case above hit it on CI as the failure "step 1: RpcError: "."""
    def dropped():
        yield b"frame"
        raise grpc.RpcError()

    requests = dropped()
    assert _next_frame(requests, 0, 3) == b"frame"
    with pytest.raises(ConnectionError, match="stream cancelled or lost after 1 of 3 steps"):
        _next_frame(requests, 1, 3)


def test_a_client_that_dials_before_its_round_message_is_pushed_is_admitted(tmp_path):
    """The server registers each copy's secret before it pushes the round message: here the
    push returns only once node 2 has dialled and streamed its first step (before the fix its
    hello was refused as a wrong secret, and it never trained)."""
    rogue, dialled = Rogue(2, "disconnect"), threading.Event()

    def node_2_trains(msg):
        return msg.metadata.dst_node_id == 2 and msg.metadata.message_type == protocol.TRAIN_STREAM

    def dial_then_say_so(msg):
        try:
            return rogue(msg)
        finally:
            if node_2_trains(msg):
                dialled.set()

    def push_waits_for_node_2(grid):
        push = grid.push_messages

        def push_then_wait(messages):
            messages = list(messages)
            ids = push(messages)
            if any(node_2_trains(m) for m in messages):
                assert dialled.wait(60), "node 2 never dialled"
            return ids

        grid.push_messages = push_then_wait

    _, _, (row,) = run(tmp_path, fault=dial_then_say_so, grid_hook=push_waits_for_node_2,
                       **{"faults.step-timeout-s": 2.0, "faults.reply-timeout-s": 20.0})
    assert rogue.errors == []  # admitted, streamed its step
    assert row["completed"] == 3 and re.search(r"^step 1: ", row["failures"]["2"])


def test_a_replayed_secret_is_refused_while_its_stream_runs(tmp_path):
    rogue = Rogue(2, "replay", steps=3)  # one copy of its round message: one replay
    strategy, _, rows = run(tmp_path, fault=rogue,
                            **{"train.rounds": 1, "faults.step-timeout-s": 3.0})
    assert rogue.errors == [grpc.StatusCode.PERMISSION_DENIED]
    (refusal,) = strategy.transport.refusals
    assert refusal.node_id == 2 and "already" in refusal.reason
    assert list(rows[0]["failures"]) == ["2"]  # it streamed every step but never replied


def test_a_client_that_never_connects_is_dropped(tmp_path):
    def silent(msg):
        return DROP if (msg.metadata.dst_node_id == 3
                        and msg.metadata.message_type == protocol.TRAIN_STREAM) else None
    _, _, (row,) = run(tmp_path, fault=silent, **{"train.rounds": 1, "faults.step-timeout-s": 3.0,
                                                  "faults.reply-timeout-s": 2.0})
    assert row["completed"] == 3 and list(row["failures"]) == ["3"]
    assert "did not connect" in row["failures"]["3"]


def test_a_lost_or_late_round_message_is_sent_again_and_the_client_trains_this_round(
        tmp_path):
    """Node 1's first round message is lost (as when its SuperNode fails to fetch it: the
    SuperNode drops it, no reply ever comes), node 2's first one comes after the connect
    deadline (3 x its measured start-up + 10 s). Both get a second copy and train in the round;
    node 2's late first copy finds the round trained and is ignored. Without the resend, node 1
    would wait out the reply timeout (120 s here; 600 s by default) and be dropped."""
    copies = Counter()

    def lose_or_delay_the_first(msg):
        node = msg.metadata.dst_node_id
        if msg.metadata.message_type != protocol.TRAIN_STREAM:
            return None
        copies[node] += 1
        if node == 1 and copies[node] == 1:
            return DROP
        if node == 2 and copies[node] == 1:
            time.sleep(15.0)
        return None

    started = time.monotonic()
    _, _, (row,) = run(tmp_path, fault=lose_or_delay_the_first,
                       **{"train.rounds": 1, "faults.reply-timeout-s": 120.0,
                          "faults.connect-resends": 1})
    print(f"round with a lost and a late round message: {time.monotonic() - started:.1f} s")
    assert row["completed"] == 4 and not row["failures"], row["failures"]
    assert {c["node"]: c.get("resent", 0) for c in row["clients"]} == {1: 1, 2: 1, 3: 0, 4: 0}
    assert copies == {1: 2, 2: 2, 3: 1, 4: 1}


def test_batched_tails_train_like_sequential_ones(tmp_path, monkeypatch):
    """compute.batch-tails: requests that wait together are served in one call, batched per split,
    and
    training ends where the one-by-one server ends (oracle 5's runs are sequential)."""
    import strategies.split_fed as split_fed

    sizes, real = [], split_fed.serve_requests

    def recording(parts, requests, batch=True):
        sizes.append(len(requests))
        return real(parts, requests, batch)

    monkeypatch.setattr(split_fed, "serve_requests", recording)
    common = {"train.rounds": 2, "allocation.method": "fixed", "allocation.fixed-split": 2}
    _, one_by_one, rows = run(tmp_path / "s", **common)
    _, batched, batched_rows = run(tmp_path / "b", **common, **{"compute.batch-tails": True})
    assert max(sizes) > 1  # some steps really were served together
    assert all(r["completed"] == 4 for r in batched_rows)
    for key in one_by_one:
        torch.testing.assert_close(batched[key], one_by_one[key], rtol=0, atol=1e-5)
    assert [r["train_loss"] for r in batched_rows] == pytest.approx(
        [r["train_loss"] for r in rows], abs=1e-6)
