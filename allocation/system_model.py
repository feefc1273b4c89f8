"""System model of seed A: per-layer FLOPs, uplink rate, delay, energy, stability and the objective.

Every quantity is per training iteration of one batch. Units are SI and appear in the names:
``_hz`` (cycles or bandwidth per second), ``_w`` (watts), ``_j`` (joules), ``_s`` (seconds),
``flops`` (floating-point operations), ``bits``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

LN2 = float(np.log(2.0))
#: Relative slack allowed on budgets and bounds (water-filling ends at float precision).
RTOL = 1e-9


@dataclass(frozen=True)
class ModelCost:
    """Size of the model being fine-tuned, as the cost model needs it.

    Parameters
    ----------
    layers : int
        Transformer layers Y; a split ``a`` puts layers ``[0, a)`` on the device.
    hidden_size : int
        Hidden size h.
    batch_size : int
        Samples per batch B.
    seq_len : int
        Tokens per sample d (a scenario may override it per user).
    activation_bits : int (default: 16)
        Bits per activation value exchanged at the split.
    device_tail_layers : int (default: 0)
        U-shaped split: the device also trains the last t layers (and computes the loss), so
        activations and gradients cross two cuts. The split ``a`` then divides the first
        ``Y - t`` layers between device and server.
    vocab_size : int (default: 0)
        Vocabulary V: the LM head's FLOPs (makespan model; 0 leaves them out, as the paper).
    attention_heads : int (default: 0)
        Attention heads, for the activation-memory estimate (makespan model).
    layer_params, embedding_params : int (default: 0)
        Parameters of one decoder layer and of the input embeddings, for the memory a device
        needs (makespan model; 0 = no memory cap can bind).
    weight_bytes : int (default: 4)
        Bytes per weight and per activation value on the device (EdgeSplit trains in fp32).
    adapter_params_per_layer : int (default: 0)
        LoRA parameters of one decoder layer: after its last step a device uploads the adapter
        of every layer it trained (makespan model; 0 leaves the exchange out, as the papers).
    """

    layers: int
    hidden_size: int
    batch_size: int
    seq_len: int
    activation_bits: int = 16
    device_tail_layers: int = 0
    vocab_size: int = 0
    attention_heads: int = 0
    layer_params: int = 0
    embedding_params: int = 0
    weight_bytes: int = 4
    adapter_params_per_layer: int = 0

    def __post_init__(self) -> None:
        if self.device_tail_layers < 0:
            raise ValueError(f"device_tail_layers must be >= 0, got {self.device_tail_layers}")
        if self.split_layers < 2:
            raise ValueError(f"{self.layers} layers with {self.device_tail_layers} kept on the "
                             "device leave fewer than 2 layers to split")

    @property
    def split_layers(self) -> int:
        """Layers the split divides between device and server (``Y - t``)."""
        return self.layers - self.device_tail_layers

    @property
    def cuts(self) -> int:
        """Cuts the activations cross each way: 1 (head/tail) or 2 (U-shaped)."""
        return 2 if self.device_tail_layers else 1

    @property
    def bits_per_step(self) -> float:
        """Bits exchanged per step: activations and their gradients at every cut."""
        return (2.0 * self.cuts * self.batch_size * self.seq_len * self.hidden_size
                * self.activation_bits)

    def adapter_bits(self, split):
        """Bits of the adapter a device uploads once a round at split ``split`` (array-like):
        the LoRA weights of every layer it trains, at ``weight_bytes`` each (as sent)."""
        layers = np.asarray(split, float) + self.device_tail_layers
        return layers * self.adapter_params_per_layer * self.weight_bytes * 8.0

    @property
    def layer_flops(self) -> float:
        """psi, FLOPs to train one decoder layer on one batch (see ``layer_flops``)."""
        return float(layer_flops(self.batch_size, self.seq_len, self.hidden_size))

    @property
    def lm_head_flops(self) -> float:
        """FLOPs of the LM head on one batch, forward and backward, in psi's convention
        (backward = twice the forward): ``6 B d h V``."""
        return 6.0 * self.batch_size * self.seq_len * self.hidden_size * self.vocab_size

    def device_bytes(self, split):
        """Memory a device needs to train split ``split`` (array-like): its weights (the
        embeddings and its layers; in a U-shaped split the whole model, LM head and logits
        included) and the activations kept for the backward of every layer it trains.

        Activations per layer follow Korthikanti et al. (arXiv 2205.05198, no recomputation):
        ``B d h (34 + 5 n d / h)`` bytes at 2 bytes a value, scaled to ``weight_bytes``;
        LoRA weights and their optimizer state are below 1% of it and left out.
        """
        b, d, h, w = self.batch_size, self.seq_len, self.hidden_size, self.weight_bytes
        acts = b * d * h * (34.0 + 5.0 * self.attention_heads * d / h) * w / 2.0
        trained = np.asarray(split, float) + self.device_tail_layers
        weights = (self.embedding_params + self.layer_params * np.asarray(split, float)) * w
        if self.device_tail_layers:
            # The device loads the whole model and computes the logits (and their gradient).
            weights = (2 * self.embedding_params + self.layer_params * self.layers) * w
            acts_logits = 2.0 * b * d * self.vocab_size * w
            return weights + trained * acts + acts_logits
        return weights + trained * acts


@dataclass(frozen=True)
class Weights:
    """Weights and constants of the objective (defaults from the seed note).

    Parameters
    ----------
    time : float (default: 1.0)
        w_t, weight of the normalised delay.
    energy : float (default: 1.0)
        w_e, weight of the normalised energy.
    stability : float (default: 1.0)
        w_s, weight of the normalised stability penalty.
    k1 : float (default: 1e-28)
        Device effective capacitance: power ``k1 * f**3`` W.
    k2 : float (default: 1e-28)
        Server effective capacitance.
    lipschitz : float (default: 1.0)
        Lipschitz constant L of the loss in the stability bound.
    noise_dbm_per_hz : float (default: -134.0)
        Noise power spectral density N0.
    bits_mode : str (default: "physical")
        ``"physical"``: bits exchanged = activations + their gradients, ``2*B*d*h*bits``;
        ``"paper"``: bits = d, as the paper writes it (kept for reproduction).
    include_tx_delay : bool (default: True)
        Count the transmission delay ``s / r`` in the delay (the paper leaves it out).
    min_power_w : float (default: 1e-3)
        Lowest transmit power; without it, dropping the transmission delay makes zero power
        (and zero rate) optimal.
    """

    time: float = 1.0
    energy: float = 1.0
    stability: float = 1.0
    k1: float = 1e-28
    k2: float = 1e-28
    lipschitz: float = 1.0
    noise_dbm_per_hz: float = -134.0
    bits_mode: str = "physical"
    include_tx_delay: bool = True
    min_power_w: float = 1e-3

    def __post_init__(self) -> None:
        if self.time <= 0 or self.energy < 0 or self.stability < 0:
            # With no weight on delay, zero frequency and zero rate would be optimal.
            raise ValueError("weights need time > 0, energy >= 0 and stability >= 0")
        if self.bits_mode not in ("physical", "paper"):
            raise ValueError(f"bits_mode must be 'physical' or 'paper', got {self.bits_mode!r}")

    @property
    def noise_w_per_hz(self) -> float:
        """Noise power spectral density in W/Hz."""
        return 10.0 ** (self.noise_dbm_per_hz / 10.0) * 1e-3


@dataclass(frozen=True)
class Costs:
    """Raw totals over all users and servers, and the normalised weighted objective."""

    objective: float
    energy_j: float
    delay_s: float
    stability: float


class Normalised:
    """The objective's normalisation, the same in both cost models: each component divided by
    its value at the model's reference allocation (``reference``), times its weight."""

    weights: Weights
    reference: Costs

    @cached_property
    def unit_weights(self) -> tuple[float, float, float]:
        """(w_e / E_ref, w_t / T_ref, w_s / S_ref): weight per joule, per second, per unit."""
        ref, w = self.reference, self.weights
        return w.energy / ref.energy_j, w.time / ref.delay_s, w.stability / ref.stability


