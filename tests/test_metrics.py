"""Each metric against values worked out by hand or published."""

import numpy as np
import pytest
import torch

from evaluation.metrics import drift, flips, luminance, proportion, ssim, terciles, wilson_interval
from vae.model import SmileVAE
from vae.reconstruction import psnr, reconstruct


def test_psnr_is_per_image_then_averaged():
    mse = np.array([0.01, 0.0001])
    assert np.allclose(psnr(mse), [20.0, 40.0])
    assert psnr(mse).mean() == pytest.approx(30.0)  # the PSNR of the mean MSE would be 22.97 dB


def test_reconstruct_uses_the_posterior_mean():
    torch.manual_seed(0)
    model = SmileVAE().eval()
    x = torch.rand(2, 3, 128, 128)
    recon, mse, kl = reconstruct(model, x)
    again, _, _ = reconstruct(model, x)
    assert torch.equal(recon, again)  # no sampling
    assert torch.allclose(mse, (recon - x).pow(2).flatten(1).mean(1)) and (kl >= 0).all()


def test_ssim_of_flat_images_is_the_luminance_term():
    a, b = np.full((1, 32, 32, 3), 0.5), np.full((1, 32, 32, 3), 0.6)
    c1 = 0.01**2
    assert ssim(a, a)[0] == pytest.approx(1.0)
    assert ssim(a, b)[0] == pytest.approx((2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1), rel=1e-6)


@pytest.mark.parametrize(
    "k, n, low, high", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)]
)
def test_wilson_interval_matches_newcombe_1998(k, n, low, high):
    assert wilson_interval(k, n) == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (7, 7), (0, 120), (120, 120), (59, 97)])
def test_a_wilson_interval_contains_its_own_rate(k, n):
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_proportion_of_nothing_has_no_rate():
    assert proportion(np.array([], dtype=bool)) == {"rate": None, "low": 0.0, "high": 1.0, "n": 0}


def test_flips_are_conditioned_on_the_verdict_at_alpha_zero():
    # faces 0-3 judged non-smiling at alpha=0, faces 4-7 smiling; face 8 is outside the selection
    at_zero = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0], bool)
    at_plus = np.array([1, 1, 0, 1, 1, 1, 1, 1, 1], bool)  # 3 of 4 flip up; 4-7 already smiled: no flip
    at_minus = np.array([0, 0, 0, 0, 0, 1, 0, 0, 0], bool)  # 3 of 4 flip down
    select = np.arange(9) < 8
    result = flips(at_zero, at_plus, at_minus, select)
    assert result["plus"]["rate"] == 0.75 and result["plus"]["n"] == 4
    assert result["minus"]["rate"] == 0.75 and result["minus"]["n"] == 4
    assert (result["plus"]["low"], result["plus"]["high"]) == pytest.approx(wilson_interval(3, 4))
    assert at_plus[select].mean() == 0.875  # the old, unconditioned "flip rate" counted the 4 faces that already smiled


def test_drift_reports_the_change_that_cancels_and_the_one_that_does_not():
    result = drift(np.array([0.5, 0.5]), np.array([0.7, 0.3]), np.array([0.4, 0.5]))
    assert result["plus"] == pytest.approx(0.0) and result["plus_abs"] == pytest.approx(0.2)
    assert result["minus"] == pytest.approx(-0.05) and result["minus_abs"] == pytest.approx(0.05)


def test_luminance_and_terciles():
    images = np.zeros((3, 4, 4, 3), np.uint8)
    images[1] = 255
    images[2, ..., 0] = 255
    assert np.allclose(luminance(images), [0.0, 1.0, 0.299])
    masks, cuts = terciles(np.arange(9.0))
    assert [np.flatnonzero(masks[n]).tolist() for n in ("dark", "mid", "bright")] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert len(cuts) == 2
