"""A device's privacy budget: its block counts, its planned noise, and the step it stops at, each
against an independent count and opacus's accountant."""

import pytest
import torch
from opacus.accountants import RDPAccountant

from clients.privacy import RELEASES_PER_STEP, BudgetSpent, PrivacyAccount, block_releases
from edgesplit.blocks import TokenBlocks
from edgesplit.dp import ALPHAS
from edgesplit.protocol import RoundTask
from edgesplit.settings import PrivacySettings
from harness.configs import tiny_run_config
from harness.inprocess import run_in_process

DELTA = 1e-5


def blocks(n):
    ids = torch.arange(n * 4).reshape(n, 4)
    return TokenBlocks(ids, torch.ones_like(ids), ids.clone())


def task(server_round, local_steps=4, batch_size=4):
    return RoundTask(server_round=server_round, split=1, local_steps=local_steps,
                     batch_size=batch_size, learning_rate=1e-3, optimizer="adamw", seed=3,
                     device_tail_layers=1)


def counted(data, t, batches):
    """Tensors released per block, counted batch by batch from the rows the sampler returns."""
    counts = torch.zeros(len(data), dtype=torch.int64)
    for b in batches:
        for row in data.batch(b, t.batch_size, t.seed)["input_ids"]:
            counts[int(row[0]) // 4] += RELEASES_PER_STEP
    return counts


def opacus_epsilon(z, releases):
    accountant = RDPAccountant()
    for _ in range(releases):
        accountant.step(noise_multiplier=z, sample_rate=1.0)
    return accountant.get_epsilon(DELTA, alphas=ALPHAS)


def test_block_releases_match_the_batches_drawn_including_repeats():
    data = blocks(6)  # 6 blocks, batches of 4: epochs wrap, a block can repeat within a batch
    t = task(1)
    for batches in (range(1), range(5), range(2, 9)):
        assert torch.equal(block_releases(data, t, batches), counted(data, t, batches))
    assert int(block_releases(data, t, range(9)).sum()) == 9 * 4 * RELEASES_PER_STEP


def test_budget_runs_out_at_the_step_the_accountant_predicts():
    """Planned for one round of 4 steps; in round 2 the device refuses the round, naming the
    first step whose releases take a block past the budget, as opacus counts it."""
    data, settings = blocks(10), PrivacySettings(epsilon=5.0, delta=DELTA, planned_rounds=1)
    first = PrivacyAccount.open(settings, data, task(1))
    planned = int(counted(data, task(1), range(4)).max())
    assert first.noise_multiplier == pytest.approx(
        PrivacyAccount.open(settings, data, task(1)).noise_multiplier)
    assert opacus_epsilon(first.noise_multiplier, planned) <= 5.0
    spent = first.admit(data, task(1))
    assert spent == pytest.approx(opacus_epsilon(first.noise_multiplier, planned), rel=1e-9)

    second = PrivacyAccount.open(settings, data, task(2))
    assert torch.equal(second.released, counted(data, task(2), range(4)))
    predicted = next(step for step in range(4)
                     if opacus_epsilon(second.noise_multiplier,
                                       int(counted(data, task(2), range(4 + step + 1)).max()))
                     > 5.0)
    assert 0 < predicted < 3  # neither the round's first step nor its last
    with pytest.raises(BudgetSpent, match=f"step {predicted} of round 2 would take"):
        second.admit(data, task(2))
    # A larger budget planned for two rounds covers both.
    roomy = PrivacySettings(epsilon=5.0, delta=DELTA, planned_rounds=2)
    assert PrivacyAccount.open(roomy, data, task(2)).admit(data, task(2)) <= 5.0


def test_a_device_leaves_the_round_its_budget_cannot_cover(tmp_path):
    """In a real (in-process) run planned for one round: round 1 reports each device's spend as
    the accountant computes it; in round 2 every device leaves with the reason, and the round
    is skipped."""
    config = tiny_run_config(split=2, num_server_rounds=2, batch_size=64, output_dir=str(tmp_path),
                             run_name="budget", keys={"privacy.device-tail-layers": 1,
                                                      "privacy.epsilon": 50.0,
                                                      "privacy.rounds": 1})
    _, _, rows = run_in_process(config, num_nodes=3)
    first, second = rows
    assert first["completed"] == 3 and not first["failures"]
    for client in first["clients"]:
        z = client["privacy_noise_multiplier"]
        assert client["privacy_epsilon"] <= 50.0
        assert client["privacy_epsilon"] in [pytest.approx(opacus_epsilon(z, k), rel=1e-9)
                                             for k in range(2, 9, 2)]
    assert second["completed"] == 0 and "skipped" in second
    assert len(second["failures"]) == 3
    assert all("privacy budget spent: step 0 of round 2" in reason
               for reason in second["failures"].values())
