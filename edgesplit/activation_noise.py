"""Gaussian noise a device adds to the activations it sends (`activation-noise-std`).

Each token's hidden vector h gets noise from N(0, (std * rms(h))^2 I), where rms(h) is the root
mean square of h over the hidden dimension: a per-token signal-to-noise ratio of 1 / std^2
(std 0.1 = 20 dB, 0.3 = 10.5 dB, 1 = 0 dB) whatever the split. Why relative and per token: the
residual stream's scale grows by orders of magnitude with depth, so one absolute std would mean
nothing at one split and everything at another; and a few tokens (the first of a sequence, the
attention sink) carry vectors far larger than the rest, so a scale taken over the whole tensor
would drown the other tokens.

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
    """`hidden` plus Gaussian noise of `std` times each token's RMS (see the module docstring).

    Parameters
    ----------
    hidden : torch.Tensor
        ``[..., hidden_size]``: one vector per token in the last dimension.
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
    noise = torch.randn(hidden.shape, generator=generator or private_generator(),
                        dtype=hidden.dtype, device=hidden.device)
    return hidden + noise * (std * rms)
