"""Small random seed-A instances that exhaustive search can check."""

import numpy as np

from allocation import random_scenario


def small_scenario(seed: int, max_servers: int = 2, min_users: int = 1,
                   paper_bits: bool = True):
    """`min_users` <= N <= 4, M <= `max_servers`, Y <= 8; odd seeds have weak servers, so splits
    above 1 pay off; with `paper_bits` every third seed uses the paper's activation-bits rule."""
    rng = np.random.default_rng(seed)
    kw = {"layers": int(rng.integers(3, 9)), "stability": float(rng.uniform(1, 10)),
          "time": float(rng.uniform(1, 10)), "energy": float(rng.uniform(1, 10))}
    if seed % 2:
        kw["server_cores"] = (1, 2)
    if paper_bits and seed % 3 == 0:
        kw["bits_mode"] = "paper"
    users = int(rng.integers(min_users, 5))
    return random_scenario(users, int(rng.integers(1, max_servers + 1)), seed, **kw)
