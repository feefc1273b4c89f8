"""A discrete-event simulation of the stream round: the oracle the FIFO queue model answers to.

``makespan_model.fifo_response_s`` approximates the round with a mean-value analysis; this
module plays the round out event by event instead, sharing none of that analysis. Each client
starts its data plane at its start offset and runs ``local_steps`` steps; one step is

    device forward -> uplink -> the server's FIFO queue -> tail -> downlink -> device backward

with its own device and its own paced access link (a client's link carries only its own
frames, so it never queues), and one tail worker per server that runs the tails one at a time,
first come first served (the stream transport's tail worker). Service times are fixed, or
drawn around their mean with a coefficient of variation (``jitter_cv``) when the round should
not be perfectly periodic.

Written with ``heapq`` rather than a simulation library: one FIFO resource and three kinds of
event need no more, and the loop below is the whole model.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import numpy as np

from .makespan_model import MakespanScenario, server_work_s, step_times

#: Share of a device's step spent in its forward pass (a backward costs about two forwards).
FORWARD_FRACTION = 1.0 / 3.0


@dataclass(frozen=True)
class SimulatedRound:
    """What one simulated round measured, per client (arrays of shape (N,)) and as a whole.

    start_s, end_s : when each client's data plane began and its last backward ended.
    response_s : mean seconds per step from the activations' arrival at the server to the end of
        their tail (queue + tail), the quantity ``fifo_response_s`` predicts.
    queue_s : mean seconds per step waiting for the tail worker.
    span_s : from the first data plane's start to the last one's end.
    busy_s : per server, seconds its worker ran tails.
    """

    start_s: np.ndarray
    end_s: np.ndarray
    response_s: np.ndarray
    queue_s: np.ndarray
    span_s: float
    busy_s: np.ndarray

    @property
    def dataplane_s(self) -> np.ndarray:
        """Each client's data-plane time (its start to its end)."""
        return self.end_s - self.start_s


def simulate(forward_s, uplink_s, work_s, downlink_s, backward_s, association=None,
             start_s=None, local_steps: int = 1, jitter_cv: float = 0.0,
             seed: int = 0) -> SimulatedRound:
    """Play one round of ``local_steps`` steps per client; every argument per client, (N,).

    Parameters
    ----------
    forward_s, backward_s : device seconds of a step's forward and backward.
    uplink_s, downlink_s : seconds on the client's link for the activations and the gradients.
    work_s : seconds of the client's tail on its server's worker.
    association : server of each client (default: all on server 0).
    start_s : when each client's data plane starts (default: all at 0).
    jitter_cv : each service time is drawn from a gamma law with its mean and this coefficient
        of variation (0: deterministic).
    seed : seed of the jitter.
    """
    durations = [np.atleast_1d(np.asarray(x, float))
                 for x in (forward_s, uplink_s, work_s, downlink_s, backward_s)]
    n = durations[0].size
    if any(d.shape != (n,) for d in durations) or np.any(np.concatenate(durations) < 0):
        raise ValueError("forward, uplink, work, downlink and backward seconds must be (N,) "
                         "arrays of non-negative numbers")
    if local_steps < 1:
        raise ValueError("local_steps must be >= 1")
    server = np.zeros(n, int) if association is None else np.asarray(association, int)
    start = np.zeros(n) if start_s is None else np.asarray(start_s, float).reshape(n)
    rng = np.random.default_rng(seed)

    def draw(mean: float) -> float:
        if jitter_cv <= 0.0 or mean <= 0.0:
            return mean
        shape = 1.0 / jitter_cv**2
        return float(rng.gamma(shape, mean / shape))

    forward, uplink, work, downlink, backward = durations
    n_servers = int(server.max()) + 1
    # Per server: the (arrival time, client) of the steps waiting for its worker, oldest first.
    queues: list[deque[tuple[float, int]]] = [deque() for _ in range(n_servers)]
    idle = [True] * n_servers
    busy = np.zeros(n_servers)
    steps_done = np.zeros(n, int)
    response, waited = np.zeros(n), np.zeros(n)
    end = np.zeros(n)
    events: list[tuple[float, int, str, int, float]] = []  # (time, order, kind, client, arrival)
    order = 0

    def schedule(time: float, kind: str, client: int, arrival: float = 0.0) -> None:
        nonlocal order
        heapq.heappush(events, (time, order, kind, client, arrival))
        order += 1

    def serve(m: int, now: float) -> None:
        """Start the oldest waiting tail on server m's worker, if any."""
        if idle[m] and queues[m]:
            arrival, client = queues[m].popleft()
            idle[m] = False
            tail = draw(work[client])
            busy[m] += tail
            waited[client] += now - arrival
            schedule(now + tail, "tail_done", client, arrival)

    for c in range(n):
        schedule(start[c] + draw(forward[c]), "sent", c)
    while events:
        now, _, kind, c, arrival = heapq.heappop(events)
        if kind == "sent":  # forward done: the activations cross the uplink
            schedule(now + draw(uplink[c]), "arrived", c)
        elif kind == "arrived":  # at the server: join its FIFO queue
            queues[server[c]].append((now, c))
            serve(server[c], now)
        elif kind == "tail_done":  # the worker frees; the gradients go down, then backward
            response[c] += now - arrival
            idle[server[c]] = True
            serve(server[c], now)
            schedule(now + draw(downlink[c]) + draw(backward[c]), "step_done", c)
        else:  # "step_done"
            steps_done[c] += 1
            if steps_done[c] < local_steps:
                schedule(now + draw(forward[c]), "sent", c)
            else:
                end[c] = now
    return SimulatedRound(start_s=start, end_s=end, response_s=response / local_steps,
                          queue_s=waited / local_steps,
                          span_s=float(end.max() - start.min()), busy_s=busy)


def simulate_scenario(scenario: MakespanScenario, split, association, *,
                      forward_fraction: float = FORWARD_FRACTION, jitter_cv: float = 0.0,
                      seed: int = 0) -> SimulatedRound:
    """Simulate a makespan-model scenario's round with given splits and association.

    Per step the device's seconds (``a D + F``) divide into forward and backward by
    ``forward_fraction``, the transfer (activations up, gradients down, ``s / r``) in halves,
    and the tail takes ``W(a)`` on the server's one worker; the start offsets are the
    scenario's ``start_s`` (all at 0 when None) over its ``local_steps``. Servers must run one
    tail at a time (concurrency 1): that is the server simulated.
    """
    sc = scenario
    association = np.asarray(association, int) * np.ones(sc.n_users, int)
    if np.any(sc.concurrency[association] != 1.0):
        raise ValueError("the simulation runs one tail at a time: every server used needs "
                         "concurrency 1")
    device, transfer, _ = step_times(sc, split, association, 1.0)
    work = server_work_s(sc, split, association)
    return simulate(device * forward_fraction, transfer / 2, work, transfer / 2,
                    device * (1.0 - forward_fraction), association, sc.start_s,
                    sc.local_steps, jitter_cv, seed)
