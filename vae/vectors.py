"""Attribute directions in latent space and the edit z + alpha * v.

The recipe's vector is the difference of mean posterior means: v = mean(mu | attribute) -
mean(mu | not attribute), each group capped at N samples drawn with a fixed seed. The slider works
in *standard deviations of the projection* z . v_hat over the train set, so alpha = 1 means "one
typical spread of faces along this direction", whatever the vector's length.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .files import atomic_path

VECTORS_FILE = "attribute_vectors.npz"
SMILE_FILE = "smile_vector.npy"


def mean_difference(
    latents: np.ndarray, positive: np.ndarray, cap: int = 10_000, seed: int = 0, weights: np.ndarray | None = None
) -> np.ndarray:
    """mean(latents[positive]) - mean(latents[~positive]), at most `cap` rows per side (seeded).

    `weights` (one per row) turns each mean into a weighted mean, e.g. to balance subgroups.
    """
    rng = np.random.default_rng(seed)
    weights = np.ones(len(latents)) if weights is None else np.asarray(weights, dtype=np.float64)
    means = []
    for side in (positive, ~positive):
        rows = np.flatnonzero(side)
        if len(rows) == 0:
            raise ValueError("Both groups need at least one sample to form an attribute vector.")
        if len(rows) > cap:
            rows = np.sort(rng.choice(rows, cap, replace=False))
        means.append(np.average(latents[rows], axis=0, weights=weights[rows]))
    return (means[0] - means[1]).astype(np.float32)


def balanced_weights(cells: np.ndarray) -> np.ndarray:
    """Row weights that give every cell (e.g. Male x Young) the same total weight."""
    _, inverse, counts = np.unique(cells, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def project_out(vector: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """`vector` minus its component in the span of `others` (Gram-Schmidt), so edits leave them alone."""
    basis = np.linalg.qr(np.stack(others, axis=1).astype(np.float64))[0]
    return (vector - basis @ (basis.T @ vector)).astype(np.float32)


def projection_std(latents: np.ndarray, vector: np.ndarray) -> float:
    """Spread of z . v_hat: the slider's unit for this direction."""
    return float((latents @ (vector / np.linalg.norm(vector))).std())


def compute_vectors(
    train_z: np.ndarray, train_labels: np.ndarray, names: list[str], cap: int = 10_000, seed: int = 0
) -> AttributeVectors:
    """One recipe vector per attribute column (labels in {-1, 1}) with its slider unit, both from the train rows."""
    vectors, stds = [], []
    for column in range(len(names)):
        v = mean_difference(train_z, train_labels[:, column] > 0, cap=cap, seed=seed)
        vectors.append(v)
        stds.append(projection_std(train_z, v))
    return AttributeVectors(list(names), np.stack(vectors), np.array(stds))


def projection_auc(z: np.ndarray, labels: np.ndarray, vector: np.ndarray) -> float:
    """ROC-AUC of z . vector as a score for labels > 0 (the Mann-Whitney statistic, ties counted half); NaN with one class."""
    positive = labels > 0
    if positive.all() or not positive.any():
        return float("nan")
    scores = z @ vector
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based ranks, tied scores share their mean rank
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def shift_latent(z: torch.Tensor, vector: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """z + alpha * v (alpha may be a column of several strengths: one edit per row)."""
    return z + alpha * vector


@dataclass
class AttributeVectors:
    """Named directions with their slider units; `step(name)` is the latent move for alpha = 1."""

    names: list[str]
    vectors: np.ndarray  # (K, latent_dim) raw directions
    stds: np.ndarray  # (K,) std of z . v_hat over the train split

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        self.stds = np.asarray(self.stds, dtype=np.float32)

    def vector(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise KeyError(f"No vector named {name!r}; available: {', '.join(self.names)}")
        return self.vectors[self.names.index(name)]

    def step(self, name: str) -> torch.Tensor:
        """Unit direction scaled by the projection's std: `shift_latent(z, step, alpha)` moves alpha stds."""
        v = self.vector(name)
        return torch.from_numpy(v / np.linalg.norm(v) * self.stds[self.names.index(name)])

    def save(self, directory: str | os.PathLike, smile_name: str = "Smiling") -> None:
        """`attribute_vectors.npz` (all, with names) and `smile_vector.npy` (float32, (latent_dim,)); atomic."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / VECTORS_FILE) as tmp:
            np.savez(tmp, names=np.array(self.names), vectors=self.vectors, stds=self.stds)
        if smile_name in self.names:
            with atomic_path(directory / SMILE_FILE) as tmp:
                np.save(tmp, self.vector(smile_name).astype(np.float32))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> AttributeVectors:
        with np.load(Path(directory) / VECTORS_FILE, allow_pickle=False) as data:
            return cls([str(n) for n in data["names"]], data["vectors"], data["stds"])
