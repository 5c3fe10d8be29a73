"""A trained model's folder as the steps after training read it: where it is, and its faces.

`python -m train` writes `RUN/model` (config.json, model.safetensors and a copy of split.json);
vectors, judge and evaluation find it from a run or model folder, divide the faces of `--data` by its
own split.json, and encode them with it.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from celeba.cache import FaceCache, open_cache
from celeba.split import Split, SplitRows
from vae.model import SmileVAE
from vae.preprocess import to_tensor


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder (config.json inside) or a run folder holding `model/`."""
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / "config.json").exists():
            return candidate
    raise SystemExit(f"No model at {path}: expected config.json there or in {path / 'model'}.")


def weights_digest(model_dir: Path) -> str:
    """SHA-256 of the folder's model.safetensors: which weights something was computed with."""
    digest = hashlib.sha256()
    with open(model_dir / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@torch.inference_mode()
def encode_rows(
    model: SmileVAE, images: np.ndarray, rows: np.ndarray, batch_size: int = 64, desc: str = "Encoding"
) -> np.ndarray:
    """Posterior means for `images[rows]` as a float32 (len(rows), latent_dim) array."""
    out = np.empty((len(rows), model.latent_dim), dtype=np.float32)
    model = model.to(memory_format=torch.channels_last)
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch"):
        x = to_tensor(images[rows[start : start + batch_size]]).to(model.device)
        out[start : start + len(x)] = model.encode(x)[0].cpu().numpy()
    return out


def open_model_split(args: argparse.Namespace, model_dir: Path) -> tuple[FaceCache, Split, SplitRows]:
    """The faces of `--data` / `--cache`, divided by the model's own split.json (stops if the data differ)."""
    split = Split.load(model_dir)
    cache = open_cache(args.data, args.cache, args.cache_dir, args.align, args.workers)
    return cache, split, split.rows(cache)
