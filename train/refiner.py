"""Train the mouth refiner (`vae.refiner`): `python -m train.refiner --model assets --data DIR ... --out runs/refiner`.

1. Pairs (once, cached in OUT/pairs.npz): every training photo of the model's split, at its own
   resolution (folders of photos smaller than the model's input are downscaled copies and left out),
   goes through the app's pipeline (MTCNN alignment, encoding). In a 96 x 96 window around its mouth
   at the photo's scale we keep the photo, the refiner's input at alpha = 0 (its own decode, whose
   target is the photo), and the inputs at -alpha and +alpha (the edit; these have no target).
2. Training: L1 to the photo on the pairs, a patch discriminator (hinge loss) on everything, and on
   the edits an L1 to the input's low frequencies so the smile the decoder drew stays. bf16 autocast
   where the CPU has native bf16. A checkpoint is written every --save-every steps (atomically), and
   `--resume` goes on from it; the refiner itself goes to OUT/refiner.safetensors with a grid of
   validation windows to look at (OUT/grid_<step>.png).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from celeba.model_folder import resolve_model_dir
from celeba.reader import load_index, run_command
from celeba.split import Split
from train.gan import (
    PatchDiscriminator,
    Step,
    add_config_args,
    config_from,
    fine_detail,
    fit,
    masked_l1,
    resume,
    save_grid,
)
from vae.editor import SmileEditor
from vae.files import atomic_path
from vae.filters import gaussian_blur
from vae.preprocess import IMAGE_SIZE, to_pixels
from vae.refiner import MouthRefiner, MouthWindow, refiner_input

WINDOW = (96, 96)


@dataclass
class Config:
    steps: int = 20000
    batch: int = 16  # pairs per step, and as many edited windows
    lr: float = 2e-4  # the refiner's
    lr_critic: float = 2e-4
    width: int = 32
    l1_weight: float = 20.0
    keep_weight: float = 20.0  # edits: L1 of the low frequencies to the input's (the smile stays the decoder's)
    adv_weight: float = 1.0
    alpha: float = 3.0
    save_every: int = 250
    seed: int = 0


def windows_of(editor: SmileEditor, path: Path, alpha: float) -> dict[str, np.ndarray] | None:
    """photo, inputs (3 alphas: 0, -a, +a) and weights in the mouth window of one photo; None without a face."""
    prepared = editor.prepare(path)
    if not prepared.aligned.found:
        return None
    window = MouthWindow.around(prepared.crop_to_photo, size=WINDOW)
    edits = editor.decode_strengths(prepared, [-alpha, alpha])
    photo = torch.from_numpy(np.array(prepared.photo)).permute(2, 0, 1)[None].float() / 255
    photo_win = window.from_photo(photo)
    weights = window.weights()[None]
    edited = torch.from_numpy(edits.photos([-alpha, alpha])).permute(0, 3, 1, 2).float() / 255
    backgrounds = torch.cat([photo_win, window.from_photo(edited)])  # the transfer's edit, as the refiner gets it
    decoded = window.from_crop(torch.cat([prepared.recon[None], edits.decoded]))
    recon = window.from_crop(prepared.recon[None]).expand(3, -1, -1, -1)
    inputs = refiner_input(backgrounds, decoded, recon, weights, window.scale)[:, :3]
    return {
        "photo": to_pixels(photo_win[0]),
        "inputs": to_pixels(inputs),
        "weights": (weights[0, 0].numpy() * 255).round().astype(np.uint8),
    }


def build_pairs(editor: SmileEditor, paths: list[Path], alpha: float, out: Path) -> dict[str, np.ndarray]:
    """Every photo's windows, stacked, written to `out` (npz) so a resumed run does not redo them."""
    rows: dict[str, list] = {"photo": [], "inputs": [], "weights": []}
    for path in tqdm(paths, desc="Mouth windows", unit="photo"):
        found = windows_of(editor, path, alpha)
        if found is not None:
            for key, value in found.items():
                rows[key].append(value)
    pairs = {key: np.stack(value) for key, value in rows.items()}
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **pairs)
    return pairs


