"""Differential privacy of what a device sends: row clipping, Gaussian noise, the accountant.

The unit of privacy is one training block (`data.block-size` tokens of a device's text); two data
sets are neighbours when one block is replaced by another. A release is one tensor that leaves
the device: the activations of a batch at the split, or (U-shaped split) the gradient it returns
at the body's output. Before release every row (one token's vector) is clipped to L2 norm
`clip`, then every coordinate gets Gaussian noise of std `sigma`. A block holds `rows` token
rows, each of which can move by at most 2 * clip when the block is replaced, so a block's L2
sensitivity is 2 * clip * sqrt(rows) and the release is the Gaussian mechanism with noise
multiplier z = sigma / (2 * clip * sqrt(rows)) for every block in the batch (a block drawn twice
into one batch counts twice).

Why per token rather than per sequence: the sensitivity is the same (a per-sequence bound of
clip * sqrt(rows) gives the same noise), but a per-sequence bound lets the few massive vectors of
a sequence (the first position of a SmolLM2-135M block has norm 24 k at split 15 against a
median of 156 for the others) take the whole norm and drown every ordinary token in noise. Per
token every vector keeps its share, and the clipping acts on the same unit the attacks read.

Activations are clipped around a public centre: the mean, per position, of the head's output on
a probe of uniformly random tokens (`probe_scale`, seeded by a constant, run through the round's
global adapter, so nothing of the device's text enters it). The massive features of the first
position sit in the centre and survive; clipping raw vectors instead cost SmolLM2-135M's
frozen model x1.9 (split 4) to x540 (split 15) in perplexity at the same clip. Clip norms are
given relative to the probe's median (centred) norm at the split, which moves by orders of
magnitude with depth; the probe's gradients at the device tail's input set the gradients' scale.

Composition is the accountant's: opacus's Rényi-DP accountant (`RDPAccountant`, sampling rate 1:
the batch schedule is seeded and known to the server, so no amplification by subsampling is
claimed), converted to (epsilon, delta). Nothing here composes by hand.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from edgesplit.activation_noise import private_generator
from edgesplit.settings import PrivacySettings
from edgesplit.split_model import SplitModel

# opacus runs `logging.basicConfig` when imported: a root handler that printed every line of
# Flower's logger (which propagates to the root) a second time, in every process that loads this
# module. Take that handler out again.
_OPACUS_FORMAT = "%(asctime)s:%(levelname)s:%(message)s"
for _handler in list(logging.getLogger().handlers):
    if getattr(_handler.formatter, "_fmt", None) == _OPACUS_FORMAT:
        logging.getLogger().removeHandler(_handler)

#: Rényi orders the accountant optimises over: opacus's defaults (1.1 to 63), widened at both
#: ends so very large and very small budgets are not bounded by the grid's edge.
ALPHAS = ([1 + x / 100 for x in range(1, 10)] + list(RDPAccountant.DEFAULT_ALPHAS)
          + [80, 128, 256, 512, 1024])


def clip_rows(rows: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale every vector of the last dimension down to L2 norm at most `max_norm` (vectors
    already within it are left exactly as they are)."""
    if max_norm <= 0:
        raise ValueError(f"clip norm must be > 0, got {max_norm}")
    norms = rows.norm(dim=-1, keepdim=True)
    return torch.where(norms > max_norm, rows * (max_norm / norms), rows)


def sensitivity(clip: float, rows: int) -> float:
    """L2 sensitivity of a block of `rows` clipped rows under replace-one."""
    return 2.0 * clip * math.sqrt(rows)


def clip_around(rows: torch.Tensor, clip: float,
                centre: torch.Tensor | None = None) -> torch.Tensor:
    """`centre + clip_rows(rows - centre, clip)` (differentiable; no centre: around 0)."""
    if centre is None:
        return clip_rows(rows, clip)
    centre = centre.to(rows.device, rows.dtype)
    return centre + clip_rows(rows - centre, clip)


def privatize(rows: torch.Tensor, clip: float, sigma: float,
              centre: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """What leaves the device: `clip_around(rows, clip, centre)` plus N(0, sigma^2) noise on
    every coordinate, drawn from `generator` (default: a fresh `private_generator`, seeded by
    the OS's entropy: the server knows the run's seed). Detached, on the CPU, float32."""
    clipped = clip_around(rows.detach().float().cpu(), clip, centre)
    noise = torch.randn(clipped.shape, generator=generator or private_generator())
    return clipped + sigma * noise


def epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """Epsilon at `delta` after `releases` Gaussian mechanisms of this noise multiplier (opacus
    RDP accountant; 0 when nothing was released)."""
    if releases <= 0:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, 1.0, int(releases))]
    with warnings.catch_warnings():  # "optimal order is the largest alpha": reported, not hidden
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta, alphas=ALPHAS))


