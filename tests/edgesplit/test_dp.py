"""Differential privacy primitives: clipping, the noise's calibration, and the accountant against
the library's reference values and the Gaussian mechanism's exact privacy curve."""

import math

import numpy as np
import pytest
import torch
from opacus.accountants import PRVAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from scipy.optimize import brentq
from scipy.stats import norm

from edgesplit import dp
from edgesplit.settings import PrivacySettings
from edgesplit.split_model import SplitModel

DELTA = 1e-5


def exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """Epsilon of a mu-GDP mechanism (Balle & Wang 2018, Theorem 8): the tight curve of k
    Gaussian mechanisms of noise multiplier z composed (mu = sqrt(k) / z)."""
    def gap(eps):
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps + norm.logcdf(-eps / mu - mu / 2)) \
            - delta
    return brentq(gap, 0.0, 1e6)


def test_clip_rows_bounds_every_row_and_leaves_short_rows_exact():
    rows = torch.randn(3, 7, 16) * torch.logspace(-2, 2, 7)[:, None]
    clipped = dp.clip_rows(rows, 1.5)
    norms = clipped.norm(dim=-1)
    assert bool((norms <= 1.5 * (1 + 1e-6)).all())
    short = rows.norm(dim=-1) <= 1.5
    assert torch.equal(clipped[short], rows[short])
    long = ~short
    assert torch.allclose(norms[long], torch.full_like(norms[long], 1.5))
    cosine = torch.nn.functional.cosine_similarity(clipped, rows, dim=-1)
    assert torch.allclose(cosine, torch.ones_like(cosine))  # only the length changes
    with pytest.raises(ValueError, match="clip norm must be > 0"):
        dp.clip_rows(rows, 0.0)


@pytest.mark.parametrize(("z", "releases"), [(1.0, 10), (0.5, 100), (2.0, 1000), (0.01, 2)])
def test_epsilon_is_the_librarys_rdp_value_and_bounds_the_exact_curve(z, releases):
    reference = get_privacy_spent(orders=dp.ALPHAS, rdp=compute_rdp(
        q=1.0, noise_multiplier=z, steps=releases, orders=dp.ALPHAS), delta=DELTA)[0]
    ours = dp.epsilon(z, releases, DELTA)
    assert ours == pytest.approx(reference, rel=1e-12)
    exact = exact_gaussian_epsilon(math.sqrt(releases) / z, DELTA)
    assert exact <= ours <= 1.2 * exact  # RDP is an upper bound, and a close one


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # PRV at sampling rate 1
def test_the_noise_multiplier_convention_is_the_gaussian_mechanisms():
    """The PRV accountant (numerically tight) on the same history gives the exact curve: z is
    noise std over sensitivity, as the exact formula assumes."""
    prv = PRVAccountant()
    prv.history = [(1.0, 1.0, 10)]
    assert prv.get_epsilon(DELTA) == pytest.approx(exact_gaussian_epsilon(math.sqrt(10), DELTA),
                                                   rel=1e-3)


def test_noise_multiplier_spends_the_target_and_no_more():
    for target, releases in ((8.0, 10), (1e4, 2), (1.0, 50)):
        z = dp.noise_multiplier(target, DELTA, releases)
        assert target - 0.011 <= dp.epsilon(z, releases, DELTA) <= target
    assert dp.epsilon(1.0, 0, DELTA) == 0.0
    with pytest.raises(ValueError, match="need epsilon > 0"):
        dp.noise_multiplier(0.0, DELTA, 3)


def test_privatize_is_clipping_around_the_centre_plus_the_seeded_noise():
    rows = torch.randn(2, 5, 8) * 10
    centre = torch.randn(5, 8)
    released = dp.privatize(rows, 2.0, 0.3, centre, torch.Generator().manual_seed(7))
    noise = torch.randn(rows.shape, generator=torch.Generator().manual_seed(7))
    assert torch.equal(released, dp.clip_around(rows, 2.0, centre) + 0.3 * noise)
    assert bool(((released - 0.3 * noise - centre).norm(dim=-1) <= 2.0 + 1e-5).all())


def test_release_noise_is_the_multiplier_times_each_blocks_sensitivity():
    scale = dp.ReleaseScale(torch.zeros(4, 8), activation_norm=3.0, gradient_norm=0.5)
    privacy = PrivacySettings(epsilon=1.0, delta=DELTA, activation_clip=2.0, gradient_clip=0.5)
    release = dp.ReleaseNoise.plan(scale, privacy, multiplier=0.1, block_size=4)
    assert release.activation_clip == 6.0 and release.gradient_clip == 0.25
    assert release.activation_sigma == pytest.approx(0.1 * 2 * 6.0 * 2)  # z * 2 C sqrt(S)
    assert release.gradient_sigma == pytest.approx(0.1 * 2 * 0.25 * 2)
    two_part = dp.ReleaseNoise.plan(dp.ReleaseScale(torch.zeros(4, 8), 3.0, None), privacy, 0.1, 4)
    with pytest.raises(ValueError, match="no gradient release"):
        two_part.gradients(torch.zeros(1, 4, 8))


def test_probe_scale_is_public_and_repeatable():
    """No device data goes in: the same model and adapter give the same scale, and the probe's
    massive first position sits in the centre."""
    model = SplitModel("tiny-llama")
    first = dp.probe_scale(model, 2, {}, block_size=8, batch_size=4, tail_from=3)
    again = dp.probe_scale(model, 2, {}, block_size=8, batch_size=4, tail_from=3)
    assert torch.equal(first.centre, again.centre) and first.centre.shape == (8, 64)
    assert first.activation_norm == again.activation_norm > 0
    assert first.gradient_norm == again.gradient_norm > 0
    assert dp.probe_scale(model, 2, {}, 8, 4).gradient_norm is None
    ids = dp.probe_ids(model.config.vocab_size, 8)
    with torch.no_grad():
        hidden = model.head(ids, torch.ones_like(ids), 2)
    np.testing.assert_allclose(first.centre.numpy(), hidden.mean(0).numpy(), rtol=1e-6)


def test_importing_the_accountant_leaves_no_second_log_handler():
    """opacus's import adds a root handler (logging.basicConfig) that doubled every log line."""
    import subprocess
    import sys

    code = ("import logging, edgesplit.dp, opacus.utils.module_utils; "
            "print(len(logging.getLogger().handlers))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "0"
