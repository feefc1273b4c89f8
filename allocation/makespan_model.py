"""The makespan cost model: a shared server, a synchronous round, device memory caps.

What the paper's model (``system_model``) leaves out and this one keeps (issue 15):

- the server is shared: it trains every client's tail with the same hardware, so a client's
  server time is its tail work divided by the share ``phi_n`` of the server it is given, and the
  shares of a server's clients sum to at most its concurrency ``c_m`` (1 when tails run one at a
  time; more when batched tails run several clients' passes in the time of one), each at most 1;
- a synchronous round ends when its last client ends: the round delay is the makespan
  ``T = max_n t_n``, not the sum of the clients' delays;
- a device trains only as many layers as fit in its memory (weights and activations);
- devices and servers are described by what they sustain per layer, from the hardware
  catalogue (``edgesplit.hardware``) or, better, measured at the start of a run.

Per training step of user ``n`` with split ``a`` (layers ``[0, a)`` on the device) on server
``m`` (SI units)::

    device_s   = a D_n + F_n                    D: seconds per layer, F: split-independent part
    transfer_s = s / r_nm                       s: bits per step, r: the device's uplink rate
    server_s   = W_m(a) / phi_n                 W_m(a) = (Y - a) G_m + H_m at the full server
    upload_s   = a L / (r_nm S)                 L: adapter bits per layer, S: steps per round
    t_n        = device_s + transfer_s + server_s + upload_s

``upload_s`` is the end of the round spread over its steps: after its last step a device
sends the LoRA adapter of its layers back (Flower's reply), about 0.33 MB a layer for SmolLM2
in fp32, at a deep split more than all of a round's activations. The testbed measured it
(issue 23): a device's time from its data plane's end to its accepted reply follows its bytes
up over its uplink (correlation 0.92 and 0.74 in the two verdict regimes). It ends the
device's round, so it adds to its finish but not to its cycle through the server's queue.

``H_m`` is the LM head and loss, which the server runs for every client whatever the split (the
device runs them in a U-shaped split, where ``F_n`` holds them and the device's last layers).
A device on its own access link (wired, its own Wi-Fi...) has a fixed rate ``r_nm``, declared
or measured. Devices attached to a cell (``cell``: one base station's OFDMA uplink) share its
band: the band is cut into ``J`` subchannels (resource blocks) and each cell device gets an
integer number ``c_n >= 1`` of them, ``sum_n c_n <= J``; with ``c_n`` its rate is
``c_n / J * r_nm``, where ``r_nm`` is its rate with the whole band (its spectral efficiency
times the cell's bandwidth). Power is set per subchannel (LTE-style uplink power control), so a
device transmits at ``c_n / J`` of its full-band power and its radio energy per step does not
depend on ``c_n``. The subchannels are a decision, taken jointly with the split and the server
share; a fleet may mix cell devices and devices on their own links.

How the server serves its clients (``queue``): ``"shares"`` is the fluid model above, every
client at its share all round, as if all contended for the server from start to end. The
stream transport's server is not that: one worker runs tails one at a time, first come first
served, and a client contends only with the clients whose data planes overlap its own (on a
testbed their starts spread over a minute of ClientApp start-up). ``"fifo"`` models that: each
client's step waits for the tails of the others found at the server (``fifo_response_s``, a
mean-value analysis), counted only over the part of its data plane that overlaps theirs,
from each client's start offset ``start_s`` (measured the round before); the round's time is
then from the first data plane's start to the last one's end. Shares are not a decision there:
an allocation's ``share`` reports each client's effective share ``W / R``.

Energy is as in the paper's model, with powers from the catalogue: the device draws ``P_n`` while
it computes, the radio ``p_n`` while it transmits, the server ``P_m`` while it runs tails
(``P_m / c_m`` per client when ``c_m`` run at once). Stability is the paper's bound. The
objective is ``w_t T / T_ref + w_e E / E_ref + w_s S / S_ref`` with the reference allocation of
the paper's model (every user at its smallest split, on its fastest link's server, equal shares).
The solvers are in ``makespan_solver``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from edgesplit.hardware import DEVICES, LINKS, SERVERS, SUSTAINED_FRACTION, Hardware

from .measurement import Measured
from .system_model import Costs, ModelCost, Normalised, Weights, stability_penalty

#: How a server serves its clients' tails (``MakespanScenario.queue``).
SERVER_QUEUES = ("shares", "fifo")
#: Usable share of a device's memory for training (the OS, the runtime and other apps hold the
#: rest) [D].
USABLE_MEMORY = 0.5


@dataclass
class MakespanScenario(Normalised):
    """N users and M servers for one round of the makespan model.

    User arrays have shape (N,), server arrays (M,), ``uplink_bps`` (N, M).

    Attributes
    ----------
    device_layer_s : seconds a device takes per layer per step (forward and backward).
    device_fixed_s : split-independent device seconds per step (U-shaped tail and LM head).
    device_power_w : device power while it computes.
    memory_bytes : memory a device can give to training (inf: no cap).
    tx_power_w : radio power while transmitting.
    uplink_bps : each device's uplink rate to each server.
    samples : local training samples (stability bound).
    min_split : smallest split each device accepts (a privacy floor; default 1).
    server_layer_s, server_fixed_s : server seconds per layer and per step for the LM head and
        loss, for one client's batch on the whole server.
    server_power_w : server power while it computes.
    concurrency : c_m, how many clients' tails the server runs in the time of one (1 = one at
        a time); the shares on a server sum to at most c_m, each at most 1.
    queue : how the server serves its clients, one of ``SERVER_QUEUES`` (module docstring).
    start_s : "fifo": seconds from the round's start to each client's first step (its
        ClientApp start-up and the control plane); None = every client at once.
    local_steps : steps per round, which ``start_s`` is spread over (the model is per step).
    cell : which users share the cell's band (None: none; every user on its own link). A cell
        user's ``uplink_bps`` is its rate with the whole band.
    cell_subchannels : J, the subchannels the cell's band is cut into (at least one per cell
        user).
    cell_bandwidth_hz : the cell's band (reported as each user's bandwidth, ``c_n / J`` of it).
    """

    device_layer_s: np.ndarray
    device_fixed_s: np.ndarray
    device_power_w: np.ndarray
    memory_bytes: np.ndarray
    tx_power_w: np.ndarray
    uplink_bps: np.ndarray
    samples: np.ndarray
    server_layer_s: np.ndarray
    server_fixed_s: np.ndarray
    server_power_w: np.ndarray
    concurrency: np.ndarray
    model: ModelCost
    weights: Weights = field(default_factory=Weights)
    min_split: np.ndarray | None = None
    queue: str = "shares"
    start_s: np.ndarray | None = None
    local_steps: int = 1
    cell: np.ndarray | None = None
    cell_subchannels: int = 50
    cell_bandwidth_hz: float = 20e6

    def __post_init__(self) -> None:
        users = ("device_layer_s", "device_fixed_s", "device_power_w", "memory_bytes",
                 "tx_power_w", "samples")
        servers = ("server_layer_s", "server_fixed_s", "server_power_w", "concurrency")
        for name in (*users, *servers, "uplink_bps"):
            setattr(self, name, np.atleast_1d(np.asarray(getattr(self, name), dtype=float)))
        n, m = self.device_layer_s.size, self.server_layer_s.size
        self.uplink_bps = self.uplink_bps.reshape(n, m)
        for name in users:
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},)")
        for name in servers:
            if getattr(self, name).shape != (m,):
                raise ValueError(f"{name} must have shape ({m},)")
        self.min_split = (np.ones(n, int) if self.min_split is None
                          else np.asarray(self.min_split, int).reshape(n))
        for name in ("device_layer_s", "device_power_w", "memory_bytes", "tx_power_w",
                     "uplink_bps", "samples", "server_layer_s", "server_power_w", "concurrency"):
            value = getattr(self, name)
            if not np.all(value > 0) or np.any(np.isnan(value)):
                raise ValueError(f"{name} must be positive")
        if np.any(self.device_fixed_s < 0) or np.any(self.server_fixed_s < 0):
            raise ValueError("device_fixed_s and server_fixed_s must be >= 0")
        if np.any(self.min_split < 1) or np.any(self.min_split > self.layers - 1):
            raise ValueError(f"min_split must be in [1, {self.layers - 1}]")
        if self.queue not in SERVER_QUEUES:
            raise ValueError(f"queue must be one of {SERVER_QUEUES}, not {self.queue!r}")
        if self.start_s is not None:
            self.start_s = np.asarray(self.start_s, float).reshape(n)
            if not np.all(np.isfinite(self.start_s)) or np.any(self.start_s < 0):
                raise ValueError("start_s must be finite and >= 0")
        if self.local_steps < 1:
            raise ValueError("local_steps must be >= 1")
        self.cell = (np.zeros(n, bool) if self.cell is None
                     else np.asarray(self.cell, bool).reshape(n))
        if not self.cell_bandwidth_hz > 0:
            raise ValueError("cell_bandwidth_hz must be > 0")
        if self.cell.sum() > self.cell_subchannels:
            raise ValueError(f"cell: {int(self.cell.sum())} devices share it but it has "
                             f"{self.cell_subchannels} subchannels (each needs at least one)")

    @property
    def n_users(self) -> int:
        return self.device_layer_s.size

    @property
    def n_servers(self) -> int:
        return self.server_layer_s.size

    @property
    def layers(self) -> int:
        """Layers the split divides (Y, less the device's tail in a U-shaped split)."""
        return self.model.split_layers

    @cached_property
    def max_split(self) -> np.ndarray:
        """Deepest split each device's memory allows, shape (N,); below ``min_split`` when
        none does (see ``infeasible``)."""
        splits = np.arange(1, self.layers)
        fits = self.model.device_bytes(splits)[None, :] <= self.memory_bytes[:, None]
        return np.where(fits.any(axis=1), fits.sum(axis=1), 0).astype(int)

    @property
    def infeasible(self) -> dict[int, str]:
        """Users that cannot train any allowed split, with the reason."""
        need = self.model.device_bytes(self.min_split)
        return {int(n): f"memory: {self.memory_bytes[n] / 1e9:.3g} GB usable, split "
                        f"{self.min_split[n]} needs {need[n] / 1e9:.3g} GB"
                for n in np.flatnonzero(self.max_split < self.min_split)}

    def subset(self, users) -> MakespanScenario:
        """The same round with only ``users`` (indices), e.g. without those that cannot
        train."""
        users = np.asarray(users, int)
        per_user = ("device_layer_s", "device_fixed_s", "device_power_w", "memory_bytes",
                    "tx_power_w", "uplink_bps", "samples", "min_split", "cell")
        start = None if self.start_s is None else self.start_s[users]
        return dataclasses.replace(self, **{k: getattr(self, k)[users] for k in per_user},
                                   start_s=start)

    @property
    def start_step_s(self) -> np.ndarray | None:
        """``start_s`` in the model's unit, one step (the overlap of two data planes is the
        same fraction of each at either scale); None when every client starts at once."""
        return None if self.start_s is None else self.start_s / self.local_steps

    @cached_property
    def transfer_s(self) -> np.ndarray:
        """Seconds per step on the uplink from each user to each server, shape (N, M) (a cell
        user's with the whole band)."""
        return self.model.bits_per_step / self.uplink_bps

    @property
    def has_cell(self) -> bool:
        return bool(self.cell.any())

    @property
    def channel_options(self) -> int:
        """Channel indices a user may take: 0 (its own link), or 1..J subchannels of the cell
        (``J + 1`` options when some user is in the cell, else 1)."""
        return self.cell_subchannels + 1 if self.has_cell else 1

    def own_channels(self, channels=None) -> np.ndarray:
        """``channels`` checked against the cell: 0 for every user on its own link, 1..J for
        each cell user (None: the scenario has no cell), shape (N,)."""
        if channels is None:
            if self.has_cell:
                raise ValueError("a scenario with a cell needs each user's subchannels")
            return np.zeros(self.n_users, int)
        c = np.asarray(channels)
        if c.shape != (self.n_users,) or np.any(c != np.round(c)):
            raise ValueError(f"channels: expected {self.n_users} integers")
        c = c.astype(int)
        if np.any(c[~self.cell] != 0):
            raise ValueError("channels: a user on its own link takes no subchannel (0)")
        if np.any(c[self.cell] < 1):
            raise ValueError("channels: every cell user needs at least one subchannel")
        if c.sum() > self.cell_subchannels:
            raise ValueError(f"channels: {int(c.sum())} subchannels given, the cell has "
                             f"{self.cell_subchannels}")
        return c

    def bandwidth_hz(self, channels) -> np.ndarray:
        """Each user's share of the cell's band in Hz (0 on its own link)."""
        return np.asarray(channels, float) * self.cell_bandwidth_hz / self.cell_subchannels

    @cached_property
    def reference(self) -> Costs:
        """Costs at the reference allocation used to normalise the objective."""
        split, assoc, share, channels = reference_allocation(self)
        t, e, s = cost_components(self, split, assoc, share, channels)
        w = self.weights
        return Costs(w.energy + w.time + w.stability, e, t, s)


# --- Physics of one allocation ------------------------------------------------------------


def link_slowdown(scenario: MakespanScenario, channels, users=None) -> np.ndarray:
    """How many times a user's transfer takes its full-band time: ``J / c`` for a cell user
    with ``c`` subchannels, 1 on its own link (``channels`` broadcasts with ``users``)."""
    sc = scenario
    users = np.arange(sc.n_users) if users is None else users
    c = np.asarray(channels, float)
    with np.errstate(divide="ignore"):
        return np.where(sc.cell[users], sc.cell_subchannels / c, 1.0)


def step_times(scenario: MakespanScenario, split, association, share, users=None,
               channels=None):
    """Per-user (device, transfer, server) seconds of one step.

    ``split``, ``association``, ``channels`` and ``users`` (default: every user, in order)
    broadcast together, so one call can cost a whole (user, server, split, channel) table;
    ``channels`` (0 on a user's own link, its subchannels in the cell) may be None only when
    the scenario has no cell."""
    sc = scenario
    users = np.arange(sc.n_users) if users is None else users
    a, m = np.asarray(split, float), np.asarray(association, int)
    device = a * sc.device_layer_s[users] + sc.device_fixed_s[users]
    server = server_work_s(sc, a, m) / np.asarray(share, float)
    transfer = sc.transfer_s[users, m]
    if sc.has_cell:
        if channels is None:
            raise ValueError("a scenario with a cell needs each user's subchannels")
        transfer = transfer * link_slowdown(sc, channels, users)
    return device, transfer, server


def exchange_s(scenario: MakespanScenario, split, association, channels=None, users=None
               ) -> np.ndarray:
    """Per-user seconds per step of the adapter upload after the round's last step
    (``ModelCost.adapter_bits`` over the uplink; a cell user's at its subchannels, at the whole
    band when ``channels`` is None), spread over the round's steps as ``start_s`` is. The
    device is done with the server by then: the upload lengthens its finish, not its cycle
    through the server's queue. Arguments broadcast as in ``step_times``."""
    sc = scenario
    users = np.arange(sc.n_users) if users is None else users
    m = np.asarray(association, int)
    seconds = sc.model.adapter_bits(split) / sc.uplink_bps[users, m] / sc.local_steps
    if channels is not None and sc.has_cell:
        seconds = seconds * link_slowdown(sc, channels, users)
    return seconds


def fifo_response_s(base, work, association, concurrency, start=None,
                    iterations: int = 500, tol: float = 1e-9, initial=None,
                    service_cv2: float = 1.0) -> np.ndarray:
    """Per-user seconds from a step's arrival at its server to its answer (queue + tail) when
    the server runs tails one at a time, first come first served (the stream transport's tail
    worker), not in shares.

    Each user cycles: device compute and transfer (``base``: its own processor and link, no
    waiting), then its tail (``work``) on the shared server. Approximate mean-value analysis of
    that closed network (Bard-Schweitzer, one job per user): a step waits for the tails of the
    others found at the server, ``R_n = W_n + sum_k o_nk Q_k W_k / c_m`` over the users k on
    its server, with ``Q_k = R_k / (B_k + R_k)`` their mean number there. ``o_nk`` is the share
    of n's data plane during which k's runs too: 1 when every client starts together
    (``start`` None), else from the windows ``[start_n, start_n + B_n + R_n]`` (per step).
    Shares model a server that is always busy with everyone (``W / phi``); this one sees the
    idle gaps while devices compute and transmit and while others have not started or are done.

    ``service_cv2`` is the squared coefficient of variation of a tail's service time: a tail
    found in service holds the step for its mean residual ``W (1 + cv²) / 2`` (the tails found
    waiting, for all of ``W``), so ``R_n = W_n + sum_k o_nk (R_k - W_k (1 - cv²) / 2) W_k /
    (c_m (B_k + R_k))``. The default 1 (exponential service: a residual of all of ``W``) is the
    plain analysis above; 0 is deterministic service (`experiments.queue_fit` compares them).

    Arrays broadcast over leading dimensions (many vectors at once), users on the last;
    ``association`` indexes ``concurrency``. The iteration starts at ``W`` (or at ``initial``,
    e.g. a neighbouring vector's answer, to rank moves fast: the model's value of a vector is
    the one from ``W``). Returns ``R``, shape of ``base``.
    """
    base, work, association = np.broadcast_arrays(np.asarray(base, float),
                                                  np.asarray(work, float),
                                                  np.asarray(association, int))
    n = base.shape[-1]
    contend = ((association[..., :, None] == association[..., None, :])
               & ~np.eye(n, dtype=bool)).astype(float)
    capacity = np.asarray(concurrency, float)[association]
    response = work.copy() if initial is None else np.maximum(
        work, np.broadcast_to(initial, work.shape))
    for _ in range(iterations):
        cycle = base + response
        overlap = contend
        if start is not None:
            lo, hi = np.broadcast_to(start, base.shape), start + cycle
            both = (np.minimum(hi[..., :, None], hi[..., None, :])
                    - np.maximum(lo[..., :, None], lo[..., None, :]))
            overlap = contend * np.clip(both, 0.0, None) / cycle[..., :, None]
        queued = (response - work * (1.0 - service_cv2) / 2) / cycle * work
        new = work + np.einsum("...nk,...k->...n", overlap, queued) / capacity
        # Damped: the windows, and so the overlaps, move with the responses.
        new = 0.5 * (response + new) if start is not None else new
        if np.max(np.abs(new - response), initial=0.0) <= tol * max(1.0, float(np.max(new))):
            return new
        response = new
    return response


def _fifo_work_and_response(scenario: MakespanScenario, split, association, channels=None
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Per-user tail work ``W`` and FIFO response ``R`` (``fifo_response_s``) of one step, with
    the scenario's start offsets; each shape (N,)."""
    sc = scenario
    m = np.asarray(association, int) * np.ones(sc.n_users, int)
    device, transfer, _ = step_times(sc, split, m, 1.0, channels=channels)
    work = server_work_s(sc, split, m)
    return work, fifo_response_s(device + transfer, work, m, sc.concurrency, sc.start_step_s)


def fifo_queue_s(scenario: MakespanScenario, split, association, channels=None) -> np.ndarray:
    """Per-user seconds a step waits behind other clients' tails at a first-come-first-served
    server (``fifo_response_s`` less its own tail), with the scenario's start offsets; shape
    (N,)."""
    work, response = _fifo_work_and_response(scenario, split, association, channels)
    return response - work


def fifo_shares(scenario: MakespanScenario, split, association, channels=None) -> np.ndarray:
    """Each user's effective share of its FIFO server, ``W / R`` (its tail over its wait and
    tail): what ``step_times`` needs to give the FIFO model's server seconds."""
    work, response = _fifo_work_and_response(scenario, split, association, channels)
    return work / response


def makespan_s(scenario: MakespanScenario, finish) -> float:
    """The round's time per step from each user's step time ``finish`` (N,): the slowest user's
    under shares (all start together); from the first start to the last end under "fifo"."""
    start = scenario.start_step_s
    if scenario.queue == "shares" or start is None:
        return float(np.max(finish))
    return float(np.max(start + finish) - np.min(start))


def server_work_s(scenario: MakespanScenario, split, association) -> np.ndarray:
    """W_m(a): seconds of tail work per step on the whole server."""
    sc = scenario
    m = np.asarray(association, int)
    return (sc.layers - np.asarray(split, float)) * sc.server_layer_s[m] + sc.server_fixed_s[m]


def user_energy_j(scenario: MakespanScenario, split, association, users=None) -> np.ndarray:
    """Joules per step of each user's device, radio (activations, and the adapter's upload)
    and share of its server.

    None depends on the shares: a share changes when the server works for a client, not how
    long, and a cell user's radio sends at ``c / J`` of its full-band power for ``J / c`` of
    its full-band time. Arguments broadcast as in ``step_times``."""
    sc = scenario
    users = np.arange(sc.n_users) if users is None else users
    m = np.asarray(association, int)
    device = np.asarray(split, float) * sc.device_layer_s[users] + sc.device_fixed_s[users]
    server = server_work_s(sc, split, m) * sc.server_power_w[m] / sc.concurrency[m]
    radio = sc.transfer_s[users, m] + exchange_s(sc, split, m, users=users)
    return device * sc.device_power_w[users] + radio * sc.tx_power_w[users] + server


def user_stability(scenario: MakespanScenario, split, users=None) -> np.ndarray:
    """The paper's stability bound per user, counting every layer the device trains."""
    sc, t = scenario, scenario.model.device_tail_layers
    users = np.arange(sc.n_users) if users is None else users
    return stability_penalty(np.asarray(split, float) + t, sc.layers + t, sc.samples[users],
                             sc.weights.lipschitz)


def cost_components(scenario: MakespanScenario, split, association, share, channels=None
                    ) -> tuple[float, float, float]:
    """(makespan s, energy J, stability) of an allocation (under "fifo" the shares are the
    model's own, ``fifo_shares``: ``share`` is not used); each user finishes after its steps
    and its adapter's upload."""
    if scenario.queue == "fifo":
        share = fifo_shares(scenario, split, association, channels)
    device, transfer, server = step_times(scenario, split, association, share,
                                          channels=channels)
    upload = exchange_s(scenario, split, association, channels)
    return (makespan_s(scenario, device + transfer + server + upload),
            float(user_energy_j(scenario, split, association).sum()),
            float(user_stability(scenario, split).sum()))


def equal_channels(scenario: MakespanScenario) -> np.ndarray:
    """The cell's subchannels dealt out evenly to its users (the first ones get one more when
    they do not divide), 0 for users on their own links."""
    sc = scenario
    count = int(sc.cell.sum())
    channels = np.zeros(sc.n_users, int)
    if count:
        extra = np.arange(count) < sc.cell_subchannels % count
        channels[sc.cell] = sc.cell_subchannels // count + extra
    return channels


def reference_allocation(scenario: MakespanScenario):
    """Every user at its smallest split, on the server of its fastest link, with an equal
    share of it (at most 1) and of the cell's subchannels. Returns (split, association, share,
    channels), each (N,)."""
    sc = scenario
    assoc = np.argmax(sc.uplink_bps, axis=1)
    count = np.bincount(assoc, minlength=sc.n_servers)[assoc]
    share = np.minimum(1.0, sc.concurrency[assoc] / count)
    return sc.min_split.copy(), assoc, share, equal_channels(sc)


# --- Scenario builders --------------------------------------------------------------------


def device_seconds_per_layer(model: ModelCost, peak_flops, sustained: float = SUSTAINED_FRACTION):
    """Seconds per layer per step at ``sustained`` x peak FLOP/s."""
    return model.layer_flops / (np.asarray(peak_flops, float) * sustained)


def server_figures(model: ModelCost, server: Hardware, batch_tails: bool,
                   sustained: float = SUSTAINED_FRACTION) -> dict[str, float]:
    """A catalogue server's per-layer and per-step seconds, power and concurrency."""
    flops = server.peak_flops * sustained
    head = 0.0 if model.device_tail_layers else model.lm_head_flops
    return {"server_layer_s": model.layer_flops / flops, "server_fixed_s": head / flops,
            "server_power_w": server.power_w,
            "concurrency": server.batch_concurrency if batch_tails else 1.0}


def device_fixed_s(model: ModelCost, layer_s, overhead_s=0.0) -> np.ndarray:
    """Split-independent device seconds per step: a U-shaped split's last layers and LM head
    (at the device's per-layer speed, scaled by FLOPs), plus a measured per-step overhead."""
    layer_s = np.asarray(layer_s, float)
    tail = 0.0
    if model.device_tail_layers:
        tail = model.device_tail_layers + model.lm_head_flops / model.layer_flops
    return tail * layer_s + np.asarray(overhead_s, float)


def catalogue_scenario(n_users: int, model: ModelCost, n_servers: int = 1, seed: int = 0, *,
                       servers: tuple[str, ...] = ("l4",), batch_tails: bool = False,
                       area_m: float = 200.0, weights: Weights | None = None,
                       devices: tuple[str, ...] | None = None,
                       cell_links: tuple[str, ...] = (), cell_bandwidth_hz: float = 20e6,
                       cell_subchannels: int = 50) -> MakespanScenario:
    """Users drawn uniformly from the device catalogue, servers from ``servers`` (cycled).

    Each device's uplink rate to its nearest server is drawn log-uniformly from its link's
    typical range; to a server at distance d instead of d0 its SNR falls as (d0/d)^3.76 (the
    3GPP path-loss slope) on the link's channel width. Users are uniform in a square of side
    ``area_m``, servers on a grid in it. Samples are uniform in [100, 1000] as in the paper.
    Devices whose link is one of ``cell_links`` (e.g. ``("5g", "lte")``) share one cell of
    ``cell_bandwidth_hz`` in ``cell_subchannels``, at the spectral efficiency of their draw.
    """
    rng = np.random.default_rng(seed)
    names = list(devices or DEVICES)
    classes = [DEVICES[names[i]] for i in rng.integers(0, len(names), n_users)]
    links = [LINKS[d.link] for d in classes]
    server_hw = [SERVERS[servers[i % len(servers)]] for i in range(n_servers)]
    lo, hi = (np.array([link.uplink_bps[i] for link in links]) for i in (0, 1))
    near_rate = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    users_xy = rng.uniform(0.0, area_m, (n_users, 2))
    cols = int(np.ceil(np.sqrt(n_servers)))
    rows = int(np.ceil(n_servers / cols))
    xs, ys = (np.arange(cols) + 0.5) * area_m / cols, (np.arange(rows) + 0.5) * area_m / rows
    servers_xy = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)[:n_servers]
    dist = np.maximum(np.linalg.norm(users_xy[:, None] - servers_xy[None], axis=-1), 1.0)
    channel = np.array([link.channel_hz for link in links])[:, None]
    snr_near = 2.0 ** (near_rate[:, None] / channel) - 1.0
    snr = snr_near * (dist.min(axis=1, keepdims=True) / dist) ** 3.76
    cell = np.array([d.link in cell_links for d in classes], bool)
    uplink = np.where(cell[:, None], cell_bandwidth_hz, channel) * np.log2(1.0 + snr)
    layer_s = device_seconds_per_layer(model, [d.peak_flops for d in classes])
    figures = [server_figures(model, s, batch_tails) for s in server_hw]
    return MakespanScenario(
        device_layer_s=layer_s, device_fixed_s=device_fixed_s(model, layer_s),
        device_power_w=[d.power_w for d in classes],
        memory_bytes=[d.memory_gb * 1e9 * USABLE_MEMORY for d in classes],
        tx_power_w=[link.tx_power_w for link in links], uplink_bps=uplink,
        samples=rng.integers(100, 1001, n_users).astype(float),
        **{k: [f[k] for f in figures] for k in figures[0]}, model=model,
        weights=weights or Weights(), cell=cell, cell_bandwidth_hz=cell_bandwidth_hz,
        cell_subchannels=cell_subchannels)


def makespan_scenario_from_profiles(
        profiles: Sequence[Mapping[str, float]], model: ModelCost, server: Hardware, *,
        batch_tails: bool = False, measured: Sequence[Measured | None] | None = None,
        server_measured: Measured | None = None, weights: Weights | None = None,
        min_split=None, queue: str = "shares", start_s: Sequence[float | None] | None = None,
        local_steps: int = 1, cell_bandwidth_hz: float = 0.0,
        cell_subchannels: int = 50) -> MakespanScenario:
    """One server and the sampled clients' reported profiles: measured speeds where given,
    the catalogue's sustained figures otherwise.

    Parameters
    ----------
    profiles : sequence of mappings
        Per client: ``cpu_freq_hz``, ``cores``, ``flops_per_cycle``, ``memory_gb``,
        ``power_w``, ``tx_power_w``, ``uplink_bps`` and ``num-examples``.
    server : Hardware
        The server's catalogue class (power, and speed until measured).
    measured, server_measured : optional
        Calibrations, aligned with ``profiles`` (None where a device has none).
    queue, local_steps, cell_subchannels : as ``MakespanScenario``.
    cell_bandwidth_hz : float (default: 0, no cell)
        The cell's band: a client whose profile says ``cell`` (true) with a
        ``spectral_efficiency`` (bit/s/Hz) shares it, at that efficiency times this band with
        the whole band; every other client keeps its ``uplink_bps``.
    start_s : optional
        Each client's start offset measured the round before, aligned with ``profiles``; a
        client without one (new this round) is taken to start at the median of the others.
    """
    column = {k: np.array([p[k] for p in profiles], dtype=float)
              for k in ("cpu_freq_hz", "cores", "flops_per_cycle", "memory_gb", "power_w",
                        "tx_power_w", "uplink_bps", "num-examples")}
    measured = list(measured) if measured is not None else [None] * len(profiles)
    peak = column["cpu_freq_hz"] * column["cores"] * column["flops_per_cycle"]
    layer_s = np.where([m is None for m in measured], device_seconds_per_layer(model, peak),
                       [m.layer_s if m else 0.0 for m in measured])
    overhead = [m.fixed_s if m else 0.0 for m in measured]
    efficiency = np.array([float(p.get("spectral_efficiency", 0.0)) for p in profiles])
    cell = (cell_bandwidth_hz > 0) & np.array([bool(p.get("cell", False)) for p in profiles],
                                              bool) & (efficiency > 0)
    uplink = np.where(cell, efficiency * cell_bandwidth_hz, column["uplink_bps"])
    figures = server_figures(model, server, batch_tails)
    if server_measured is not None:
        figures.update(
            server_layer_s=server_measured.layer_s,
            server_fixed_s=0.0 if model.device_tail_layers else server_measured.fixed_s,
            concurrency=server_measured.concurrency if batch_tails else 1.0)
    return MakespanScenario(
        device_layer_s=layer_s, device_fixed_s=device_fixed_s(model, layer_s, overhead),
        device_power_w=column["power_w"],
        memory_bytes=column["memory_gb"] * 1e9 * USABLE_MEMORY,
        tx_power_w=column["tx_power_w"], uplink_bps=uplink[:, None],
        samples=column["num-examples"], **{k: [v] for k, v in figures.items()}, model=model,
        weights=weights or Weights(), min_split=min_split, queue=queue,
        start_s=_known_starts(start_s), local_steps=local_steps, cell=cell,
        cell_bandwidth_hz=cell_bandwidth_hz or 20e6, cell_subchannels=cell_subchannels)


def _known_starts(start_s: Sequence[float | None] | None) -> np.ndarray | None:
    """Start offsets with the unknown ones at the median of the known; None if none is
    known."""
    if start_s is None:
        return None
    known = [s for s in start_s if s is not None]
    if not known:
        return None
    middle = float(np.median(known))
    return np.array([middle if s is None else s for s in start_s], float)
