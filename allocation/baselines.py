"""Baselines of the paper's comparisons: each fixes or randomises part of the decision.

Each returns the arrays (split, association, bandwidth, power, user_freq, server_freq).
"""

from __future__ import annotations

import numpy as np

from .system_model import step_times
from .terms import Terms
from .waterfilling import best_integer_split


def greedy_association(terms: Terms) -> np.ndarray:
    """Each user on the server with the strongest channel (the best rate at equal shares)."""
    return np.argmax(terms.scenario.gain, axis=1)


def _equal_shares(terms: Terms, association: np.ndarray):
    sc = terms.scenario
    count = np.bincount(association, minlength=sc.n_servers)[association]
    return sc.server_bandwidth_hz[association] / count, sc.server_freq_hz[association] / count


def _random_shares(terms: Terms, association: np.ndarray, rng: np.random.Generator):
    """Bandwidth and frequency shares drawn uniformly from each server's simplex."""
    sc = terms.scenario
    u = rng.exponential(1.0, (2, sc.n_users))  # normalised exponentials: a flat Dirichlet
    total = np.stack([np.bincount(association, weights=row, minlength=sc.n_servers)
                      for row in u])[:, association]
    return (u[0] / total[0] * sc.server_bandwidth_hz[association],
            u[1] / total[1] * sc.server_freq_hz[association])


def alpha_only(terms: Terms, resources: str = "equal", seed: int = 0):
    """Optimal splits for fixed resources: max-rate association, and equal shares with full
    power and frequency (``resources="equal"``) or random ones (``"random"``)."""
    sc = terms.scenario
    rng = np.random.default_rng(seed)
    assoc = greedy_association(terms)
    if resources == "equal":
        bw, sfreq = _equal_shares(terms, assoc)
        power, ufreq = sc.user_pmax_w.copy(), sc.user_freq_hz.copy()
    elif resources == "random":
        bw, sfreq = _random_shares(terms, assoc, rng)
        power = rng.uniform(sc.weights.min_power_w, sc.user_pmax_w)
        ufreq = rng.uniform(0.5, 1.0, sc.n_users) * sc.user_freq_hz
    else:
        raise ValueError(f"resources must be 'equal' or 'random', got {resources!r}")
    split = best_integer_split(terms.device_layer_cost(ufreq),
                               terms.server_layer_cost(sfreq, assoc), terms.stab, terms.layers)
    return split, assoc, bw, power, ufreq, sfreq


def resource_only(terms: Terms, seed: int = 0):
    """Random splits; shares, power and frequencies optimised on the max-rate association."""
    rng = np.random.default_rng(seed)
    split = rng.integers(1, terms.layers, terms.scenario.n_users)
    return terms.candidate(split, greedy_association(terms)).arrays(terms.user_freq)


def random_allocation(terms: Terms, seed: int = 0):
    """Random splits, association, shares, power in [pmin, pmax], frequency in [fmax/2, fmax]."""
    sc = terms.scenario
    rng = np.random.default_rng(seed)
    split = rng.integers(1, terms.layers, sc.n_users)
    assoc = rng.integers(0, sc.n_servers, sc.n_users)
    bw, sfreq = _random_shares(terms, assoc, rng)
    power = rng.uniform(sc.weights.min_power_w, sc.user_pmax_w)
    ufreq = rng.uniform(0.5, 1.0, sc.n_users) * sc.user_freq_hz
    return split, assoc, bw, power, ufreq, sfreq



def sflllm(terms: Terms, subchannels: int = 50, max_rounds: int = 20):
    """SflLLM's allocation rule (Zhao et al., GLOBECOM 2025; arXiv 2504.14667) in the paper's
    model: each server's band cut into ``subchannels`` (at least one per user on it), one
    subchannel each, then every other one to the user on that server whose iteration is then
    slowest; each user's split by exhaustive search for its own fastest iteration given its
    bandwidth; the two alternate until the splits repeat. Max-rate association, full power
    and device frequency, equal server shares (SflLLM's power control and LoRA rank are not
    decisions here)."""
    sc = terms.scenario
    n = sc.n_users
    assoc = greedy_association(terms)
    per = np.maximum(subchannels, np.bincount(assoc, minlength=sc.n_servers))
    width = (sc.server_bandwidth_hz / per)[assoc]
    power, ufreq = sc.user_pmax_w.copy(), sc.user_freq_hz.copy()
    _, sfreq = _equal_shares(terms, assoc)

    def delay(split, channels):
        return sum(step_times(sc, split, assoc, channels * width, power, ufreq, sfreq))

    split = np.ones(n, int)
    channels = np.ones(n)
    for _ in range(max_rounds):
        channels = np.ones(n)
        for m in range(sc.n_servers):
            users = np.flatnonzero(assoc == m)
            for _ in range(int(per[m]) - users.size):
                channels[users[np.argmax(delay(split, channels)[users])]] += 1
        by_split = np.stack([delay(np.full(n, a), channels) for a in range(1, terms.layers)])
        new = 1 + np.argmin(by_split, axis=0)
        if np.array_equal(new, split):
            break
        split = new
    return split, assoc, channels * width, power, ufreq, sfreq
