"""Channel models: each corrupts the hidden state at the rate its parameters say."""

import math

import numpy as np
import pytest
import torch

from edgesplit.channel import (
    AdditiveNoise,
    Erasure,
    QuantiseFlip,
    bpsk_bit_error_rate,
    flip_bits,
    make_channel,
    nakagami_outage,
    uniform_codes,
)


def _hidden(rows: int = 4096, width: int = 64) -> torch.Tensor:
    return torch.randn(rows, width, generator=torch.Generator().manual_seed(123)) * 3.0 + 1.0


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_erasure_rate_matches_loss_rate():
    hidden = _hidden()
    for q in (0.01, 0.1, 0.3):
        out = Erasure(q)(hidden, _gen())
        erased = (out == 0).float().mean().item()
        # 262k elements: the standard error of the rate is below 0.001.
        assert abs(erased - q) < 0.005
        kept = out != 0
        assert torch.equal(out[kept], hidden[kept])


def test_erasure_is_seeded_and_nested_in_q():
    hidden = _hidden(64)
    a, b = Erasure(0.1)(hidden, _gen(7)), Erasure(0.1)(hidden, _gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, Erasure(0.1)(hidden, _gen(8)))
    # Common random numbers: every element erased at q = 0.1 is erased at q = 0.2.
    assert torch.all((Erasure(0.2)(hidden, _gen(7)) == 0) | (a != 0))


def test_nakagami_outage_hand_value_and_monotone():
    # Rayleigh (m = 1): P(|h|^2 < g_th / SNR) = 1 - exp(-g_th / SNR); 10 dB -> 1 - e^-0.1.
    assert nakagami_outage(10.0, m=1.0) == pytest.approx(1 - math.exp(-0.1), rel=1e-12)
    # m = 2, SNR = 1 (0 dB): gammainc(2, 2) = 1 - 3 e^-2.
    assert nakagami_outage(0.0, m=2.0) == pytest.approx(1 - 3 * math.exp(-2), rel=1e-12)
    snrs = np.linspace(-5, 30, 36)
    for m in (1.0, 2.0, 3.0):
        q = [nakagami_outage(s, m=m) for s in snrs]
        assert np.all(np.diff(q) < 0)
    # Milder fading loses less at high SNR.
    assert nakagami_outage(15.0, m=3.0) < nakagami_outage(15.0, m=1.0)
    assert Erasure.from_snr(10.0).loss_rate == pytest.approx(1 - math.exp(-0.1))


def test_noise_power_matches_snr_without_fading():
    hidden = _hidden()
    power = hidden.pow(2).mean().item()
    out = AdditiveNoise(snr_db=10.0)(hidden, _gen())
    noise_power = (out - hidden).pow(2).mean().item()
    np.testing.assert_allclose(noise_power, power / 10.0, rtol=0.02)


def test_noise_power_with_nakagami_fading():
    hidden = _hidden(rows=20000, width=16)
    power = hidden.pow(2).mean().item()
    m = 3.0
    out = AdditiveNoise(snr_db=0.0, fading_m=m)(hidden, _gen())
    noise_power = (out - hidden).pow(2).mean().item()
    # E[1 / |h|^2] = m / (omega (m - 1)) for |h|^2 ~ Gamma(m, omega / m).
    np.testing.assert_allclose(noise_power, power * m / (m - 1), rtol=0.05)


def test_bpsk_ber_hand_value():
    # Q(sqrt(2)) at 0 dB.
    assert bpsk_bit_error_rate(0.0) == pytest.approx(0.0786496, rel=1e-5)
    assert bpsk_bit_error_rate(10.0) < bpsk_bit_error_rate(5.0)


def test_bit_flips_match_ber():
    bits, ber = 8, 0.05
    codes = torch.randint(0, 2**bits, (50000,), generator=_gen(1))
    received = flip_bits(codes, bits, ber, _gen(2))
    assert received.min() >= 0 and received.max() < 2**bits
    flipped = sum(((codes ^ received) >> i & 1).sum().item() for i in range(bits))
    assert abs(flipped / (codes.numel() * bits) - ber) < 0.003


def test_quantise_flip_without_errors_is_within_half_a_step():
    hidden = _hidden(256)
    _, _, step = uniform_codes(hidden, 6)
    out = QuantiseFlip(bits=6)(hidden, _gen())
    assert (out - hidden).abs().max().item() <= step / 2 + 1e-5
    assert not torch.equal(out, hidden)


def test_quantise_flip_error_rate_and_gradient():
    hidden = _hidden(512).requires_grad_(True)
    channel = QuantiseFlip.from_snr(snr_db=2.0, bits=8)
    out = channel(hidden, _gen())
    codes, low, step = uniform_codes(hidden.detach(), 8)
    got = torch.round((out.detach() - low) / step).to(torch.int64)
    flipped = sum(((codes ^ got) >> i & 1).sum().item() for i in range(8))
    assert abs(flipped / (codes.numel() * 8) - channel.bit_error_rate) < 0.003
    out.sum().backward()
    np.testing.assert_allclose(hidden.grad.numpy(), 1.0)


def test_make_channel_builds_each_kind():
    assert make_channel("erasure", loss_rate=0.2) == Erasure(0.2)
    assert make_channel("erasure", snr_db=10.0, m=2.0) == Erasure.from_snr(10.0, m=2.0)
    assert make_channel("noise", snr_db=5.0, fading_m=2.0) == AdditiveNoise(5.0, 2.0)
    assert make_channel("quantise-flip", bits=4, snr_db=3.0) == QuantiseFlip.from_snr(3.0, 4)
    with pytest.raises(ValueError):
        make_channel("none")  # no channel is no call, not a channel object
    with pytest.raises(ValueError):
        Erasure(1.0)
