"""Every number the project reports, each with one definition, used by training and evaluation alike.

- Reconstruction uses the posterior mean mu (never a sampled z) in eval mode; PSNR is computed per
  image and then averaged, never the PSNR of a mean MSE; the three live in `vae.reconstruction`, since
  training scores every epoch with them.
- SSIM uses the standard Gaussian window (sigma = 1.5, Wang et al. 2004), per image, then averaged.
- A flip is conditioned on the judge's verdict at alpha = 0 (FLIP_DEFINITION): a face the judge
  already calls smiling cannot "flip" to smiling, so the baseline never sits inside the rate.
- Rates come with a 95% Wilson score interval, which stays inside [0, 1] and is honest for small n.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

FLIP_DEFINITION = (
    "Flips are conditioned on the judge's verdict at alpha=0 (the unedited mu reconstruction): 'plus' is, among "
    "faces the judge calls non-smiling at alpha=0, the share it calls smiling after +alpha; 'minus' is, among faces "
    "it calls smiling at alpha=0, the share it calls non-smiling after -alpha. Verdict: judged P(smile) > 0.5. "
    "rate with a 95% Wilson score interval [low, high]; n = faces in the conditioning set."
)
LIGHTING = ("dark", "mid", "bright")


def ssim(recon: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image SSIM of (N, H, W, 3) float images in [0, 1] with the Gaussian window of Wang et al."""
    return np.array(
        [
            structural_similarity(
                r, t, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            )
            for r, t in zip(recon, target)
        ]
    )


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (Wilson 1927; Newcombe 1998, method 3)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # rounding leaves 1 - 1e-16 for p = 1 (and 1e-17 for p = 0): an interval must contain its own rate
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def proportion(outcomes: np.ndarray) -> dict:
    """{"rate", "low", "high", "n"} of a boolean array; rate is None when there is nothing to count."""
    n, k = int(outcomes.size), int(outcomes.sum())
    low, high = wilson_interval(k, n)
    return {"rate": k / n if n else None, "low": low, "high": high, "n": n}


def flips(at_zero: np.ndarray, at_plus: np.ndarray, at_minus: np.ndarray, select: np.ndarray) -> dict:
    """Flip rates (FLIP_DEFINITION) of the selected faces from boolean "judged smiling" verdicts."""
    return {"plus": proportion(at_plus[select & ~at_zero]), "minus": proportion(~at_minus[select & at_zero])}


def drift(at_zero: np.ndarray, at_plus: np.ndarray, at_minus: np.ndarray) -> dict:
    """Mean change of a judged probability at +alpha and -alpha, and the mean absolute change (which cannot cancel)."""
    up, down = at_plus - at_zero, at_minus - at_zero
    return {
        "plus": float(up.mean()),
        "minus": float(down.mean()),
        "plus_abs": float(np.abs(up).mean()),
        "minus_abs": float(np.abs(down).mean()),
    }


def luminance(images: np.ndarray) -> np.ndarray:
    """Mean Rec. 601 luma of each (N, H, W, 3) uint8 face, in [0, 1]."""
    return (images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).mean(axis=(1, 2)) / 255.0


def terciles(values: np.ndarray) -> tuple[dict[str, np.ndarray], list[float]]:
    """Masks for the lower, middle and upper third of `values` (LIGHTING names), and the two cut points."""
    low, high = np.quantile(values, [1 / 3, 2 / 3])
    masks = {"dark": values <= low, "mid": (values > low) & (values <= high), "bright": values > high}
    return masks, [float(low), float(high)]
