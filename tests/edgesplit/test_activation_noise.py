"""Device-side activation noise: off means untouched, on means the configured relative std."""

import pytest
import torch

from edgesplit.activation_noise import add_noise


def test_zero_std_returns_the_activations_themselves():
    hidden = torch.randn(2, 8, 16)
    assert add_noise(hidden, 0.0) is hidden


def test_noise_follows_each_sequences_median_token_rms():
    """Two sequences 100x apart in scale each get noise of std x their median token's RMS; a
    sink-like token 1000x larger than the rest gets the same absolute noise as the rest."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 64, 256)
    hidden[1] *= 100.0
    hidden[:, 0] *= 1000.0
    noisy = add_noise(hidden, 0.3, torch.Generator().manual_seed(1))
    median = hidden.pow(2).mean(-1).sqrt()[:, 1:].median(-1).values  # the sink is no median
    for sequence in range(2):
        noise = (noisy - hidden)[sequence] / median[sequence]
        for tokens in (noise[:1], noise[1:]):
            assert tokens.std().item() == pytest.approx(0.3, rel=0.1)
            assert abs(tokens.mean().item()) < 0.05


def test_gradient_passes_straight_through():
    hidden = torch.randn(2, 4, 8, requires_grad=True)
    add_noise(hidden, 0.5).sum().backward()
    assert torch.equal(hidden.grad, torch.ones_like(hidden))


def test_default_noise_ignores_the_global_seed():
    """The server knows the run's seed: the device's noise must not follow it."""
    hidden = torch.ones(1, 4, 8)
    draws = []
    for _ in range(2):
        torch.manual_seed(0)
        draws.append(add_noise(hidden, 0.1))
    assert not torch.equal(draws[0], draws[1])


def test_negative_std_is_refused():
    with pytest.raises(ValueError, match="noise std must be >= 0"):
        add_noise(torch.ones(2, 2), -0.1)