@dataclass
class Scenario(Normalised):
    """N users and M edge servers for one round of allocation.

    User arrays have shape (N,), server arrays shape (M,), ``gain`` shape (N, M).
    """

    user_freq_hz: np.ndarray
    user_cores: np.ndarray
    user_flops_per_cycle: np.ndarray
    user_pmax_w: np.ndarray
    samples: np.ndarray
    tokens: np.ndarray
    server_freq_hz: np.ndarray
    server_cores: np.ndarray
    server_flops_per_cycle: np.ndarray
    server_bandwidth_hz: np.ndarray
    gain: np.ndarray
    model: ModelCost
    weights: Weights = field(default_factory=Weights)

    def __post_init__(self) -> None:
        for name in ("user_freq_hz", "user_cores", "user_flops_per_cycle", "user_pmax_w",
                     "samples", "tokens", "server_freq_hz", "server_cores",
                     "server_flops_per_cycle", "server_bandwidth_hz", "gain"):
            setattr(self, name, np.atleast_1d(np.asarray(getattr(self, name), dtype=float)))
        self.gain = self.gain.reshape(self.n_users, self.n_servers)
        for name in ("user_cores", "user_flops_per_cycle", "user_pmax_w", "samples", "tokens"):
            if getattr(self, name).shape != (self.n_users,):
                raise ValueError(f"{name} must have shape ({self.n_users},)")
        for name in ("server_cores", "server_flops_per_cycle", "server_bandwidth_hz"):
            if getattr(self, name).shape != (self.n_servers,):
                raise ValueError(f"{name} must have shape ({self.n_servers},)")
        if np.any(self.user_pmax_w < self.weights.min_power_w):
            raise ValueError("user_pmax_w must be >= weights.min_power_w")

    @property
    def n_users(self) -> int:
        return self.user_freq_hz.shape[0]

    @property
    def n_servers(self) -> int:
        return self.server_freq_hz.shape[0]

    @property
    def layers(self) -> int:
        """Layers the split divides (Y, less the device's tail in a U-shaped split)."""
        return self.model.split_layers

    @cached_property
    def layer_flops(self) -> np.ndarray:
        """psi_n, FLOPs to train one layer on one batch of user n, shape (N,)."""
        m = self.model
        return layer_flops(m.batch_size, self.tokens, m.hidden_size)

    @cached_property
    def bits(self) -> np.ndarray:
        """s_n, bits exchanged per iteration at the split, shape (N,)."""
        m = self.model
        if self.weights.bits_mode == "paper":
            return self.tokens * float(m.cuts)
        return m.bits_per_step * self.tokens / m.seq_len

    @cached_property
    def snr_per_w_hz(self) -> np.ndarray:
        """gamma = g / N0 in Hz/W: SNR of power p on bandwidth b is ``gamma * p / b``."""
        return self.gain / self.weights.noise_w_per_hz

    @cached_property
    def reference(self) -> Costs:
        """Costs at the reference allocation used to normalise the objective."""
        split, assoc, bw, power, ufreq, sfreq = reference_allocation(self)
        e, t, s = cost_components(self, split, assoc, bw, power, ufreq, sfreq)
        w = self.weights
        return Costs(w.energy + w.time + w.stability, e, t, s)