def noise_multiplier(target_epsilon: float, delta: float, releases: int) -> float:
    """The smallest noise multiplier (opacus's search, to 0.01 in epsilon) whose `releases`
    compositions stay within `target_epsilon` at `delta`."""
    if target_epsilon <= 0 or not 0 < delta < 1 or releases < 1:
        raise ValueError(f"need epsilon > 0, 0 < delta < 1 and releases >= 1; got "
                         f"{target_epsilon}, {delta}, {releases}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                          sample_rate=1.0, steps=int(releases),
                                          accountant="rdp", epsilon_tolerance=0.01,
                                          alphas=ALPHAS))


#: Blocks of the public probe (`probe_scale`) and the constant that seeds its tokens.
PROBE_BLOCKS, PROBE_SEED = 8, 20250925


@dataclass(frozen=True)
class ReleaseScale:
    """Public, data-independent scales of what a device releases at one split.

    centre : torch.Tensor
        ``[block_size, hidden]`` the probe's mean activation per position.
    activation_norm : float
        Median over the probe's tokens of the L2 norm of (activation - centre).
    gradient_norm : float or None
        U-shaped: median L2 norm of a row of the gradient at the device tail's input.
    """

    centre: torch.Tensor
    activation_norm: float
    gradient_norm: float | None


def probe_ids(vocab_size: int, block_size: int, blocks: int = PROBE_BLOCKS) -> torch.Tensor:
    """``[blocks, block_size]`` uniformly random token ids from a constant seed (public)."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    return torch.randint(0, vocab_size, (blocks, block_size), generator=generator)


def probe_scale(model: SplitModel, split: int, lora: Mapping[str, torch.Tensor],
                block_size: int, batch_size: int, tail_from: int | None = None
                ) -> ReleaseScale:
    """The `ReleaseScale` at `split` under adapter `lora` (which must hold the head's layers,
    and with `tail_from` the device tail's): the probe through the head; with `tail_from` (a
    U-shaped split's first device-tail layer) also through the body and the device tail with
    its own tokens as labels, in batches of `batch_size` as training's loss averages them."""
    ids = probe_ids(model.config.vocab_size, block_size)
    mask = torch.ones_like(ids)
    with torch.no_grad(), model.using_lora(lora):
        hidden = model.head(ids, mask, split).float()
    centre = hidden.mean(0)
    activation_norm = float((hidden - centre).norm(dim=-1).median())
    gradient_norm = None
    if tail_from is not None:
        norms = []
        with model.using_lora(lora):
            for start in range(0, len(ids), batch_size):
                rows = slice(start, start + batch_size)
                with torch.no_grad():
                    body = model.body(hidden[rows].to(model.device), mask[rows], split,
                                      tail_from)
                body = body.detach().requires_grad_()
                model.tail(body, mask[rows], tail_from, ids[rows]).loss.backward()
                norms.append(body.grad.float().norm(dim=-1).flatten().cpu())
        gradient_norm = float(torch.cat(norms).median())
    return ReleaseScale(centre.cpu(), activation_norm, gradient_norm)


@dataclass(frozen=True)
class ReleaseNoise:
    """How a device releases in one round: clip norms (absolute) and noise stds.

    centre : torch.Tensor
        ``[block_size, hidden]`` public centre of the activations (`ReleaseScale.centre`).
    activation_clip, activation_sigma : float
    gradient_clip, gradient_sigma : float or None
        U-shaped: the returned gradients' (None in a two-part split).
    """

    centre: torch.Tensor
    activation_clip: float
    activation_sigma: float
    gradient_clip: float | None = None
    gradient_sigma: float | None = None

    @classmethod
    def plan(cls, scale: ReleaseScale, privacy: PrivacySettings, multiplier: float,
             block_size: int) -> ReleaseNoise:
        """Clip norms from the public scale and `privacy`'s factors; each noise std is the
        multiplier times its block's sensitivity."""
        activation_clip = privacy.activation_clip * scale.activation_norm
        gradient_clip = (None if scale.gradient_norm is None
                         else privacy.gradient_clip * scale.gradient_norm)
        return cls(scale.centre, activation_clip,
                   multiplier * sensitivity(activation_clip, block_size), gradient_clip,
                   None if gradient_clip is None
                   else multiplier * sensitivity(gradient_clip, block_size))

    def activations(self, hidden: torch.Tensor) -> torch.Tensor:
        return privatize(hidden, self.activation_clip, self.activation_sigma, self.centre)

    def gradients(self, grad: torch.Tensor) -> torch.Tensor:
        if self.gradient_clip is None or self.gradient_sigma is None:
            raise ValueError("no gradient release planned (a two-part split)")
        return privatize(grad, self.gradient_clip, self.gradient_sigma)
