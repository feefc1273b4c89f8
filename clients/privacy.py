"""A device's privacy budget: the noise it plans, what its blocks have released, when it stops.

The device owns its guarantee (`privacy.epsilon`, `edgesplit.dp`): it plans one noise
multiplier for the run, counts how often each of its blocks has been released, asks the
accountant what that has cost, and refuses a round whose frames would take any block past the
budget. Every step of a U-shaped split releases two tensors that hold a block of the batch:
the activations at the split and the gradient returned at the body's output.

How the count is kept: a device cannot tell a round it was not sampled in from one whose record
it lost (a simulation actor or a deployed ClientApp that raised keeps no state), so it counts
every round up to the current one as trained, with the batches the seeded schedule gives them
(`TokenBlocks.batch_indices`). That is exact when every client trains every round
(`train.client-fraction = 1`, the default) and conservative otherwise: a device never spends more
than it reports. The noise is planned for `planned_rounds` rounds of the run: a device asked
for more leaves with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgesplit.blocks import TokenBlocks
from edgesplit.dp import epsilon, noise_multiplier
from edgesplit.protocol import RoundTask
from edgesplit.settings import PrivacySettings

#: Tensors released per block per step of a U-shaped split: activations and body gradient.
RELEASES_PER_STEP = 2


class BudgetSpent(RuntimeError):
    """The device's privacy budget does not cover the round it was asked for."""


def block_releases(data: TokenBlocks, task: RoundTask, batches: range) -> torch.Tensor:
    """How many tensors holding each block the global batches `batches` release (int64
    ``[len(data)]``)."""
    counts = torch.zeros(len(data), dtype=torch.int64)
    for batch in batches:
        counts.index_add_(0, data.batch_indices(batch, task.batch_size, task.seed),
                          torch.ones(task.batch_size, dtype=torch.int64))
    return counts * RELEASES_PER_STEP


@dataclass(frozen=True)
class PrivacyAccount:
    """One device's budget at the start of a round.

    settings : PrivacySettings
    noise_multiplier : float
        Noise std over the block's sensitivity (`edgesplit.dp`), planned so that training in
        every planned round spends exactly the budget at the most released block.
    released : torch.Tensor
        int64 ``[blocks]``: tensors holding each block released before this round.
    """

    settings: PrivacySettings
    noise_multiplier: float
    released: torch.Tensor

    @classmethod
    def open(cls, settings: PrivacySettings, data: TokenBlocks, task: RoundTask
             ) -> PrivacyAccount:
        """The account of a device with shard `data` at the start of `task`'s round."""
        planned = block_releases(data, task, range(settings.planned_rounds * task.local_steps))
        multiplier = noise_multiplier(settings.epsilon, settings.delta, int(planned.max()))
        earlier = block_releases(data, task, range(task.batch_index(0)))
        return cls(settings, multiplier, earlier)

    def spent(self, released: torch.Tensor | None = None) -> float:
        """Epsilon of the most released block (at `released`, default before this round)."""
        released = self.released if released is None else released
        return epsilon(self.noise_multiplier, int(released.max()), self.settings.delta)

    def admit(self, data: TokenBlocks, task: RoundTask) -> float:
        """Epsilon after the whole round; BudgetSpent naming the first step that would take a
        block past the budget (nothing of the round is sent then)."""
        released = self.released
        for step in range(task.local_steps):
            batch = task.batch_index(step)
            released = released + block_releases(data, task, range(batch, batch + 1))
            spent = self.spent(released)
            if spent > self.settings.epsilon:
                raise BudgetSpent(
                    f"privacy budget spent: step {step} of round {task.server_round} would take "
                    f"a block to epsilon {spent:.4g} > privacy.epsilon "
                    f"{self.settings.epsilon:g} (delta {self.settings.delta:g}; spent so far "
                    f"{self.spent():.4g} over {int(self.released.max())} releases, noise "
                    f"multiplier {self.noise_multiplier:.4g} planned for "
                    f"{self.settings.planned_rounds} rounds); leaving the round")
        return spent
