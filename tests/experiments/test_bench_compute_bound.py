"""The compute bound of a round: its steps' unsplit unit costs, summed."""

from __future__ import annotations

import pytest

from edgesplit.settings import Settings
from experiments.bench_compute_bound import VARIANTS, UnitCosts


def _units(**overrides) -> UnitCosts:
    units = UnitCosts.__new__(UnitCosts)  # no model: the unit costs are given
    units.settings = Settings(**overrides)
    units.heldout_blocks = 100
    units.samples = [{"train_step_s": 1.0, "eval_forward_s": 0.25, "generation_s": 3.0},
                     {"train_step_s": 1.5, "eval_forward_s": 0.25, "generation_s": 5.0},
                     {"train_step_s": 1.2, "eval_forward_s": 0.25, "generation_s": 4.0}]
    return units


def test_the_bound_sums_training_steps_evaluation_batches_and_generations() -> None:
    # Prepare: 8 clients x 4 steps; 2 validation batches each, 32 held-out blocks in batches of 4
    units = _units(local_steps=4, eval_batches=2, batch_size=4)
    row = {"completed": 8, "heldout_ppl": 10.0, "eval_failures": {"7": "no reply"}}

    # Execute
    bound = units.bound(row)

    # Assert: medians of the samples; the client without a validation reply is not counted
    assert bound["train_steps"] == 32
    assert bound["train_s"] == pytest.approx(32 * 1.2)
    assert bound["eval_s"] == pytest.approx((7 * 2 + 8) * 0.25)
    assert bound["generation_s"] == pytest.approx(4.0)
    assert bound["bound_s"] == pytest.approx(32 * 1.2 + 22 * 0.25 + 4.0)


def test_a_round_without_evaluation_is_bound_by_its_training_alone() -> None:
    bound = _units(local_steps=2).bound({"completed": 3})
    assert bound["bound_s"] == pytest.approx(6 * 1.2)


def test_before_is_the_previous_schedule_and_every_variant_is_a_setting() -> None:
    assert VARIANTS["before"] == {"compute.server-threads": 0, "compute.client-threads": 1,
                                  "compute.batch-tails": False, "eval.overlap": False}
    for variant in VARIANTS.values():
        Settings.from_run_config(variant)  # real keys with the right types
