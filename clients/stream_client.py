"""The device's side of the stream transport: one whole round inside one Flower message.

The `train.stream` message carries the round task, the head adapter and the stream's address,
secret and wire dtype. The handler dials the server, authenticates with its first frame, and for
each step sends the activations and applies the gradient that comes back, keeping its
`DeviceSession` in memory for the round (no `context.state` round trips). It replies with the
trained head adapter and num-examples, like the final reply of the Flower-message path.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from clients.device import DeviceSession
from clients.handlers import Device
from fl_app import framing
from fl_app.protocol import CONFIG, LORA, METRICS, RoundTask, activation_spec, gradient_spec
from fl_app.records import PayloadError, check_tensors, to_record

# The head model is a process-level cache whose LoRA slots a session binds in place: devices that
# share a process (the in-process test grid) take turns; one device per process never waits.
_HEAD_LOCK = threading.Lock()


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


def train_stream(content: RecordDict, _state: RecordDict, device: Device) -> RecordDict:
    """Run every local step of the round over the stream; reply with the trained head adapter."""
    task = RoundTask.from_record(content[CONFIG])
    link = StreamLink.from_record(content[framing.STREAM])
    wire = framing.WIRE_DTYPES[link.wire_dtype]
    with _HEAD_LOCK:
        model, data = device.model(task.split), device.shard().train
        session = DeviceSession(model, data, task, device.received_lora(content[LORA], task.split))
        grad_spec = gradient_spec(task.batch_size, data.input_ids.shape[1],
                                  model.config.hidden_size)
        acts_spec = framing.with_batch(activation_spec(model.config.hidden_size,
                                                       data.input_ids.shape[1]), task.batch_size)
        acts = session.activations(0)
    grad_limit = framing.max_frame_bytes(grad_spec, wire)
    max_bytes = max(grad_limit, framing.max_frame_bytes(acts_spec, wire))
    outbox: queue.Queue[bytes | None] = queue.Queue()
    outbox.put(framing.encode({"kind": framing.HELLO, "node": link.node_id,
                               "secret": link.secret}))
    requests: Iterator[bytes] = iter(outbox.get, None)  # None half-closes the stream
    # Bounds the whole call, so a vanished server cannot hold the device forever.
    deadline = device.settings.step_timeout_s * (task.local_steps + 1)
    with link.channel(max_bytes) as channel:
        call = channel.stream_stream(framing.METHOD_PATH)
        responses = call(requests, timeout=deadline)
        try:
            for step in range(task.local_steps):
                outbox.put(framing.encode({"kind": framing.ACTIVATIONS, "step": step}, acts,
                                          wire))
                raw = next(responses, None)
                if raw is None:
                    raise PayloadError(f"the server ended the stream before step {step}'s "
                                       "gradient")
                frame = framing.decode(raw, grad_limit)
                if frame.meta.get("kind") != framing.GRADIENT or frame.meta.get("step") != step:
                    raise PayloadError(f"expected the gradient of step {step}, got {frame.meta}")
                grad = check_tensors(frame.tensors, grad_spec, wire)["hidden"]
                if step + 1 == task.local_steps:
                    outbox.put(None)
                with _HEAD_LOCK:
                    session.apply_gradient(step, grad)
                    if step + 1 < task.local_steps:
                        acts = session.activations(step + 1)
            if next(responses, None) is not None:  # the server ends the call on our half-close
                raise PayloadError("a frame after the last gradient")
        except grpc.RpcError as exc:
            raise ConnectionError(f"stream to {link.address}: {exc.code().name}: "
                                  f"{exc.details()}") from exc
        finally:
            outbox.put(None)  # releases gRPC's request thread on any exit
    metrics = MetricRecord({"num-examples": len(data)})
    return RecordDict({LORA: to_record(session.lora()), METRICS: metrics})

