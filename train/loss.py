"""The recipe's loss: reconstruction MSE + KL divergence to the standard normal prior.

Reduction (documented because it decides how blurry faces get): the squared error is *summed* over
the 3x128x128 pixels and the KL over the 64 latent dimensions, then both are averaged over the batch.
That is the Gaussian-decoder ELBO; a per-pixel *mean* MSE beside a summed KL lets the KL term win
by a factor of 49,152 and collapses every face to the average face. `beta` scales the KL term.
"""

from __future__ import annotations

import numpy as np
import torch

from vae.model import SmileVAE


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per sample, summed over latent dimensions."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def vae_loss(
    recon: torch.Tensor, target: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, per-pixel MSE, KL per sample), each a batch mean; only `loss` is optimised."""
    squared = (recon.float() - target.float()).pow(2).flatten(1)
    kl = kl_divergence(mean.float(), logvar.float())
    loss = (squared.sum(dim=1) + beta * kl).mean()
    return loss, squared.mean(), kl.mean()


def psnr(mse: np.ndarray) -> np.ndarray:
    """PSNR in dB of each image's mean squared error (pixels in [0, 1])."""
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-10))


@torch.no_grad()
def reconstruct(model: SmileVAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(decode(mu), per-image MSE, per-image KL) for a batch x in [0, 1]; the model must be in eval mode."""
    mean, logvar = model.encode(x)
    recon = model.decode(mean)
    mse = (recon.float() - x.float()).pow(2).flatten(1).mean(1)
    return recon, mse, kl_divergence(mean.float(), logvar.float())
