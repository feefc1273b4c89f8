"""Small random instances that exhaustive search can check, drawn so that the optimum is
usually not edge-only (every user at its smallest split, which a weak solver would find by
accident): servers are slow or crowded next to the devices, and time weighs most. Each
generator's share of instances with a split above 1 at the optimum is tested
(`test_instances.py`)."""

import dataclasses

import numpy as np

from allocation import MakespanScenario, ModelCost, Weights, random_scenario


def small_scenario(seed: int, max_servers: int = 2, min_users: int = 2,
                   paper_bits: bool = True):
    """Seed A's model: ``min_users`` <= N <= 4, M <= ``max_servers``, Y <= 8, weak servers
    (1-3 cores) beside devices of 4-16; with ``paper_bits`` every third seed uses the paper's
    activation-bits rule."""
    rng = np.random.default_rng(seed)
    kw = {"layers": int(rng.integers(3, 9)), "stability": float(rng.uniform(0.1, 2)),
          "time": float(rng.uniform(1, 10)), "energy": float(rng.uniform(0.1, 3)),
          "server_cores": (1, 3), "user_cores": (4, 16)}
    if paper_bits and seed % 3 == 0:
        kw["bits_mode"] = "paper"
    users = int(rng.integers(min_users, 5))
    return random_scenario(users, int(rng.integers(1, max_servers + 1)), seed, **kw)


def small_makespan(seed: int, *, queue: str = "shares", cell: bool = False,
                   max_users: int = 4, max_layers: int = 8, max_servers: int = 2,
                   **overrides) -> MakespanScenario:
    """The makespan model: 2 <= N <= ``max_users``, M <= ``max_servers``, Y <= ``max_layers``;
    servers a few times faster than devices per layer but shared, random memory caps and
    split floors, time weighted 1-10 against energy and stability 0-1 (a third of them time
    only). ``queue="fifo"``: start offsets spread over about one step's time. ``cell``: two or
    three users share a cell of 4-8 subchannels whose whole band carries 2-4 times a step's
    activations per device step."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, max_users + 1))
    m = int(rng.integers(1, max_servers + 1))
    y = int(rng.integers(3, max_layers + 1))
    model = ModelCost(layers=y, hidden_size=8, batch_size=2, seq_len=4, vocab_size=32,
                      attention_heads=2, layer_params=1000, embedding_params=500)
    need = model.device_bytes(np.arange(1, y))
    weights = (Weights(energy=0.0, stability=0.0) if seed % 3 == 0 else
               Weights(time=float(rng.uniform(1, 10)), energy=float(rng.uniform(0, 1)),
                       stability=float(rng.uniform(0, 1))))
    device_layer_s = rng.uniform(0.02, 0.2, n)
    server_layer_s = rng.uniform(0.01, 0.05, m) * (2.0 if cell else 1.0)
    step_s = float(device_layer_s.mean() * y)
    kw = dict(
        device_layer_s=device_layer_s, device_fixed_s=rng.uniform(0, 0.02, n),
        device_power_w=rng.uniform(2, 10, n),
        memory_bytes=rng.choice([need[min(2, y - 2)], need[-1], np.inf], n, p=[0.2, 0.3, 0.5]),
        tx_power_w=rng.uniform(0.1, 0.2, n),
        uplink_bps=model.bits_per_step / rng.uniform(0.05, 0.3, (n, m)) / step_s,
        samples=rng.integers(100, 1000, n), server_layer_s=server_layer_s,
        server_fixed_s=rng.uniform(0, 0.01, m), server_power_w=rng.uniform(100, 400, m),
        concurrency=rng.choice([0.7, 1.0, 1.5], m), model=model, weights=weights,
        min_split=rng.choice([1, 1, 2], n))
    if queue == "fifo":
        kw.update(queue="fifo", local_steps=3, start_s=rng.uniform(0.0, 3 * step_s, n))
    if cell:
        members = np.zeros(n, bool)
        members[rng.choice(n, min(n, int(rng.integers(2, 4))), replace=False)] = True
        subchannels = int(rng.integers(4, 9))
        # The whole band moves a step's bits in 1/4-1/2 of a device step.
        full = model.bits_per_step / rng.uniform(0.25, 0.5, (n, 1)) / step_s
        kw.update(cell=members, cell_subchannels=subchannels,
                  uplink_bps=np.where(members[:, None], full, kw["uplink_bps"]))
    # A third without the adapter's upload (the papers' model); the rest upload 1/8 or 1/2 of a
    # step's activations per layer, after the round's last step.
    adapter = int(rng.choice([0, 8, 32]))
    kw["model"] = dataclasses.replace(model, adapter_params_per_layer=adapter)
    kw.update(overrides)
    return MakespanScenario(**kw)
