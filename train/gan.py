"""What the two adversarial fine-tunes share (train.refiner, train.decoder_gan): the fit loop, the patch
critic, its step and its region-weighted losses, the command line made from a Config, checkpoints that
resume, the log, bf16 autocast where the CPU has it natively, and the grid of validation images to look at.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vae.files import atomic_path, atomic_save
from vae.filters import gaussian_blur
from vae.preprocess import to_pixels
from vae.runtime import cpu_has_native_bf16


class PatchDiscriminator(nn.Module):
    """A 0.2 M-parameter patch critic: the image and its weights in, a map of real/made scores out."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        w = width
        self.net = nn.Sequential(
            sn(nn.Conv2d(4, w, 4, 2, 1)),
            nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(w, 2 * w, 4, 2, 1)),
            nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)),
            nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(4 * w, 1, 3, 1, 1)),
        )

    def forward(self, image: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, weights], dim=1))


def mouth_mean(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The critic's patch scores averaged over the weighted region only (the weights pooled to the score map).

    Outside the mouth a made window is the photo itself, so those patches cannot be told apart; averaged
    in, they held the critic's hinge loss near 2 (chance): trained alone for 300 steps on real windows
    against the refiner's inputs it reached 1.87 with the plain mean and 1.32 with this one.
    """
    pooled = F.adaptive_avg_pool2d(weights, scores.shape[-2:])
    return (scores.float() * pooled).sum() / pooled.sum().clamp_min(1e-6)


def masked_l1(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return ((a - b).abs() * weights).sum() / (3 * weights.sum()).clamp_min(1)


def fine_detail(images: torch.Tensor, weights: torch.Tensor) -> float:
    """Mean energy finer than a 1.5-px blur under the weights: how sharp a batch of images is."""
    return float((((images - gaussian_blur(images, 1.5)) ** 2) * weights).sum() / weights.sum())


def add_config_args(p: argparse.ArgumentParser, config: type) -> None:
    """One --flag per field of a Config dataclass, with its default."""
    for f, v in asdict(config()).items():
        p.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v)


def config_from(args: argparse.Namespace, config: type):
    return config(**{f: getattr(args, f) for f in asdict(config())})


def bf16_autocast():
    """bf16 autocast on a CPU that computes bf16 natively; elsewhere fp32 (emulated bf16 is slower)."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if cpu_has_native_bf16() else contextlib.nullcontext()


def resume(checkpoint: Path, parts: dict[str, object], rates: dict[str, float]) -> int:
    """Load `parts` (modules and optimisers by name) from a checkpoint and return its step; the optimisers
    in `rates` take the learning rates given now (a resumed run may change them)."""
    state = torch.load(checkpoint, weights_only=True)
    for key, obj in parts.items():
        obj.load_state_dict(state[key])
    for key, lr in rates.items():
        for group in parts[key].param_groups:
            group["lr"] = lr
    print(f"Resumed at step {state['step']} (learning rates {', '.join(f'{k} {v:g}' for k, v in rates.items())})")
    return state["step"]


def save_checkpoint(checkpoint: Path, parts: dict[str, object], step: int, config) -> None:
    state = {key: obj.state_dict() for key, obj in parts.items()} | {"step": step, "config": asdict(config)}
    with atomic_path(checkpoint) as tmp:
        torch.save(state, tmp)


def save_grid(columns: list[torch.Tensor], path: Path) -> None:
    """Images (B, 3, h, w) in [0, 1], one column each, a row per item, written atomically as a PNG."""
    rows = [np.concatenate([to_pixels(c[i]) for c in columns], axis=1) for i in range(len(columns[0]))]
    atomic_save(Image.fromarray(np.concatenate(rows, axis=0)), path)


def descend(optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on `loss`."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()


def write_record(log: TextIO, record: dict) -> None:
    """A line of the run's log.jsonl, written through, and shown."""
    log.write(json.dumps(record) + "\n")
    log.flush()
    print(record, flush=True)


def open_log(out: Path, step: int, config) -> TextIO:
    """OUT/log.jsonl, opened to append, after a line with this start's step and settings (a resumed run may
    change its learning rates)."""
    log = open(out / "log.jsonl", "a")
    write_record(log, {"started_at_step": step, "config": asdict(config)})
    return log


def batch_rng(seed: int, step: int) -> np.random.Generator:
    """The batches' random draws from `step` on, seeded by both: no two (seed, step) starts share a stream
    (seeding with seed + step gave seed 1 at step 0 and seed 0 resumed at step 1 the same batches)."""
    return np.random.default_rng([seed, step])


def train_critic(
    critic: PatchDiscriminator,
    optimiser: torch.optim.Optimizer,
    real: tuple[torch.Tensor, torch.Tensor],
    made: tuple[torch.Tensor, torch.Tensor],
    autocast,
) -> torch.Tensor:
    """One hinge-loss step of the critic on (images, weights) real and made (the made ones detached); its loss."""
    with autocast:
        real_scores, made_scores = critic(*real), critic(made[0].detach(), made[1])
    loss = mouth_mean(F.relu(1 - real_scores.float()), real[1]) + mouth_mean(F.relu(1 + made_scores.float()), made[1])
    descend(optimiser, loss)
    return loss


def adversarial_loss(critic: PatchDiscriminator, made: torch.Tensor, weights: torch.Tensor, autocast) -> torch.Tensor:
    """The generator's hinge term: the critic's score of its images over the weighted region, negated. The
    critic's own weights gather no gradient (its step comes first and its gradients would only be cleared)."""
    critic.requires_grad_(False)
    try:
        with autocast:
            scores = critic(made, weights)
    finally:
        critic.requires_grad_(True)
    return -mouth_mean(scores.float(), weights)


@dataclass
class Step:
    """One batch's forward pass, as the fit loop needs it: the real images and the made ones (each with the weights
    the critic scores them over), and the generator's two fidelity losses."""

    real: torch.Tensor
    real_weights: torch.Tensor
    made: torch.Tensor
    made_weights: torch.Tensor
    l1: torch.Tensor  # the made images against their targets
    keep: torch.Tensor  # what the edit asked for, kept


def fit(
    cfg,
    parts: dict[str, object],
    out: Path,
    step: int,
    forward: Callable[[np.random.Generator, object], Step],
    validate: Callable[[int], dict],
    save: Callable[[int], None],
    unit: str,
) -> None:
    """The loop both fine-tunes run, from `step` to cfg.steps: per batch (`forward`, drawing from the seeded stream)
    the critic learns real from made, then the generator descends l1_weight * l1 + keep_weight * keep + adv_weight
    * adversarial; a log line every 25 steps (with `unit`s made per second), and every cfg.save_every steps and at
    the end the validation record, the checkpoint (`parts`: the nets and optimisers by name) and `save`'s files."""
    critic, opt_d, opt_g = parts["critic"], parts["opt_d"], parts["opt_g"]
    autocast = bf16_autocast()
    rng = batch_rng(cfg.seed, step)
    started, seen = time.time(), 0
    with open_log(out, step, cfg) as log:
        while step < cfg.steps:
            batch = forward(rng, autocast)
            loss_d = train_critic(critic, opt_d, (batch.real, batch.real_weights), (batch.made, batch.made_weights), autocast)
            adv = adversarial_loss(critic, batch.made, batch.made_weights, autocast)
            descend(opt_g, cfg.l1_weight * batch.l1 + cfg.keep_weight * batch.keep + cfg.adv_weight * adv)
            step += 1
            seen += len(batch.made)
            if step % 25 == 0:
                record = {
                    "step": step,
                    "l1": round(batch.l1.item(), 5),
                    "keep": round(batch.keep.item(), 5),
                    "adv": round(adv.item(), 4),
                }
                record.update({"loss_d": round(loss_d.item(), 4), f"{unit}_per_s": round(seen / (time.time() - started), 1)})
                write_record(log, record)
            if step % cfg.save_every == 0 or step == cfg.steps:
                write_record(log, validate(step))
                save_checkpoint(out / "checkpoint.pt", parts, step, cfg)
                save(step)
                print(f"step {step}: saved", flush=True)
