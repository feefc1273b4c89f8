"""What server and devices say to each other: every message, record and frame name, the round
task and the payload specs. Both apps import this module, so the two ends cannot drift apart.

It imports no torch at module level: the thin ClientApp that forwards messages to a device agent
(`clients.agent_link`) reads the names here without paying for torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flwr.app import ConfigRecord

if TYPE_CHECKING:
    from edgesplit.records import Spec

# Flower message types ("train.start" is served by `@app.train("start")`, see `action`).
# The device's profile, once per run; the first time also a calibration when the message
# carries a `calibration` request (time a few training steps of the head -> seconds per layer).
QUERY_PROFILE = "query.profile"
TRAIN_START = "train.start"  # Flower-message data plane: round task + head adapter -> step 0
TRAIN_STEP = "train.step"  # gradient of step s-1 -> activations of step s, or the final adapter
TRAIN_STREAM = "train.stream"  # stream data plane: round task + head adapter + stream address
EVALUATE = "evaluate"  # head adapter -> activations of validation batches

# Record names inside a message's RecordDict.
CONFIG = "config"
LORA = "lora"
ACTIVATIONS = "activations"
GRADIENT = "gradient"
PROFILE = "profile"
CALIBRATION = "calibration"  # in a profile query: request (shape, steps), reply (seconds)
METRICS = "metrics"
STREAM = "stream"  # the stream's address, secret and wire dtype in a train.stream message

# Metrics of a device's final training reply: seconds it spent computing in the round, and
# seconds it waited on the stream for the server's answers (its pacing, the transfers both ways,
# the server's queue and tail).
COMPUTE_S = "compute-s"
EXCHANGE_S = "exchange-s"
# Under `privacy.epsilon`, in the same reply: the epsilon the device has spent after the round
# (its most released block) and the noise multiplier it planned.
PRIVACY_EPSILON = "privacy-epsilon"  # rename-keys: keep (a metric name, not a run-config key)
PRIVACY_NOISE_MULTIPLIER = "privacy-noise-multiplier"

# Stream frame kinds: device -> server "hello", then per step "activations" (and in a U-shaped
# split "body-grad"); server -> device "gradient" (and "body").
HELLO = "hello"
BODY = "body"  # server -> device: the body's output, input of the device's tail
BODY_GRAD = "body-grad"  # device -> server: d loss / d body output

# gRPC method of the stream, served with generic handlers and raw-bytes (de)serialisers.
SERVICE, METHOD = "edgesplit.SplitStream", "Train"
METHOD_PATH = f"/{SERVICE}/{METHOD}"


def action(message_type: str) -> str:
    """The part of a message type a ClientApp decorator names: "train.start" -> "start"."""
    return message_type.partition(".")[2]


@dataclass(frozen=True)
class RoundTask:
    """What one device does in one training round."""

    server_round: int
    split: int
    local_steps: int
    batch_size: int
    learning_rate: float
    optimizer: str
    seed: int
    device_tail_layers: int = 0  # U-shaped split: the device also runs the last t layers
    pace_bps: float = 0.0  # stream: pace frames both ways at this rate (bit/s); 0 = no pacing

    @property
    def u_shaped(self) -> bool:
        return self.device_tail_layers > 0

    def to_record(self) -> ConfigRecord:
        return ConfigRecord(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, record: ConfigRecord) -> RoundTask:
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        missing = set(fields) - set(record.keys())
        if missing:
            raise ValueError(f"round task lacks {sorted(missing)}")
        return cls(**{name: record[name] for name in fields})

    def batch_index(self, step: int) -> int:
        """Global index of the batch used at local step `step` (fresh batches every round)."""
        return (self.server_round - 1) * self.local_steps + step


def step_exchanges(activation_spec: Spec, u_shaped: bool) -> list[tuple[str, Spec, str]]:
    """The data-plane exchanges of one local step: (request kind, its spec, reply kind).

    Head/tail: activations (with labels) -> gradient. U-shaped: activations without labels ->
    body output, then the gradient at the body's output -> gradient at its input; the labels,
    and so the text, never leave the device.
    """
    if not u_shaped:
        return [(ACTIVATIONS, activation_spec, GRADIENT)]
    inputs = {k: v for k, v in activation_spec.items() if k != "labels"}
    return [(ACTIVATIONS, inputs, BODY), (BODY_GRAD, {"hidden": activation_spec["hidden"]},
                                          GRADIENT)]


def activation_spec(hidden_size: int, block_size: int) -> Spec:
    """Activations crossing the split: hidden states, padding mask and labels (any batch size)."""
    import torch

    return {
        "hidden": ((-1, block_size, hidden_size), torch.float32),
        "attention_mask": ((-1, block_size), torch.int64),
        "labels": ((-1, block_size), torch.int64),
    }


def gradient_spec(batch: int, block_size: int, hidden_size: int) -> Spec:
    """The gradient of the loss w.r.t. the activations a device sent."""
    import torch

    return {"hidden": ((batch, block_size, hidden_size), torch.float32)}
