"""The objective as the optimisers see it: weighted per-layer costs, exact resources, candidates.

With the normalised weights folded in, the objective of an allocation is

    sum_n  (a_n + t) A_n + (Y - a_n) B_n(F_n) + sigma_n Y / (Y - a_n) + U_n(b_n, p_n)

with A_n the device's weighted cost per layer (at the optimal device frequency, which does not
depend on anything else), t the layers a U-shaped split keeps at the end of the device (Y is
then what the split divides, and sigma_n carries a factor (Y + t) / Y), B_n the server's
weighted cost per layer at share F_n, sigma_n the stability weight and U_n the uplink's weighted
energy and delay. Only B couples the split with the resources; the uplink depends on the
association alone and is cached per association.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .system_model import Scenario, compute_delay_s, compute_energy_j
from .waterfilling import best_integer_split, device_freq_hz, server_freq_hz, solve_uplink


@dataclass
class Candidate:
    """An integer allocation with its resources and objective (normalised units)."""

    split: np.ndarray
    association: np.ndarray
    server_freq: np.ndarray
    bandwidth: np.ndarray
    power: np.ndarray
    objective: float
    server_price: np.ndarray
    bandwidth_price: np.ndarray

    def arrays(self, user_freq: np.ndarray) -> tuple:
        """(split, association, bandwidth, power, user_freq, server_freq), as ``solve`` needs."""
        return (self.split, self.association, self.bandwidth, self.power, user_freq,
                self.server_freq)


class Terms:
    """Per-scenario constants of the objective and the exact resource solvers built on them."""

    def __init__(self, scenario: Scenario) -> None:
        sc, w = scenario, scenario.weights
        unit_energy, self.unit_time, unit_stab = sc.unit_weights
        self.scenario = sc
        self.layers = sc.layers
        self.kappa = unit_energy * w.k2
        self.user_freq = device_freq_hz(sc.user_freq_hz, self.unit_time, unit_energy * w.k1)
        self.device = self.device_layer_cost(self.user_freq)
        self.tail = sc.model.device_tail_layers
        # Stability counts every layer the device trains: 1 - (a + t)/(Y + t) = (Y - a)/(Y + t).
        self.stab = (unit_stab * 2.0 * w.lipschitz**2 / sc.samples
                     * (self.layers + self.tail) / self.layers)
        self.coef = sc.layer_flops[:, None] / (sc.server_cores * sc.server_flops_per_cycle)[None, :]
        self.gamma = sc.snr_per_w_hz
        self.alpha = unit_energy * sc.bits
        self.beta = self.unit_time * sc.bits * float(w.include_tx_delay)
        self.pmin = np.full(sc.n_users, w.min_power_w)
        self.users = np.arange(sc.n_users)
        self._uplink: dict[bytes, tuple] = {}
        #: Integer allocations whose resources were solved (``candidate`` calls): the work done.
        self.evaluations = 0

    # --- pieces of the objective ---------------------------------------------------------

    def device_layer_cost(self, freq_hz: np.ndarray) -> np.ndarray:
        """A_n(f): weighted device delay plus energy of one layer at frequency f."""
        sc = self.scenario
        unit_energy = sc.unit_weights[0]
        psi, cores, fpc = sc.layer_flops, sc.user_cores, sc.user_flops_per_cycle
        return (unit_energy * compute_energy_j(psi, freq_hz, cores, fpc, sc.weights.k1)
                + self.unit_time * compute_delay_s(psi, freq_hz, cores, fpc))

    def server_layer_cost(self, freq_hz: np.ndarray, association: np.ndarray) -> np.ndarray:
        """B_n(F): weighted server delay plus energy of one layer at share F."""
        coef = self.coef[self.users, association]
        return coef * (self.unit_time / freq_hz + self.kappa * freq_hz**2)

    def compute_cost(self, split, freq_hz, association) -> np.ndarray:
        """Per-user device, server and stability cost, for real or integer splits."""
        y = self.layers
        server = self.server_layer_cost(freq_hz, association)
        return ((split + self.tail) * self.device + (y - split) * server
                + self.stab * y / (y - split))

    def uplink(self, association: np.ndarray):
        """Bandwidth, power, per-user weighted uplink cost and per-server price (cached)."""
        key = association.tobytes()
        if key not in self._uplink:
            sc = self.scenario
            self._uplink[key] = solve_uplink(
                self.gamma[self.users, association], self.alpha, self.beta, self.pmin,
                sc.user_pmax_w, association, sc.server_bandwidth_hz)
        return self._uplink[key]

    def shares(self, split, association):
        """Exact server frequency shares (Hz) and per-server prices for fixed splits."""
        return server_freq_hz(self.layers - np.asarray(split, float),
                              self.coef[self.users, association], association,
                              self.scenario.server_freq_hz, self.unit_time, self.kappa)

    # --- integer allocations -------------------------------------------------------------

    def candidate(self, split, association) -> Candidate:
        """Resources solved exactly for a fixed integer split and association."""
        self.evaluations += 1
        freq, price = self.shares(split, association)
        bw, power, up_cost, mu = self.uplink(association)
        obj = float(self.compute_cost(split, freq, association).sum() + up_cost.sum())
        return Candidate(np.asarray(split, int), association, freq, bw, power, obj, price, mu)

    def polish(self, split, association) -> Candidate:
        """Alternate exact splits (closed form per user) and exact shares until no gain.

        Each half-step is an exact block minimisation, so the objective never increases; the
        result is the best integer split for its own shares.
        """
        best = self.candidate(split, association)
        for _ in range(100):
            b_cost = self.server_layer_cost(best.server_freq, association)
            new = best_integer_split(self.device, b_cost, self.stab, self.layers)
            if np.array_equal(new, best.split):
                break
            cand = self.candidate(new, association)
            if cand.objective >= best.objective:
                break
            best = cand
        return best

    def equal_share_split(self, association) -> np.ndarray:
        """Best integer splits when every server's frequency is shared equally."""
        count = np.bincount(association, minlength=self.scenario.n_servers)[association]
        freq = self.scenario.server_freq_hz[association] / count
        return best_integer_split(self.device, self.server_layer_cost(freq, association),
                                  self.stab, self.layers)
