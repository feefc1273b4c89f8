"""Training with the privacy defences, in-process through the real ServerApp and ClientApp:
every frame a device sends is clipped and noised as planned, DP adapters aggregate across
splits, and with the defences off training gives the adapters of the code before them."""

from pathlib import Path

import pytest
import torch

from edgesplit import dp
from harness.configs import tiny_run_config
from harness.inprocess import run_in_process
from strategies.aggregation import AdapterPrivacy, update_norm

FIXTURES = Path(__file__).parent / "fixtures"
# The adapters these configs trained at main 4f35c08, before any privacy code existed.
# Bit-identical on the CPU they were made on; another CPU's vector kernels round sums
# differently: 5.6e-6 at most after two rounds on an AMD EPYC (torch's CPU capability AVX2),
# with entries up to 0.13. A defence left on moves them far more: privacy.epsilon = 1000 by 0.02,
# activation noise of std 1e-4 by 0.005.
ROUNDING = 2e-5
BEFORE = {"u_shaped": {"privacy.device-tail-layers": 1, "allocation.method": "random"},
          "two_part": {}}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_defences_off_train_as_the_code_before_them(tmp_path, name):
    explicit_off = {"privacy.epsilon": 0.0,
                    "privacy.adapter-epsilon": 0.0} if name == "u_shaped" else {}
    config = tiny_run_config(split=2, num_server_rounds=2, output_dir=str(tmp_path),
                             run_name=name, keys={**BEFORE[name], **explicit_off})
    _, final, _ = run_in_process(config, num_nodes=3)
    before = torch.load(FIXTURES / f"{name}.pt")
    assert final.keys() == before.keys()
    for key in before:
        torch.testing.assert_close(final[key], before[key], rtol=0, atol=ROUNDING, msg=key)


def test_every_frame_is_clipped_and_noised_as_planned(tmp_path, server_frames, monkeypatch):
    """Each activation and gradient frame the server decodes is one `privatize` release: minus
    its noise (regenerated from the recorded seed) and its public centre, every row is within
    the clip norm, and the noise std is the multiplier times the block's sensitivity."""
    releases = []
    seeds = iter(range(10_000))
    privatize = dp.privatize

    def recording(rows, clip, sigma, centre=None, generator=None):
        seed = next(seeds)
        out = privatize(rows, clip, sigma, centre, torch.Generator().manual_seed(seed))
        releases.append((out, seed, clip, sigma, centre))
        return out

    monkeypatch.setattr(dp, "privatize", recording)
    config = tiny_run_config(split=2, num_server_rounds=2, output_dir=str(tmp_path), run_name="c",
                             keys={"privacy.device-tail-layers": 1, "allocation.method": "random",
                                   "privacy.epsilon": 1e4, "privacy.activation-clip": 0.5,
                                   "privacy.gradient-clip": 0.5})
    _, _, rows = run_in_process(config, num_nodes=3)
    assert all(r["completed"] == 3 for r in rows)
    z = rows[0]["clients"][0]["privacy_noise_multiplier"]
    sent = [(f.meta["kind"], f.tensors["hidden"]) for f in server_frames
            if f.meta.get("kind") in ("activations", "body-grad")]
    assert len(sent) == 2 * 3 * 2 * 3  # 2 kinds x 3 steps x 2 rounds x 3 clients
    clipped_somewhere = {"activations": False, "body-grad": False}
    for kind, tensor in sent:
        match = [r for r in releases if torch.equal(r[0], tensor)]
        assert len(match) == 1, f"a {kind} frame that no release made"
        out, seed, clip, sigma, centre = match[0]
        assert sigma == pytest.approx(z * 2 * clip * tensor.shape[1] ** 0.5)
        noise = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
        rows_norm = (out - sigma * noise - (0 if centre is None else centre)).norm(dim=-1)
        assert bool((rows_norm <= clip * (1 + 1e-5)).all()), kind
        clipped_somewhere[kind] |= bool((rows_norm > clip * (1 - 1e-5)).any())
        assert (centre is None) == (kind == "body-grad")  # activations are centred
    assert all(clipped_somewhere.values())  # the clip norms bind, not just hold


def adapter(keys, value):
    return {k: torch.full((2, 3), float(value)) for k in keys}


def test_dp_adapters_aggregate_clients_with_different_key_sets():
    """Three clients hold the keys of splits 1, 2 and 3 (a head each): every update is clipped
    as one vector over its own keys, each key averages over its holders, the noise is N(0,
    (2 z clip)^2) on every held key, and a key nobody holds keeps its value."""
    keys = [f"layers.{i}.lora_A" for i in range(4)]
    previous = adapter(keys, 1.0)
    clients = [adapter(keys[:1], 4.0), adapter(keys[:2], 1.5), adapter(keys[:3], 1.0 + 1e-3)]
    privacy = AdapterPrivacy(clip=2.0, noise_multiplier=0.5, delta=1e-5)
    result = privacy.aggregate(clients, previous, torch.Generator().manual_seed(0))

    generator = torch.Generator().manual_seed(0)  # independent: clip, sum, noise in key order
    scales = [min(1.0, 2.0 / (sum(float((c[k] - previous[k]).pow(2).sum()) for k in c) ** 0.5))
              for c in clients]
    for k in sorted(keys[:3]):
        holders = [(c, s) for c, s in zip(clients, scales, strict=True) if k in c]
        total = sum(s * (c[k] - previous[k]) for c, s in holders)
        noise = torch.randn(previous[k].shape, generator=generator)
        expected = previous[k] + (total + 0.5 * 2 * 2.0 * noise) / len(holders)
        assert torch.allclose(result[k], expected, atol=1e-6), k
    assert torch.equal(result[keys[3]], previous[keys[3]])
    assert scales[0] < 1 and scales[2] == 1  # the first update was clipped, the last not
    assert update_norm(clients[1], previous) == pytest.approx(0.5 * 12 ** 0.5)
    assert privacy.spent(3) == pytest.approx(dp.epsilon(0.5, 3, 1e-5))
    with pytest.raises(ValueError, match="not in the global adapter"):
        privacy.aggregate([adapter(["other"], 1.0)], previous)


def test_dp_adapters_in_a_run_with_different_splits(tmp_path):
    """A run with clients at different splits aggregates under privacy.adapter-epsilon, reports the
    spend each round and stops when the rounds planned for the budget are played."""
    config = tiny_run_config(split=3, num_server_rounds=3, output_dir=str(tmp_path), run_name="a",
                             keys={"privacy.adapter-epsilon": 20.0, "privacy.adapter-clip": 0.01,
                                   "privacy.rounds": 2})
    strategy, final, rows = run_in_process(config, num_nodes=3)
    assert len(rows) == 2  # the third round would pass the budget
    assert len({c["split"] for r in rows for c in r["clients"]}) > 1
    z = strategy.adapter_privacy.noise_multiplier
    assert [r["adapter_epsilon"] for r in rows] == pytest.approx(
        [dp.epsilon(z, 1, 1e-5), dp.epsilon(z, 2, 1e-5)])
    assert rows[-1]["adapter_epsilon"] <= 20.0
    assert all(r["update_norm_median"] > 0.01 for r in rows)  # the clip binds
    assert all(torch.isfinite(v).all() for v in final.values())
