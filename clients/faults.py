"""Fault injection: chosen devices misbehave mid-round, so tests can prove the server copes.

The run config's `faults.inject = "partition:kind,..."` (e.g. `"2:raise,5:crash"`) names which
partitions misbehave, in every round. `faults.rate = p` instead makes every device misbehave in a
round with probability p, with a kind drawn from `faults.kinds`; the draw is seeded by (seed,
round, partition), so the same devices fail in the same rounds in every run of a config (and in
a resumed one). Each faulty device trains step 0 normally; at the start of local step
`FAULT_STEP`, before that step's activations leave (so rounds of one local step have no fault
point), it:

- ``raise``: the handler raises `InjectedFault` (Flower turns it into an error reply);
- ``silent``: it never answers: it sleeps past the step timeout, then gives up (raises), so the
  server has to time it out; the sleep is bounded so no runtime waits on it forever;
- ``crash``: its process dies (SIGKILL), as a device that loses power would;
- ``disconnect``: on the stream transport it cuts its gRPC stream; on the Flower-message
  transport its message is lost (it behaves as ``silent``);
- ``straggle``: it stalls once for longer than the step timeout, then carries on as if nothing
  happened (whatever it sends late must be ignored).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Protocol

import numpy as np

KINDS = ("raise", "silent", "crash", "disconnect", "straggle")
FAULT_STEP = 1  # mid-round: step 0 went through, so the server has state for this client
OVERRUN = 1.5  # silent and straggling devices sleep this many step timeouts
_DRAW = 0xFA17  # a fourth seed word: the fault draws are their own random stream


class FaultyDevice(Protocol):
    """What `at_step` reads of a `clients.device.Device`."""

    partition_id: int
    step_timeout_s: float

    def fault_in(self, server_round: int) -> str | None: ...


class Call(Protocol):
    """What a disconnect needs of the stream transport's call."""

    def cancel(self) -> object: ...


class InjectedFault(RuntimeError):
    """The failure a faulty device raises (its message names the kind)."""


def parse(spec: str) -> dict[int, str]:
    """`"partition:kind,..."` -> {partition: kind}; ValueError naming the key on bad input, so
    the server refuses a wrong spec at start instead of devices failing one by one."""
    faults: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        partition, sep, kind = (x.strip() for x in item.partition(":"))
        if not sep or not partition.isdigit():
            raise ValueError(f"config faults.inject = {spec!r}: {item!r} is not "
                             "'partition:kind' with a partition id >= 0")
        if kind not in KINDS:
            raise ValueError(f"config faults.inject = {spec!r}: unknown kind {kind!r}, "
                             f"one of {KINDS}")
        if int(partition) in faults:
            raise ValueError(f"config faults.inject = {spec!r}: partition {partition} twice")
        faults[int(partition)] = kind
    return faults


def parse_kinds(spec: str) -> tuple[str, ...]:
    """`"kind,..."` -> the kinds a random fault is drawn from; ValueError naming the key."""
    kinds = tuple(dict.fromkeys(k.strip() for k in spec.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in KINDS]
    if not kinds or unknown:
        raise ValueError(f"config faults.kinds = {spec!r}: a comma-separated list of {KINDS}")
    return kinds


def drawn(rate: float, kinds: tuple[str, ...], seed: int, server_round: int,
          partition: int) -> str | None:
    """The random fault of one partition in one round: a kind of `kinds` with probability
    `rate`, else None; the same for every message of that round."""
    if rate <= 0:
        return None
    rng = np.random.default_rng([seed, server_round, partition, _DRAW])
    return str(kinds[rng.integers(len(kinds))]) if rng.random() < rate else None


def at_step(device: FaultyDevice, server_round: int, step: int, local_steps: int,
            stream: Call | None = None) -> None:
    """Misbehave here if this device is faulty in `server_round` and `step` is the fault step;
    call it once per local step, before the step's activations are computed. `stream` is the
    stream transport's call (None on the Flower-message transport)."""
    kind = device.fault_in(server_round)
    if kind is None or step != FAULT_STEP or step >= local_steps:
        return
    where = f"partition {device.partition_id}, step {step}"
    if kind == "raise":
        raise InjectedFault(f"injected fault: raise ({where})")
    if kind == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "disconnect" and stream is not None:
        stream.cancel()  # the caller's next read fails: the stream is gone
        return
    time.sleep(OVERRUN * device.step_timeout_s)
    if kind != "straggle":
        raise InjectedFault(f"injected fault: {kind} ({where}) gave up without answering")
