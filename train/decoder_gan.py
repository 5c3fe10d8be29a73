"""Fine-tune the decoder alone into a sharper generator for the same latent:
`python -m train.decoder_gan --model assets --data DIR ... --out runs/decoder_gan`.

The encoder is frozen, so z, the attribute vectors and the split stay valid (the VAE-GAN idea, as a
latent-diffusion VAE's decoder is fine-tuned alone). Each step decodes a batch of training faces'
posterior means and the same latents moved by +-alpha along the smile step, and trains on:
- L1 to the face (the reconstruction stays the person's);
- on the edits, an L1 of the low frequencies to what the frozen decoder draws (the smile stays the one
  the vectors were measured on; only its detail may change);
- a hinge loss from a patch critic that tells real faces from both kinds of decodes, averaged over the
  region the transfer puts on the photo (the lower face), where the sharpness is wanted.
bf16 autocast where the CPU has native bf16. Every --save-every steps: a checkpoint for --resume, the
model folder OUT/model (the model folder's files with the new decoder, ready for `evaluation.photos`)
and OUT/grid_<step>.png of validation faces to look at.
"""

from __future__ import annotations

import argparse
import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from celeba.cache import FaceCache, add_data_args
from celeba.model_folder import encode_rows, open_model_split, resolve_model_dir, weights_digest
from celeba.reader import run_command
from celeba.split import SplitRows
from train import gan
from vae.editor import SmileEditor
from vae.files import atomic_path
from vae.filters import gaussian_blur
from vae.model import SmileVAE
from vae.preprocess import to_tensor
from vae.transfer import region_weights

MODEL_FILES = (
    "attribute_vectors.npz",
    "smile_vector.npy",
    "editor.json",
    "split.json",
    "renderer.safetensors",
    "renderer.json",
    "refiner.safetensors",
    "refiner.json",
)  # what the model folder has besides the model (editor.json may name the renderer or the refiner)


@dataclass
class Config:
    steps: int = 1500  # the run measured in docs/evaluation.md
    batch: int = 16  # faces per step, and as many edits
    lr: float = 2e-4  # the decoder's (the run measured in docs/evaluation.md)
    lr_critic: float = 2e-4
    width: int = 32
    l1_weight: float = 20.0
    keep_weight: float = 20.0
    adv_weight: float = 1.0
    alpha: float = 3.0
    save_every: int = 250
    seed: int = 0


class Decoder(torch.nn.Module):
    """The model's decoding half (decoder_input, decoder) as one module, so it trains and copies alone."""

    def __init__(self, model: SmileVAE) -> None:
        super().__init__()
        self.decoder_input, self.decoder = model.decoder_input, model.decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.decoder_input(z)).float()


def grid(new: Decoder, old: Decoder, x: torch.Tensor, z: torch.Tensor, direction: torch.Tensor, alpha: float, path: Path) -> None:
    """Rows of face | old, new reconstruction | old, new at -alpha | old, new at +alpha."""
    columns = [x]
    with torch.inference_mode():
        for a in (0.0, -alpha, alpha):
            columns += [old(z + a * direction), new(z + a * direction)]
    gan.save_grid(columns, path)


