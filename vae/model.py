"""The SMILE variational autoencoder: the recipe's architecture, latent 64, 3x128x128 input in [0, 1].

Activations: LeakyReLU(0.2) in the encoder (keeps gradients for dark pixels), ReLU in the decoder,
sigmoid on the output so reconstructions live in [0, 1] like the input.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import save_file
from torch import nn

from .files import atomic_files

FEATURE_SHAPE = (256, 16, 16)  # encoder output before flattening: 128 px / 2**3 = 16
MODEL_CARD = """---
library_name: smile
tags: [vae, celeba, face-editing]
---
# SMILE VAE (a model trained with `python -m train`)

A convolutional VAE (latent {latent_dim}, 128x128 RGB faces) from https://github.com/smile-vae/smile. `split.json`
names the train / validation / test images it was trained and is evaluated on.

- Attribute vectors: `python -m train.vectors --model THIS_FOLDER --data DIR ...` (the data it was trained on).
- Edit a photo: `python -m vae edit PHOTO --model THIS_FOLDER`.
- Evaluation: `python -m evaluation.judge --model THIS_FOLDER --data DIR --out JUDGE`, then
  `python -m evaluation.faces --model THIS_FOLDER --judge JUDGE --data DIR --out EVAL --update-model` (writes
  `evaluation.json` here) and `python -m evaluation.photos` for whole photos (see the project README).

Trained on CelebA-layout data: CelebA is for non-commercial research only (Liu et al., ICCV 2015).
"""


def _written_by_hand(card: Path) -> bool:
    """A model card that neither this class nor the Hub mixin's template wrote."""
    return card.exists() and not any(mark in card.read_text() for mark in ("PytorchModelHubMixin", MODEL_CARD.splitlines()[4]))


class SmileVAE(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="smile",
    tags=["vae", "celeba", "face-editing"],
    repo_url="https://github.com/smile-vae/smile",
):
    """Convolutional VAE. `encode` gives the posterior (mean, logvar); edits use the mean only."""

    def __init__(self, latent_dim: int = 64, hidden_dim: int = 512) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        flat = FEATURE_SHAPE[0] * FEATURE_SHAPE[1] * FEATURE_SHAPE[2]
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 64, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),  # 128 -> 64
            nn.Conv2d(64, 128, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),  # 64 -> 32
            nn.Conv2d(128, 256, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),  # 32 -> 16
            nn.Flatten(),
            nn.Linear(flat, hidden_dim),
            nn.LeakyReLU(0.2),
        )
        self.z_mean = nn.Linear(hidden_dim, latent_dim)
        self.z_logvar = nn.Linear(hidden_dim, latent_dim)
        self.decoder_input = nn.Linear(latent_dim, flat)
        self.decoder = nn.Sequential(
            nn.Unflatten(1, FEATURE_SHAPE),
            nn.ReLU(),
            nn.ConvTranspose2d(256, 256, 4, stride=2, padding=1),
            nn.ReLU(),  # 16 -> 32
            nn.ConvTranspose2d(256, 128, 4, stride=2, padding=1),
            nn.ReLU(),  # 32 -> 64
            nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1),
            nn.ReLU(),  # 64 -> 128
            nn.Conv2d(64, 3, 3, padding=1),
            nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters (mean, log-variance) for a batch of images in [0, 1]."""
        h = self.encoder(x)
        return self.z_mean(h).float(), self.z_logvar(h).float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] for a batch of latent codes."""
        return self.decoder(self.decoder_input(z)).float()

    @staticmethod
    def reparameterize(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Sample z = mean + exp(0.5 * logvar) * eps, differentiable in mean and logvar."""
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction of a sampled z, plus the posterior (mean, logvar) for the loss."""
        mean, logvar = self.encode(x)
        return self.decode(self.reparameterize(mean, logvar)), mean, logvar

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def save_pretrained_atomic(self, save_directory: str | os.PathLike, *, fp16: bool = False) -> Path:
        """`save_pretrained` that never leaves a half-written folder; fp16 halves the file (~80 MB).

        Files go to a temporary folder inside the target and are moved in one by one (`atomic_files`),
        so a reader sees either the old or the new file, never a partial one.
        Loading always returns float32 parameters (see `load`).
        """
        target = Path(save_directory)
        with atomic_files(target) as tmp:
            self.save_pretrained(tmp)
            if fp16:
                state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in self.state_dict().items()}
                save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
            if _written_by_hand(target / "README.md"):
                (tmp / "README.md").unlink(missing_ok=True)  # a model card someone wrote (assets/README.md) stays
            else:
                (tmp / "README.md").write_text(MODEL_CARD.format(latent_dim=self.latent_dim))  # not the mixin's template
        return target

    @classmethod
    def load(cls, model_id: str | os.PathLike) -> SmileVAE:
        """`from_pretrained` in float32 and eval mode, whatever dtype the file was stored in.

        Strict: the mixin's default would leave any weight the file lacks at its random start, silently.
        """
        model = cls.from_pretrained(str(model_id), strict=True)
        return model.float().eval()
