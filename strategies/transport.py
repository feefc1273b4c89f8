"""The data plane: how a round's per-step activations and gradients travel.

A transport runs one training round for a set of clients: it hands each client its task and head
adapter, feeds every activation it receives to the server's `tail_step`, returns the gradient, and
collects the trained head adapters. The strategy sees only `Transport.train_round`, so the stream
(`stream_transport`) and the Flower-message (`flower_transport`) data planes are interchangeable
and give bit-identical adapters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch
from flwr.app import RecordDict

from edgesplit.protocol import (
    COMPUTE_S,
    LORA,
    METRICS,
    PRIVACY_EPSILON,
    PRIVACY_NOISE_MULTIPLIER,
    RoundTask,
)
from edgesplit.records import PayloadError, from_record, lora_spec

#: The data planes a run may name (run config `transport`): `flower_transport.FlowerTransport`
#: and `stream_transport.StreamTransport`.
TRANSPORTS = ("flower", "stream")

# The server's side of the data plane: the requests waiting now (node -> tensors) -> for each
# node its answer (the gradient, or the U-shaped body's output) or the error that drops it.
TailStep = Callable[[Mapping[int, Mapping[str, torch.Tensor]]],
                    Mapping[int, "torch.Tensor | Exception"]]


def answer_one(tail_step: TailStep, node: int, tensors: Mapping[str, torch.Tensor]
               ) -> torch.Tensor:
    """One node's request through `tail_step`; its error is raised here."""
    answer = tail_step({node: tensors})[node]
    if isinstance(answer, Exception):
        raise answer
    return answer


@dataclass
class TrainJob:
    """One client's work for the round."""

    node_id: int
    task: RoundTask
    head_lora: dict[str, torch.Tensor]
    downlink_bps: float = math.inf  # its downlink's own rate when shaped (pacing adds the rest)
    expected_start_s: float | None = None  # its measured start-up (None: not measured yet)


@dataclass
class TrainOutcome:
    """What came back from one client (`failure` set when it was dropped)."""

    node_id: int
    head_lora: dict[str, torch.Tensor] | None = None
    num_examples: int = 0
    failure: str | None = None
    steps_done: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    transport_s: float = 0.0  # wall time spent waiting for this client's replies
    step_times: list[float] = field(default_factory=list)  # the server's time per exchange
    server_s: float = 0.0  # from each frame's arrival to its answer: queue + tail (stream)
    pacing_s: float = 0.0  # the server's pacing of its answers (stream, `stream.pace-links`)
    device_exchange_s: float | None = None  # the device's wait on the stream, as it reports it
    device_losses: list[float] = field(default_factory=list)  # U-shaped: the device's losses
    device_compute_s: float | None = None  # the device's own compute time, as it reports it
    round_s: float = 0.0  # wall time from the round's first message to the final reply
    start_s: float | None = None  # from the round's first message to its first step (stream)
    privacy: dict[str, float] = field(default_factory=dict)  # privacy.epsilon: what it spent
    resent: int = 0  # times the round message was sent again to a client late to connect


def read_final_reply(content: RecordDict, job: TrainJob
                     ) -> tuple[dict[str, torch.Tensor], int, list[float], float | None]:
    """A client's last reply of the round: its trained adapter (exactly the layers it was
    sent), the positive number of examples it weighs in aggregation with, in a U-shaped split
    its loss at every local step (empty otherwise), and the seconds it spent computing (None
    if it does not say)."""
    if LORA not in content.array_records or METRICS not in content.metric_records:
        raise PayloadError("final reply lacks the head adapter or its metrics")
    head_lora = from_record(content[LORA], lora_spec(job.head_lora))
    metrics = content[METRICS]
    num_examples = metrics.get("num-examples")  # None when missing
    if not isinstance(num_examples, int) or num_examples <= 0:
        raise PayloadError(f"num-examples {num_examples!r} is not a positive integer")
    losses = metrics.get("train-losses", []) if job.task.u_shaped else []
    if job.task.u_shaped and not (
            isinstance(losses, list) and len(losses) == job.task.local_steps
            and all(isinstance(x, float) and math.isfinite(x) for x in losses)):
        raise PayloadError(f"train-losses must be {job.task.local_steps} finite floats")
    compute_s = metrics.get(COMPUTE_S)
    if compute_s is not None and not (isinstance(compute_s, float) and math.isfinite(compute_s)
                                      and compute_s >= 0):
        raise PayloadError(f"{COMPUTE_S} {compute_s!r} is not a finite float >= 0")
    return head_lora, num_examples, list(losses), compute_s


def read_privacy(metrics: Mapping) -> dict[str, float]:
    """The privacy spend a device reports in its final reply (`privacy.epsilon`), under the
    metrics row's names; empty when it reports none."""
    spend = {}
    for key, name in ((PRIVACY_EPSILON, "privacy_epsilon"),
                      (PRIVACY_NOISE_MULTIPLIER, "privacy_noise_multiplier")):
        value = metrics.get(key)
        if value is None:
            continue
        if not (isinstance(value, float) and math.isfinite(value) and value >= 0):
            raise PayloadError(f"{key} {value!r} is not a finite float >= 0")
        spend[name] = value
    return spend


class Transport(Protocol):
    def train_round(self, jobs: list[TrainJob], tail_step: TailStep) -> dict[int, TrainOutcome]:
        """Run every job to completion or failure; never raise for a client's fault."""
        ...

    def close(self) -> None:
        """Release what the transport holds across rounds (at the end of the run)."""
        ...
