"""Gaussian noise a device adds to the activations it sends (`privacy.activation-noise-std`).

Each sequence's hidden states get noise from N(0, (std * r)^2 I), where r is the median over the
sequence's tokens of a token's root-mean-square activation: a signal-to-noise ratio of about
1 / std^2 for a typical token (std 0.2 = 14 dB, 0.5 = 6 dB, 1 = 0 dB) whatever the split. Why
relative: the residual stream's scale grows by orders of magnitude with depth, so one absolute
std would mean nothing at one split and everything at another. Why the median token and not each
token's own RMS: the first token of a sequence (the attention sink) carries a few massive
features, hundreds of times the others' scale (SmolLM2-135M split 15: RMS 998 against a median
of 6.5), and noise scaled by its own RMS buries its ordinary features and wrecks the model: on
SmolLM2-135M at split 15, std 0.5 scaled per token took the held-out perplexity from 164 to
13530, scaled by the median token to 235 (8 blocks).

The noise comes from a generator seeded by the operating system's entropy, never from the run's
seed: the server knows the seed and the batch index, and could regenerate seeded noise and
subtract it. So a run with noise is not reproducible bit for bit; with std 0 nothing is drawn
and the activations are returned untouched.

This is not differential privacy: nothing bounds the activations' sensitivity, so no epsilon
follows. What leaks through a given std is measured by `python -m experiments.privacy`.
"""

from __future__ import annotations

import secrets

import torch


def private_generator() -> torch.Generator:
    """A CPU generator seeded from the OS's entropy (unpredictable to whoever knows the run)."""
    return torch.Generator().manual_seed(secrets.randbits(63))


def add_noise(hidden: torch.Tensor, std: float,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """`hidden` plus Gaussian noise of `std` times the median token's RMS of each sequence (see
    the module docstring).

    Parameters
    ----------
    hidden : torch.Tensor
        ``[..., sequence, hidden_size]``: one vector per token in the last dimension.
    std : float
        Relative noise level, >= 0; 0 returns `hidden` itself.
    generator : torch.Generator, optional
        Where the noise is drawn from; default a fresh `private_generator`. Experiments pass a
        seeded one to be repeatable.

    Returns
    -------
    torch.Tensor
        The noisy activations; a gradient flows to `hidden` unchanged (the noise is additive and
        its scale is taken from detached values).
    """
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    if std == 0:
        return hidden
    rms = hidden.detach().pow(2).mean(-1, keepdim=True).sqrt()
    scale = rms.median(dim=-2, keepdim=True).values
    noise = torch.randn(hidden.shape, generator=generator or private_generator(),
                        dtype=hidden.dtype, device=hidden.device)
    return hidden + noise * (std * scale)
