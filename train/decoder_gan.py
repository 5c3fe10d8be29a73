"""Fine-tune the decoder alone into a sharper generator for the same latent (issue 15, route 1):
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
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from train import gan
from train.cache import add_data_args
from train.data import run_command
from train.model_folder import encode_rows, open_model_split, resolve_model_dir
from vae.editor import SmileEditor
from vae.files import atomic_path
from vae.model import SmileVAE
from vae.preprocess import to_tensor
from vae.transfer import gaussian_blur, region_weights

MODEL_FILES = ("config.json", "attribute_vectors.npz", "smile_vector.npy", "editor.json", "split.json")  # kept as they are


@dataclass
class Config:
    steps: int = 1500  # the README's route-1 run
    batch: int = 16  # faces per step, and as many edits
    lr: float = 2e-4  # the decoder's (the README's route-1 run)
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


def grid(new: Decoder, old: Decoder, x: torch.Tensor, z: torch.Tensor, step: torch.Tensor, alpha: float, path: Path) -> None:
    """Rows of face | old, new reconstruction | old, new at -alpha | old, new at +alpha."""
    columns = [x]
    with torch.inference_mode():
        for a in (0.0, -alpha, alpha):
            columns += [old(z + a * step), new(z + a * step)]
    gan.save_grid(columns, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m train.decoder_gan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="model folder with split.json and attribute_vectors.npz (e.g. assets)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--resume", action="store_true")
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

    latents_file = args.out / "latents.npz"
    if not latents_file.exists():
        train_z = encode_rows(model, cache.images, rows.train, desc="Encoding the training faces")
        val_z = encode_rows(model, cache.images, rows.validation[:256], desc="Encoding validation faces")
        with atomic_path(latents_file) as tmp, open(tmp, "wb") as f:
            np.savez(f, train=train_z, validation=val_z)
    latents = np.load(latents_file)
    train_z, val_z = torch.from_numpy(latents["train"]), torch.from_numpy(latents["validation"])
    val_x = to_tensor(cache.images[rows.validation[: len(val_z)]])

    decoder, frozen = Decoder(model), Decoder(copy.deepcopy(model)).eval().requires_grad_(False)
    critic = gan.PatchDiscriminator(cfg.width)
    opt_g = torch.optim.Adam(decoder.parameters(), cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), cfg.lr_critic, betas=(0.5, 0.999))
    checkpoint = args.out / "checkpoint.pt"
    parts = {"decoder": decoder, "critic": critic, "opt_g": opt_g, "opt_d": opt_d}
    step = gan.resume(checkpoint, parts, {"opt_g": cfg.lr, "opt_d": cfg.lr_critic}) if args.resume and checkpoint.exists() else 0
    log = open(args.out / "log.jsonl", "a")
    log.write(json.dumps({"started_at_step": step, "config": asdict(cfg)}) + "\n")
    autocast = gan.bf16_autocast()
    region = region_weights(editor.settings.transfer)[None, None]
    weights = region.expand(2 * cfg.batch, -1, -1, -1)
    rng = np.random.default_rng(cfg.seed + step)
    started, seen = time.time(), 0
    while step < cfg.steps:
        picked = np.sort(rng.choice(len(train_z), cfg.batch, replace=False))
        x = to_tensor(cache.images[rows.train[picked]])
        z = train_z[picked]
        signs = torch.from_numpy(rng.choice([-1.0, 1.0], cfg.batch).astype(np.float32))[:, None]
        moved = z + signs * cfg.alpha * step_vector
        with autocast:
            made = decoder(torch.cat([z, moved]))
        recon, edited = made[: cfg.batch], made[cfg.batch :]
        with torch.no_grad():
            drawn = frozen(moved)
        # the critic: real faces against reconstructions and edits, over the lower face
        with autocast:
            real, fake = critic(x, weights[: cfg.batch]), critic(made.detach(), weights)
        loss_d = gan.mouth_mean(F.relu(1 - real.float()), weights[: cfg.batch]) + gan.mouth_mean(
            F.relu(1 + fake.float()), weights
        )
        gan.descend(opt_d, loss_d)
        # the decoder: the person's face back, the frozen decoder's smile kept, real-looking detail
        with autocast:
            adv = -gan.mouth_mean(critic(made, weights).float(), weights)
        l1 = (recon - x).abs().mean()
        keep = gan.masked_l1(gaussian_blur(edited, 2.0), gaussian_blur(drawn, 2.0), weights[: cfg.batch])
        loss_g = cfg.l1_weight * l1 + cfg.keep_weight * keep + cfg.adv_weight * adv
        gan.descend(opt_g, loss_g)
        step += 1
        seen += 2 * cfg.batch
        if step % 25 == 0:
            record = {"step": step, "l1": round(l1.item(), 5), "keep": round(keep.item(), 5), "adv": round(adv.item(), 4)}
            record.update(loss_d=round(loss_d.item(), 4), decodes_per_s=round(seen / (time.time() - started), 1))
            gan.write_record(log, record)
        if step % cfg.save_every == 0 or step == cfg.steps:
            decoder.eval()
            with torch.inference_mode():
                new, old = decoder(val_z), frozen(val_z)
                v = region.expand(len(val_z), -1, -1, -1)
                record = {
                    "step": step,
                    "val_l1": round(float((new - val_x).abs().mean()), 5),
                    "val_l1_frozen": round(float((old - val_x).abs().mean()), 5),
                    "val_detail_ratio": {
                        k: round(gan.fine_detail(d, v) / gan.fine_detail(val_x, v), 3) for k, d in (("new", new), ("frozen", old))
                    },
                }
            log.write(json.dumps(record) + "\n")
            log.flush()
            gan.save_checkpoint(checkpoint, parts, step, cfg)
            folder = args.out / "model"
            folder.mkdir(exist_ok=True)
            for name in MODEL_FILES:
                if (model_dir / name).exists() and not (folder / name).exists():
                    shutil.copyfile(model_dir / name, folder / name)
            model.save_pretrained_atomic(folder, fp16=True)  # the decoder's modules are the model's own
            grid(decoder, frozen, val_x[:8], val_z[:8], step_vector, cfg.alpha, args.out / f"grid_{step:06d}.png")
            decoder.train()
            print(f"step {step}: {record}; saved", flush=True)


if __name__ == "__main__":
    run_command(main)
