"""The recipe's loss: reconstruction MSE + KL divergence to the standard normal prior.

Reduction (documented because it decides how blurry faces get): the squared error is *summed* over
the 3x128x128 pixels and the KL over the 64 latent dimensions, then both are averaged over the batch.
That is the Gaussian-decoder ELBO; a per-pixel *mean* MSE beside a summed KL lets the KL term win
by a factor of 49,152 and collapses every face to the average face. `beta` scales the KL term.
"""

from __future__ import annotations

import torch

from vae.reconstruction import kl_divergence


def vae_loss(
    recon: torch.Tensor, target: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, per-pixel MSE, KL per sample), each a batch mean; only `loss` is optimised."""
    squared = (recon.float() - target.float()).pow(2).flatten(1)
    kl = kl_divergence(mean.float(), logvar.float())
    loss = (squared.sum(dim=1) + beta * kl).mean()
    return loss, squared.mean(), kl.mean()