# --- Physics ------------------------------------------------------------------------------


def layer_flops(batch_size, tokens, hidden_size):
    """FLOPs to train one transformer layer on one batch, forward and backward.

    ``psi = 72*B*d*h^2 + 12*B*d^2*h`` (LoRA adds negligible FLOPs).
    """
    b, d, h = np.asarray(batch_size, float), np.asarray(tokens, float), float(hidden_size)
    return 72.0 * b * d * h**2 + 12.0 * b * d**2 * h


def path_gain(distance_m, shadowing_db=0.0):
    """Linear channel power gain from path loss ``128.1 + 37.6 log10(d_km)`` dB and shadowing.

    Distances below 1 m are clipped to 1 m, where the formula is not meant to hold.
    """
    d_km = np.maximum(np.asarray(distance_m, float), 1.0) / 1e3
    loss_db = 128.1 + 37.6 * np.log10(d_km) - np.asarray(shadowing_db, float)
    return 10.0 ** (-loss_db / 10.0)


def uplink_rate_bps(bandwidth_hz, power_w, gain, noise_w_per_hz):
    """Shannon rate ``b * log2(1 + g*p / (N0*b))`` in bit/s."""
    b = np.asarray(bandwidth_hz, float)
    return b * np.log1p(np.asarray(gain) * power_w / (noise_w_per_hz * b)) / LN2


def compute_delay_s(flops, freq_hz, cores, flops_per_cycle):
    """Seconds to run ``flops`` at ``freq_hz`` on ``cores`` doing ``flops_per_cycle`` each."""
    return flops / (freq_hz * cores * flops_per_cycle)


def compute_energy_j(flops, freq_hz, cores, flops_per_cycle, capacitance):
    """Joules to run ``flops``: power ``k*f^3`` for ``flops / (f*C*D)`` seconds."""
    return capacitance * freq_hz**2 * flops / (cores * flops_per_cycle)


def stability_penalty(split, layers, samples, lipschitz=1.0):
    """Average-replace-one stability bound ``2 L^2 / (k_n (1 - a_n / Y))`` per user, with
    ``a_n`` every layer the device trains."""
    return 2.0 * lipschitz**2 / (samples * (1.0 - np.asarray(split, float) / layers))


