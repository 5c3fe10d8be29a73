"""How well the VAE gives a face back, one definition that training (every epoch) and evaluation share:
the posterior-mean reconstruction in eval mode (never a sampled z), per-image MSE and PSNR, and the KL to the prior."""

from __future__ import annotations

import numpy as np
import torch

from .model import SmileVAE


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per sample, summed over latent dimensions."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


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
