"""What server and devices say to each other: message types, round settings, payload specs.

Both apps import this module, so the two ends cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from flwr.app import ConfigRecord

from fl_app import framing
from fl_app.records import Spec

# Message types (Flower routes "train.start" to `@app.train("start")`, and so on).
QUERY_PROFILE = "query.profile"
TRAIN_START = "train.start"  # round settings + head adapter -> activations of step 0
TRAIN_STEP = "train.step"  # gradient of step s-1 -> activations of step s, or the final adapter
EVALUATE = "evaluate"  # head adapter -> activations of validation batches

# Record names inside a message's RecordDict.
CONFIG = "config"
LORA = "lora"
ACTIVATIONS = "activations"
GRADIENT = "gradient"
PROFILE = "profile"
METRICS = "metrics"



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
    tail_from: int = 0  # U-shaped split: the device also runs layers [tail_from, L); 0 = none

    @property
    def u_shaped(self) -> bool:
        return self.tail_from > 0

    def device_layers(self, num_layers: int) -> list[int]:
        return device_layers(self.split, self.tail_from, num_layers)

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


def device_layers(split: int, tail_from: int, num_layers: int) -> list[int]:
    """Decoder layers whose LoRA a device trains: its head [0, split), and its tail
    [tail_from, L) in a U-shaped split (tail_from > 0)."""
    return [*range(split), *range(tail_from, num_layers if tail_from else 0)]


# Frame kinds of a U-shaped step beyond "activations" and "gradient" (see `step_exchanges`).
BODY = "body"  # server -> device: the body's output, input of the device's tail
BODY_GRAD = "body-grad"  # device -> server: d loss / d body output


def step_exchanges(activation_spec: Spec, u_shaped: bool) -> list[tuple[str, Spec, str]]:
    """The data-plane exchanges of one local step: (request kind, its spec, reply kind).

    Head/tail: activations (with labels) -> gradient. U-shaped: activations without labels ->
    body output, then the gradient at the body's output -> gradient at its input; the labels,
    and so the text, never leave the device.
    """
    if not u_shaped:
        return [(framing.ACTIVATIONS, activation_spec, framing.GRADIENT)]
    inputs = {k: v for k, v in activation_spec.items() if k != "labels"}
    return [(framing.ACTIVATIONS, inputs, BODY),
            (BODY_GRAD, {"hidden": activation_spec["hidden"]}, framing.GRADIENT)]


def activation_spec(hidden_size: int, block_size: int) -> Spec:
    """Activations crossing the split: hidden states, padding mask and labels (any batch size)."""
    return {
        "hidden": ((-1, block_size, hidden_size), torch.float32),
        "attention_mask": ((-1, block_size), torch.int64),
        "labels": ((-1, block_size), torch.int64),
    }


def gradient_spec(batch: int, block_size: int, hidden_size: int) -> Spec:
    """The gradient of the loss w.r.t. the activations a device sent."""
    return {"hidden": ((batch, block_size, hidden_size), torch.float32)}