def step_times(scenario: Scenario, split, association, bandwidth_hz, power_w, user_freq_hz,
               server_freq_hz) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user (device, transmission, server) seconds of one iteration, each (N,).

    In a U-shaped split the device also trains its t tail layers."""
    sc, w = scenario, scenario.weights
    a = np.asarray(split, float)
    m = np.asarray(association, int)
    users = np.arange(sc.n_users)
    psi, y = sc.layer_flops, sc.layers
    device = (a + sc.model.device_tail_layers) * compute_delay_s(
        psi, np.asarray(user_freq_hz, float), sc.user_cores, sc.user_flops_per_cycle)
    rate = uplink_rate_bps(np.asarray(bandwidth_hz, float), np.asarray(power_w, float),
                           sc.gain[users, m], w.noise_w_per_hz)
    server = (y - a) * compute_delay_s(psi, np.asarray(server_freq_hz, float),
                                       sc.server_cores[m], sc.server_flops_per_cycle[m])
    return device, sc.bits / rate, server


def cost_components(scenario: Scenario, split, association, bandwidth_hz, power_w,
                    user_freq_hz, server_freq_hz) -> tuple[float, float, float]:
    """Total energy (J), delay (s) and stability (unitless) of an allocation.

    Delay is the sum over users of device, transmission (if included) and server time. In a
    U-shaped split the device also trains its t tail layers.
    """
    sc, w = scenario, scenario.weights
    a = np.asarray(split, float)
    m = np.asarray(association, int)
    bandwidth_hz, power_w, user_freq_hz, server_freq_hz = (
        np.asarray(x, float) for x in (bandwidth_hz, power_w, user_freq_hz, server_freq_hz))
    psi, y, tail = sc.layer_flops, sc.layers, sc.model.device_tail_layers
    device_s, transfer_s, server_s = step_times(sc, a, m, bandwidth_hz, power_w, user_freq_hz,
                                                server_freq_hz)
    srv_cores, srv_fpc = sc.server_cores[m], sc.server_flops_per_cycle[m]
    dev_cores, dev_fpc = sc.user_cores, sc.user_flops_per_cycle
    energy = ((a + tail) * compute_energy_j(psi, user_freq_hz, dev_cores, dev_fpc, w.k1)
              + transfer_s * power_w
              + (y - a) * compute_energy_j(psi, server_freq_hz, srv_cores, srv_fpc, w.k2))
    delay = device_s + server_s
    if w.include_tx_delay:
        delay = delay + transfer_s
    stab = stability_penalty(a + tail, y + tail, sc.samples, w.lipschitz)
    return float(energy.sum()), float(delay.sum()), float(stab.sum())


def weighted_objective(scenario: Normalised, energy_j: float, delay_s: float,
                       stability: float) -> float:
    """``w_e E/E_ref + w_t T/T_ref + w_s S/S_ref``, each term normalised by the reference
    (either cost model; the makespan model's delay is its makespan)."""
    ue, ut, us = scenario.unit_weights
    return ue * energy_j + ut * delay_s + us * stability


def reference_allocation(scenario: Scenario):
    """The fixed allocation that normalises the objective [D].

    a_n = 1, each user on its strongest server, equal shares of that server's bandwidth and
    frequency, full power and full device frequency.

    Returns
    -------
    tuple
        (split, association, bandwidth_hz, power_w, user_freq_hz, server_freq_hz), each (N,).
    """
    sc = scenario
    assoc = np.argmax(sc.gain, axis=1)
    count = np.bincount(assoc, minlength=sc.n_servers)[assoc]
    return (np.ones(sc.n_users, int), assoc, sc.server_bandwidth_hz[assoc] / count,
            sc.user_pmax_w.copy(), sc.user_freq_hz.copy(), sc.server_freq_hz[assoc] / count)


# --- Scenario builders --------------------------------------------------------------------

#: Uniform ranges of the paper's simulation (Section "Simulation defaults"), SI units.
PAPER_RANGES: dict[str, tuple[float, float]] = {
    "user_freq_hz": (0.5e9, 1.0e9),
    "user_cores": (4, 6),
    "user_flops_per_cycle": (1, 1),
    "user_pmax_w": (1.0, 2.0),
    "samples": (100, 1000),
    "tokens": (512, 1024),
    "server_freq_hz": (1.0e9, 3.0e9),
    "server_cores": (2560, 5120),
    "server_flops_per_cycle": (1, 2),
    "server_bandwidth_hz": (20e6, 20e6),
}
_INTEGER_RANGES = {"user_cores", "user_flops_per_cycle", "samples", "tokens", "server_cores",
                   "server_flops_per_cycle"}


def random_scenario(n_users: int = 50, n_servers: int = 10, seed: int = 0, *,
                    area_m: float = 500.0, shadowing_db: float = 0.0, rayleigh: bool = False,
                    **overrides) -> Scenario:
    """A random scenario with the paper's settings unless overridden.

    Parameters
    ----------
    n_users, n_servers : int (default: 50, 10)
    seed : int (default: 0)
    area_m : float (default: 500.0)
        Side of the square in which users are uniform; servers sit on a grid in it.
    shadowing_db : float (default: 0.0)
        Std of log-normal shadowing (8 dB in the literature; off by default [D]).
    rayleigh : bool (default: False)
        Multiply gains by unit-mean exponential (Rayleigh power) fading.
    **overrides
        A key of ``PAPER_RANGES`` with a (low, high) range, a field of ``ModelCost``
        (default: Y=32, h=1024, B=512, seq_len=768) or a field of ``Weights``.
    """
    ranges = dict(PAPER_RANGES)
    model_kw = {"layers": 32, "hidden_size": 1024, "batch_size": 512, "seq_len": 768}
    weight_kw = {}
    weight_fields = {f.name for f in dataclasses.fields(Weights)}
    for key, value in overrides.items():
        if key in ranges:
            ranges[key] = value
        elif key in model_kw or key in ("activation_bits", "device_tail_layers"):
            model_kw[key] = value
        elif key in weight_fields:
            weight_kw[key] = value
        else:
            raise TypeError(f"random_scenario() got an unknown override {key!r}")
    rng = np.random.default_rng(seed)

    def draw(name: str, size: int) -> np.ndarray:
        lo, hi = ranges[name]
        if name in _INTEGER_RANGES:
            return rng.integers(int(lo), int(hi) + 1, size).astype(float)
        return rng.uniform(lo, hi, size)

    user = {k: draw(k, n_users) for k in ranges if not k.startswith("server")}
    server = {k: draw(k, n_servers) for k in ranges if k.startswith("server")}
    users_xy = rng.uniform(0.0, area_m, (n_users, 2))
    # Servers at the centres of a cols x rows grid covering the square (row-major, first M).
    cols = int(np.ceil(np.sqrt(n_servers)))
    rows = int(np.ceil(n_servers / cols))
    xs, ys = (np.arange(cols) + 0.5) * area_m / cols, (np.arange(rows) + 0.5) * area_m / rows
    servers_xy = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)[:n_servers]
    dist = np.linalg.norm(users_xy[:, None, :] - servers_xy[None, :, :], axis=-1)
    shadow = rng.normal(0.0, shadowing_db, dist.shape) if shadowing_db > 0 else 0.0
    gain = path_gain(dist, shadow)
    if rayleigh:
        gain = gain * rng.exponential(1.0, gain.shape)
    return Scenario(**user, **server, gain=gain, model=ModelCost(**model_kw),
                    weights=Weights(**weight_kw))