def to_batch(
    pairs: dict[str, np.ndarray], rows: np.ndarray, rng: np.random.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(photo (B,3,h,w), inputs (B,3,3,h,w), weights (B,1,h,w)) in [0, 1]; mirrored half the time when an `rng` is given."""
    photo = torch.from_numpy(pairs["photo"][rows]).permute(0, 3, 1, 2).float() / 255
    inputs = torch.from_numpy(pairs["inputs"][rows]).permute(0, 1, 4, 2, 3).float() / 255
    weights = torch.from_numpy(pairs["weights"][rows])[:, None].float() / 255
    if rng is not None and rng.random() < 0.5:
        photo, inputs, weights = photo.flip(-1), inputs.flip(-1), weights.flip(-1)
    return photo, inputs, weights


def grid(refiner: MouthRefiner, pairs: dict[str, np.ndarray], path: Path, count: int = 8) -> None:
    """Rows of photo | input at 0 | refined at 0 | input -a | refined -a | input +a | refined +a."""
    photo, inputs, weights = to_batch(pairs, np.arange(min(count, len(pairs["photo"]))))
    columns = [photo]
    with torch.inference_mode():
        for k in range(3):
            columns += [inputs[:, k], refiner(torch.cat([inputs[:, k], weights], 1)).clamp(0, 1)]
    save_grid(columns, path)


def validate(refiner: MouthRefiner, val: dict[str, np.ndarray], step: int) -> dict:
    """Validation L1 to the photo and fine detail (as a share of the photo's), refined and its input."""
    photo, inputs, weights = to_batch(val, np.arange(len(val["photo"])))
    with torch.inference_mode():
        refined = refiner(torch.cat([inputs[:, 0], weights], 1))
    return {
        "step": step,
        "val_l1": round(float(masked_l1(refined, photo, weights)), 5),
        "val_l1_input": round(float(masked_l1(inputs[:, 0], photo, weights)), 5),
        "val_detail_ratio": {
            k: round(fine_detail(x, weights) / fine_detail(photo, weights), 3)
            for k, x in (("refined", refined), ("input", inputs[:, 0]))
        },
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m train.refiner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="model folder with split.json (e.g. assets)")
    p.add_argument("--data", action="append", required=True, metavar="DIR", help="every folder the split was made from")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int, default=0, help="training photos (0 = all)")
    p.add_argument("--resume", action="store_true", help="go on from OUT/checkpoint.pt, with the learning rates given now")
    p.add_argument("--threads", type=int, default=2)
    add_config_args(p, Config)
    args = p.parse_args(argv)
    cfg = config_from(args, Config)
    torch.set_num_threads(args.threads)
    torch.manual_seed(cfg.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model_dir(args.model)
    editor = SmileEditor.from_pretrained(model_dir)

    pairs_file = args.out / "pairs.npz"
    val_file = args.out / "val_pairs.npz"
    if not pairs_file.exists() or not val_file.exists():
        index = load_index(args.data)
        split = Split.load(model_dir).rows(index)

        def usable(rows: np.ndarray, limit: int) -> list[Path]:
            paths = []
            for r in rows:
                with Image.open(index.paths[r]) as image:
                    if min(image.size) >= IMAGE_SIZE:
                        paths.append(Path(index.paths[r]))
            rng = np.random.default_rng(cfg.seed)
            return sorted(rng.choice(paths, limit, replace=False).tolist()) if limit and len(paths) > limit else paths

        build_pairs(editor, usable(split.train, args.limit), cfg.alpha, pairs_file)
        build_pairs(editor, usable(split.validation, 64), cfg.alpha, val_file)
    pairs = dict(np.load(pairs_file))
    val = dict(np.load(val_file))
    print(f"{len(pairs['photo'])} training windows, {len(val['photo'])} validation windows")

    refiner, critic = MouthRefiner(cfg.width), PatchDiscriminator(cfg.width)
    opt_g = torch.optim.Adam(refiner.parameters(), cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), cfg.lr_critic, betas=(0.5, 0.999))
    checkpoint = args.out / "checkpoint.pt"
    step = 0
    parts = {"refiner": refiner, "critic": critic, "opt_g": opt_g, "opt_d": opt_d}
    if args.resume and checkpoint.exists():
        step = resume(checkpoint, parts, {"opt_g": cfg.lr, "opt_d": cfg.lr_critic})

    def forward(rng: np.random.Generator, autocast) -> Step:
        photo, inputs, weights = to_batch(pairs, rng.integers(0, len(pairs["photo"]), cfg.batch), rng)
        side = torch.from_numpy(rng.integers(1, 3, cfg.batch))  # an edit at -alpha or +alpha
        edited_in = inputs[torch.arange(cfg.batch), side]
        x0, x1 = torch.cat([inputs[:, 0], weights], 1), torch.cat([edited_in, weights], 1)
        with autocast:
            y = refiner(torch.cat([x0, x1])).float()
        y0, y1 = y[: cfg.batch], y[cfg.batch :]
        # real windows against both kinds of made ones; sharp and right on the pairs, the edit's shape kept
        keep = masked_l1(gaussian_blur(y1, 2.0), gaussian_blur(edited_in, 2.0), weights)
        return Step(photo, weights, y, torch.cat([weights, weights]), masked_l1(y0, photo, weights), keep)

    def save(step: int) -> None:
        refiner.save(args.out)
        grid(refiner.eval(), val, args.out / f"grid_{step:06d}.png")
        refiner.train()

    fit(cfg, parts, args.out, step, forward, lambda step: validate(refiner, val, step), save, unit="windows")


if __name__ == "__main__":
    run_command(main)