def latents(model: SmileVAE, cache: FaceCache, rows: SplitRows, model_dir: Path, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The training faces' and 256 validation faces' posterior means, encoded once into `path` (npz) with the
    digest of the weights that encoded them: a run resumed with another --model stops instead of training
    its decoder on latents (and against a frozen reference) that are not its own."""
    digest = weights_digest(model_dir)
    if not path.exists():
        train_z = encode_rows(model, cache.images, rows.train, desc="Encoding the training faces")
        val_z = encode_rows(model, cache.images, rows.validation[:256], desc="Encoding validation faces")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, train=train_z, validation=val_z, weights_digest=np.array(digest))
    saved = np.load(path)
    if "weights_digest" not in saved.files or str(saved["weights_digest"]) != digest:
        raise SystemExit(f"{path} was not encoded by the weights in {model_dir}: give this model its own --out.")
    return torch.from_numpy(saved["train"]), torch.from_numpy(saved["validation"])


def validate(new: Decoder, old: Decoder, x: torch.Tensor, z: torch.Tensor, region: torch.Tensor, step: int) -> dict:
    """Validation L1 and fine detail (as a share of the faces' own, over the lower face), new and frozen."""
    with torch.inference_mode():
        decoded = {"new": new(z), "frozen": old(z)}
    weights = region.expand(len(z), -1, -1, -1)
    return {
        "step": step,
        "val_l1": round(float((decoded["new"] - x).abs().mean()), 5),
        "val_l1_frozen": round(float((decoded["frozen"] - x).abs().mean()), 5),
        "val_detail_ratio": {k: round(gan.fine_detail(d, weights) / gan.fine_detail(x, weights), 3) for k, d in decoded.items()},
    }


def save_model_folder(model: SmileVAE, source: Path, folder: Path) -> None:
    """`folder` as a whole model folder: the source folder's other files, copied once, and the model (its
    config.json and weights, the decoder's new ones) written anew each time."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (source / name).exists() and not (folder / name).exists():
            shutil.copyfile(source / name, folder / name)
    model.save_pretrained_atomic(folder, fp16=True)  # the decoder's modules are the model's own


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m train.decoder_gan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="model folder with split.json and attribute_vectors.npz (e.g. assets)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--resume", action="store_true", help="go on from OUT/checkpoint.pt, with the learning rates given now")
    p.add_argument("--threads", type=int, default=2)
    add_data_args(p)
    gan.add_config_args(p, Config)
    args = p.parse_args(argv)
    cfg = gan.config_from(args, Config)
    torch.set_num_threads(args.threads)
    torch.manual_seed(cfg.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model_dir(args.model)
    editor = SmileEditor.from_pretrained(model_dir)  # the model, its vectors and the transfer's region, as the app reads them
    model, step_vector = editor.model.train(), editor.vectors.step(editor.settings.default_attribute)
    cache, _, rows = open_model_split(args, model_dir)

    train_z, val_z = latents(model, cache, rows, model_dir, args.out / "latents.npz")
    val_x = to_tensor(cache.images[rows.validation[: len(val_z)]])

    decoder, frozen = Decoder(model), Decoder(copy.deepcopy(model)).eval().requires_grad_(False)
    critic = gan.PatchDiscriminator(cfg.width)
    opt_g = torch.optim.Adam(decoder.parameters(), cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), cfg.lr_critic, betas=(0.5, 0.999))
    checkpoint = args.out / "checkpoint.pt"
    parts = {"decoder": decoder, "critic": critic, "opt_g": opt_g, "opt_d": opt_d}
    step = gan.resume(checkpoint, parts, {"opt_g": cfg.lr, "opt_d": cfg.lr_critic}) if args.resume and checkpoint.exists() else 0
    region = region_weights(editor.settings.transfer)[None, None]
    weights = region.expand(2 * cfg.batch, -1, -1, -1)

    def forward(rng: np.random.Generator, autocast) -> gan.Step:
        picked = np.sort(rng.choice(len(train_z), cfg.batch, replace=False))
        x = to_tensor(cache.images[rows.train[picked]])
        z = train_z[picked]
        signs = torch.from_numpy(rng.choice([-1.0, 1.0], cfg.batch).astype(np.float32))[:, None]
        moved = z + signs * cfg.alpha * step_vector
        with autocast:
            made = decoder(torch.cat([z, moved]))
            with torch.no_grad():
                drawn = frozen(moved)  # in the same precision as the edits it is compared with
        recon, edited = made[: cfg.batch], made[cfg.batch :]
        # real faces against reconstructions and edits, over the lower face; the person back, the frozen decoder's smile kept
        keep = gan.masked_l1(gaussian_blur(edited, 2.0), gaussian_blur(drawn, 2.0), weights[: cfg.batch])
        return gan.Step(x, weights[: cfg.batch], made, weights, (recon - x).abs().mean(), keep)

    def save(step: int) -> None:
        save_model_folder(model, model_dir, args.out / "model")
        grid(decoder, frozen, val_x[:8], val_z[:8], step_vector, cfg.alpha, args.out / f"grid_{step:06d}.png")

    gan.fit(
        cfg, parts, args.out, step, forward, lambda step: validate(decoder, frozen, val_x, val_z, region, step), save, "decodes"
    )


if __name__ == "__main__":
    run_command(main)
