"""Robust aggregation: equal to independent numpy/scipy computations, and robust in a real round."""

import numpy as np
import pytest
import torch
from scipy import stats

from edgesplit.protocol import LORA, TRAIN_STEP
from edgesplit.records import to_record, unpack
from fl_app.client_app import app as client_app
from fl_app.run_config import parse
from fl_app.server_app import build_strategy
from harness.configs import tiny_run_config
from harness.inprocess import InProcessGrid
from strategies.aggregation import fedavg, make_aggregator, median, trimmed_mean

SHAPES = {"layers.0.q.lora_A": (4, 8), "layers.0.q.lora_B": (8, 4), "layers.1.v.lora_A": (3,)}


def adapters(num_clients, seed=0):
    rng = np.random.default_rng(seed)
    return [{k: torch.from_numpy(rng.standard_normal(s, dtype=np.float32))
             for k, s in SHAPES.items()} for _ in range(num_clients)]


def stacked(clients, key):
    return np.stack([c[key].numpy() for c in clients])


@pytest.mark.parametrize("num_clients", [1, 4, 5])
def test_median_equals_numpy_median_per_coordinate(num_clients):
    clients = adapters(num_clients)
    result = median(clients, [10.0] * num_clients)
    assert result.keys() == SHAPES.keys()
    for key in SHAPES:
        assert result[key].dtype == torch.float32
        np.testing.assert_allclose(result[key].numpy(), np.median(stacked(clients, key), axis=0),
                                   rtol=1e-6, atol=0)


@pytest.mark.parametrize("num_clients, cut", [(5, 0.2), (7, 0.3), (4, 0.1), (6, 0.0)])
def test_trimmed_mean_equals_scipy_trim_mean(num_clients, cut):
    clients = adapters(num_clients, seed=num_clients)
    result = trimmed_mean(clients, [1.0] * num_clients, cut)
    for key in SHAPES:
        expected = stats.trim_mean(stacked(clients, key), cut, axis=0)
        np.testing.assert_allclose(result[key].numpy(), expected, rtol=1e-6, atol=1e-7)


def test_robust_aggregators_ignore_example_counts_and_resist_an_outlier():
    clients = adapters(5)
    outlier = {k: v * 1e6 for k, v in clients[0].items()}
    poisoned = [outlier, *clients[1:]]
    for aggregate in (median, make_aggregator("trimmed-mean", 0.2)):
        assert all(torch.equal(a, b) for a, b in zip(
            aggregate(poisoned, [1e9, 1, 1, 1, 1]).values(),
            aggregate(poisoned, [1, 1, 1, 1, 1]).values(), strict=True))
        honest_max = max(float(c[k].abs().max()) for c in clients for k in SHAPES)
        assert all(v.abs().max() <= honest_max for v in aggregate(poisoned, [1] * 5).values())
    assert max(float(v.abs().max()) for v in fedavg(poisoned, [1] * 5).values()) > 1e4


def test_make_aggregator_names_and_refusals():
    assert make_aggregator("fedavg") is fedavg
    assert make_aggregator("median") is median
    with pytest.raises(ValueError, match="unknown aggregation 'mean'"):
        make_aggregator("mean")
    with pytest.raises(ValueError, match="trim fraction 0.5"):
        make_aggregator("trimmed-mean", 0.5)
    with pytest.raises(ValueError, match="2 weights for 3 adapters"):
        median(adapters(3), [1, 1])


# ---- through the strategy ----------------------------------------------------------------------
BYZANTINE = 2


def run(tmp_path, aggregation, attack):
    """One round with 4 clients; with `attack`, node 2 returns its head adapter scaled by 1e4."""
    config = tiny_run_config(local_steps=2, transport="flower", aggregation=aggregation,
                             trim_fraction=0.25, output_dir=str(tmp_path),
                             run_name=f"{aggregation}-{attack}")
    grid = InProcessGrid(client_app, config, 4)

    def scale_final_adapter(msg):
        if msg.metadata.dst_node_id != BYZANTINE or msg.metadata.message_type != TRAIN_STEP:
            return None
        reply = client_app(msg, grid.contexts[BYZANTINE])
        if LORA in reply.content:  # the last step's reply: the trained head adapter
            reply.content[LORA] = to_record({k: v * 1e4
                                             for k, v in unpack(reply.content[LORA]).items()})
        return reply

    grid.fault = scale_final_adapter if attack else None
    strategy = build_strategy(parse(config), grid)
    start = dict(strategy.global_lora)
    final = strategy.run(grid)
    assert strategy.recorder.rows[0]["completed"] == 4  # the attack passes validation
    return start, final


def distance(a, b):
    return torch.cat([(a[k] - b[k]).flatten() for k in a]).norm().item()


def test_one_byzantine_client_moves_fedavg_far_but_not_median_or_trimmed_mean(tmp_path):
    for aggregation in ("fedavg", "median", "trimmed-mean"):
        start, honest = run(tmp_path, aggregation, attack=False)
        _, attacked = run(tmp_path, aggregation, attack=True)
        moved = distance(honest, start)  # how far one honest round moves the adapter
        assert moved > 0
        if aggregation == "fedavg":
            assert distance(attacked, honest) > 1000 * moved
        else:
            assert distance(attacked, honest) < 0.5 * moved, aggregation
