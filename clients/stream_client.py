"""The device's side of the stream transport: one whole round inside one Flower message.

The `train.stream` message carries the round task, the head adapter and the stream's address,
secret and wire dtype. The handler dials the server, authenticates with its first frame, and for
each step sends the activations and applies the gradient that comes back, keeping its
`DeviceSession` in memory for the round (no `context.state` round trips). It replies with the
trained head adapter and num-examples, like the final reply of the Flower-message path, with
the seconds it computed and the seconds it waited on the stream. With a task's `pace_bps` set
(`stream.pace-links`) its frames leave no faster than that rate (`edgesplit.pacing`).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from logging import DEBUG

import grpc
import torch
from flwr.app import ConfigRecord, MetricRecord, RecordDict
from flwr.common.logger import log

from clients import faults
from clients.cache import HEAD_LOCK
from clients.device import Device
from clients.privacy import PrivacyAccount
from clients.session import DeviceSession
from edgesplit import framing
from edgesplit.blocks import TokenBlocks
from edgesplit.dp import ReleaseNoise, probe_scale
from edgesplit.pacing import Pacer
from edgesplit.protocol import (
    ACTIVATIONS,
    BODY,
    BODY_GRAD,
    COMPUTE_S,
    CONFIG,
    EXCHANGE_S,
    GRADIENT,
    HELLO,
    LORA,
    METHOD_PATH,
    METRICS,
    PRIVACY_EPSILON,
    PRIVACY_NOISE_MULTIPLIER,
    STREAM,
    RoundTask,
    activation_spec,
    gradient_spec,
    step_exchanges,
)
from edgesplit.records import PayloadError, check_tensors, to_record
from edgesplit.split_model import SplitModel

# A server refusing a call as busy (handshake limits) or not reachable yet: dial again.
_BUSY = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
_RETRY_FIRST_S, _RETRY_MAX_S = 0.05, 1.0
# In context.state: the last round this node trained. The server sends a round's message again
# to a device that did not connect in time (`strategies.stream_transport`); a copy that arrives
# after the first one trained is answered at once instead of dialling a finished round.
_TRAINED = "stream.trained"


@dataclass(frozen=True)
class StreamLink:
    """Where and how to reach the round's stream, as the server announced it."""

    address: str
    node_id: int
    secret: str
    wire_dtype: str
    root_certificates: bytes  # empty = plaintext

    @classmethod
    def from_record(cls, record: ConfigRecord) -> StreamLink:
        try:
            link = cls(str(record["address"]), int(record["node-id"]), str(record["secret"]),
                       str(record["dtype"]), bytes(record["root-certificates"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad stream record: {exc}") from exc
        if link.wire_dtype not in framing.WIRE_DTYPES:
            raise ValueError(f"unknown wire dtype {link.wire_dtype!r}")
        return link

    def channel(self, max_bytes: int) -> grpc.Channel:
        options = [("grpc.max_receive_message_length", max_bytes),
                   ("grpc.max_send_message_length", max_bytes),
                   ("grpc.enable_http_proxy", 0)]  # the stream goes straight to the server
        if not self.root_certificates:
            return grpc.insecure_channel(self.address, options=options)
        credentials = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
        return grpc.secure_channel(self.address, credentials, options=options)


class StreamCall:
    """The device's call on the round's stream: the hello, then one exchange per frame.

    The first exchange redials while the server turns the call away as busy
    (RESOURCE_EXHAUSTED: a handshake limit under a flood, `strategies.stream_admission`;
    UNAVAILABLE: not reachable), backing off from 50 ms to 1 s, for up to `patience_s`. The
    server has `turn_s` to answer each frame, so a vanished server cannot hold the device
    forever; the device's own compute between frames does not count (a whole-call deadline
    did, and cut slow but healthy devices: cold Ray actors on a loaded machine in the soak).
    """

    def __init__(self, link: StreamLink, max_bytes: int, turn_s: float,
                 patience_s: float) -> None:
        self.link, self.max_bytes = link, max_bytes
        self.turn_s, self.patience_s = turn_s, patience_s
        self.timed_out = False  # the server let a turn pass without answering
        self._hello = framing.encode({"kind": HELLO, "node": link.node_id,
                                      "secret": link.secret})
        self._channel: grpc.Channel | None = None
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._responses: Iterator[bytes] | None = None
        self._admitted = False

    def _dial(self) -> None:
        self.close()
        self._channel = self.link.channel(self.max_bytes)
        self._outbox = queue.Queue()
        self._outbox.put(self._hello)
        requests: Iterator[bytes] = iter(self._outbox.get, None)  # None half-closes the stream
        self._responses = self._channel.stream_stream(METHOD_PATH)(requests)

    def exchange(self, frame: bytes) -> bytes | None:
        """Send `frame`; return the server's next frame (None if it ended the stream)."""
        if self._admitted:
            self._outbox.put(frame)
            return self.next_frame()
        give_up, wait = time.monotonic() + self.patience_s, _RETRY_FIRST_S
        while True:
            self._dial()
            self._outbox.put(frame)
            try:
                raw = self.next_frame()
            except grpc.RpcError as exc:
                if exc.code() not in _BUSY or time.monotonic() + wait > give_up:
                    raise
                time.sleep(wait)
                wait = min(_RETRY_MAX_S, 2 * wait)
                continue
            self._admitted = True
            return raw

    def next_frame(self) -> bytes | None:
        """The server's next frame within `turn_s` (None if it ended the stream)."""
        if self._responses is None:
            return None
        timer = threading.Timer(self.turn_s, self._time_out)
        timer.start()
        try:
            return next(self._responses, None)
        finally:
            timer.cancel()

    def _time_out(self) -> None:
        self.timed_out = True
        self.cancel()

    def half_close(self) -> None:
        self._outbox.put(None)

    def cancel(self) -> None:
        """Cut the call (the next read fails), as a device that drops its link."""
        if self._responses is not None:
            self._responses.cancel()

    def close(self) -> None:
        self._outbox.put(None)  # releases gRPC's request thread on any exit
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def private_release(device: Device, model: SplitModel, data: TokenBlocks, task: RoundTask,
                    lora: dict[str, torch.Tensor]) -> tuple[ReleaseNoise, float, float] | None:
    """Under `privacy.epsilon`: how this round's frames are clipped and noised, the epsilon
    spent after the round and the noise multiplier; `BudgetSpent` (nothing sent) when the
    round does not fit the budget. None without differential privacy."""
    if device.privacy is None:
        return None
    if not task.u_shaped:
        raise ValueError("privacy.epsilon needs a U-shaped split (privacy.device-tail-layers >= 1)")
    account = PrivacyAccount.open(device.privacy, data, task)
    spent = account.admit(data, task)
    block_size = data.input_ids.shape[1]
    scale = probe_scale(model, task.split, lora, block_size, task.batch_size,
                        tail_from=model.num_layers - task.device_tail_layers)
    release = ReleaseNoise.plan(scale, device.privacy, account.noise_multiplier, block_size)
    return release, spent, account.noise_multiplier


def train_stream(content: RecordDict, state: RecordDict, device: Device) -> RecordDict:
    """Run every local step of the round over the stream; reply with the trained adapter.

    Head/tail: send activations, apply the gradient. U-shaped: send activations without labels,
    run the device's tail and loss on the body output that comes back, send the gradient at the
    body output, then apply the gradient that reaches the head.
    """
    task = RoundTask.from_record(content[CONFIG])
    link = StreamLink.from_record(content[STREAM])
    wire = framing.WIRE_DTYPES[link.wire_dtype]
    if _TRAINED in state and int(state[_TRAINED]["round"]) >= task.server_round:
        raise ValueError(f"round {task.server_round} was trained already (this is a copy of "
                         "its message sent again)")
    with HEAD_LOCK:
        model, data = device.model(task.split, task.device_tail_layers), device.shard().train
        lora = device.received_lora(content[LORA], task.split, task.device_tail_layers)
        privacy = private_release(device, model, data, task, lora)
        session = DeviceSession(model, data, task, lora, noise_std=device.activation_noise_std,
                                release=privacy[0] if privacy else None)
        hidden_spec = gradient_spec(task.batch_size, data.input_ids.shape[1],
                                    model.config.hidden_size)
        sent_specs = [spec for _, spec, _ in step_exchanges(framing.with_batch(activation_spec(
            model.config.hidden_size, data.input_ids.shape[1]), task.batch_size), task.u_shaped)]
        started = time.perf_counter()
        acts = session.activations(0)
        compute_s = time.perf_counter() - started  # the device's own work, for the metrics
    profile = device.profile()
    # A shaped uplink (the testbed's) carries the frames at its own rate after pacing.
    pacer = (Pacer(task.pace_bps, profile.uplink_bps if profile.link_shaped else math.inf)
             if task.pace_bps > 0 else None)
    exchange_s = 0.0  # waiting on the stream: pacing, transfers, the server's queue and tail
    reply_limit = framing.max_frame_bytes(hidden_spec, wire)  # every reply is one hidden tensor
    max_bytes = max(reply_limit, *(framing.max_frame_bytes(spec, wire) for spec in sent_specs))
    call = StreamCall(link, max_bytes, turn_s=device.step_timeout_s,
                      patience_s=device.step_timeout_s)
    where = f"device: round {task.server_round}"
    log(DEBUG, "%s: dialling %s (split %d, %d steps)", where, link.address, task.split,
        task.local_steps)
    dialled = time.perf_counter()

    def exchange(kind: str, step: int, tensors: dict, expected: str) -> torch.Tensor:
        nonlocal exchange_s
        frame = framing.encode({"kind": kind, "step": step}, tensors, wire)
        started = time.perf_counter()
        if pacer is not None:
            pacer.wait(len(frame))
        raw = call.exchange(frame)
        exchange_s += time.perf_counter() - started
        if raw is None:
            raise PayloadError(f"the server ended the stream before step {step}'s {expected}")
        frame = framing.decode(raw, reply_limit, wire)
        if frame.meta.get("kind") != expected or frame.meta.get("step") != step:
            raise PayloadError(f"expected the {expected} of step {step}, got {frame.meta}")
        return check_tensors(frame.tensors, hidden_spec, framing.decoded_dtype(wire))["hidden"]

    try:
        for step in range(task.local_steps):
            faults.at_step(device, task.server_round, step, task.local_steps, call)
            if task.u_shaped:
                body = exchange(ACTIVATIONS, step, acts, BODY)
                with HEAD_LOCK:
                    started = time.perf_counter()
                    tail_grad = session.tail_backward(step, body)
                    compute_s += time.perf_counter() - started
                grad = exchange(BODY_GRAD, step, {"hidden": tail_grad}, GRADIENT)
            else:
                grad = exchange(ACTIVATIONS, step, acts, GRADIENT)
            if step == 0:
                log(DEBUG, "%s: admitted, step 0 answered %.2f s after dialling", where,
                    time.perf_counter() - dialled)
            elif (step + 1) % max(1, task.local_steps // 4) == 0:
                log(DEBUG, "%s: step %d/%d (%.1f s)", where, step + 1, task.local_steps,
                    time.perf_counter() - dialled)
            if step + 1 == task.local_steps:
                call.half_close()
            with HEAD_LOCK:
                started = time.perf_counter()
                session.apply_gradient(step, grad)
                if step + 1 < task.local_steps:
                    acts = session.activations(step + 1)
                compute_s += time.perf_counter() - started
        if call.next_frame() is not None:  # the server ends the call on our half-close
            raise PayloadError("a frame after the last gradient")
    except grpc.RpcError as exc:
        if call.timed_out:
            raise TimeoutError(f"stream to {link.address}: no answer within "
                               f"{call.turn_s:g} s") from exc
        raise ConnectionError(f"stream to {link.address}: {exc.code().name}: "
                              f"{exc.details()}") from exc
    finally:
        call.close()
    state[_TRAINED] = ConfigRecord({"round": task.server_round})
    log(DEBUG, "%s: trained %d steps in %.1f s", where, task.local_steps,
        time.perf_counter() - dialled)
    metrics = MetricRecord({"num-examples": len(data), COMPUTE_S: compute_s,
                            EXCHANGE_S: exchange_s})
    if privacy:
        metrics[PRIVACY_EPSILON] = privacy[1]
        metrics[PRIVACY_NOISE_MULTIPLIER] = privacy[2]
    if session.losses:  # U-shaped: only the device knows its loss
        metrics["train-losses"] = session.losses
    return RecordDict({LORA: to_record(session.lora()), METRICS: metrics})