def scenario_from_profiles(freq_hz, cores, flops_per_cycle, pmax_w, distance_m, samples,
                           model: ModelCost, *, server_freq_hz: float = 2.0e9,
                           server_cores: int = 3840, server_flops_per_cycle: int = 1,
                           server_bandwidth_hz: float = 20e6, weights: Weights | None = None,
                           rng: np.random.Generator | None = None) -> Scenario:
    """One server (M = 1) and the sampled clients' reported profiles, one entry per client.

    Parameters
    ----------
    freq_hz, cores, flops_per_cycle, pmax_w, distance_m, samples : array-like, shape (N,)
        Device frequency, cores, FLOPs per cycle per core, max transmit power, distance to the
        server, local sample count.
    model : ModelCost
        From the real model config and run config; ``model.seq_len`` is every user's d.
    rng : numpy.random.Generator, optional
        Draws this round's Rayleigh fading; no fading when omitted.
    """
    gain = path_gain(distance_m)
    if rng is not None:
        gain = gain * rng.exponential(1.0, np.shape(gain))
    n = np.size(gain)
    return Scenario(user_freq_hz=freq_hz, user_cores=cores, user_flops_per_cycle=flops_per_cycle,
                    user_pmax_w=pmax_w, samples=samples, tokens=np.full(n, model.seq_len),
                    server_freq_hz=[server_freq_hz], server_cores=[server_cores],
                    server_flops_per_cycle=[server_flops_per_cycle],
                    server_bandwidth_hz=[server_bandwidth_hz], gain=np.reshape(gain, (n, 1)),
                    model=model, weights=weights or Weights())
