"""Pick the training path (precision, memory layout) by timing it on this machine.

On a CPU bf16 is only a candidate where it is native (`vae.runtime`, which decides that for the app and
the mirror too: emulated, a training step runs ~3x (AVX-512) to ~15x (AVX2) slower than fp32), and among
the candidates the fastest over a few real steps wins (the figures are logged). On a GPU the choice is
fixed: bf16 where supported, else fp16, channels_last.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass

import numpy as np
import torch

from train.loss import vae_loss
from vae.model import SmileVAE
from vae.runtime import cpu_has_native_bf16


@dataclass(frozen=True)
class SpeedPath:
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool

    @property
    def name(self) -> str:
        return self.precision + ("+channels_last" if self.channels_last else "")


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def candidates(device: torch.device, precision: str = "auto", channels_last: str = "auto") -> list[SpeedPath]:
    """The paths worth timing for the `--precision` and `--channels-last` options."""
    if precision != "auto":
        precisions = [precision]
    elif device.type == "cuda":
        precisions = ["bf16" if torch.cuda.is_bf16_supported() else "fp16"]
    else:
        precisions = ["fp32"] + (["bf16"] if cpu_has_native_bf16() else [])
    layouts = {"on": [True], "off": [False], "auto": [True] if device.type == "cuda" else [False, True]}[channels_last]
    return [SpeedPath(p, c) for p, c in itertools.product(precisions, layouts)]


def images_per_s(path: SpeedPath, x: torch.Tensor, steps: int = 2, latent_dim: int = 64) -> float:
    """Training images/s of a fresh model on batch `x` (median of `steps` after one warm-up step).

    Runs on its own model and optimiser with the global RNG saved and restored, so timing never
    changes the real run.
    """
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        model = SmileVAE(latent_dim=latent_dim).to(x.device)
        x = x.contiguous(memory_format=torch.channels_last if path.channels_last else torch.contiguous_format)
        if path.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        times = []
        for _ in range(steps + 1):
            start = time.perf_counter()
            with autocast(x.device, path.precision):
                recon, mean, logvar = model(x)
            loss = vae_loss(recon, x, mean, logvar)[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            times.append(time.perf_counter() - start)
    return len(x) / float(np.median(times[1:]))


def fastest(paths: list[SpeedPath], x: torch.Tensor, steps: int = 2, latent_dim: int = 64) -> tuple[SpeedPath, dict[str, float]]:
    """The fastest of `paths` on batch x, with every measured images/s (nothing is timed for a single path)."""
    if len(paths) == 1:
        return paths[0], {}
    rates = {path: images_per_s(path, x, steps, latent_dim) for path in paths}
    return max(rates, key=rates.get), {path.name: round(rate, 2) for path, rate in rates.items()}
