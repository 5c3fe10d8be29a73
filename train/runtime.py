"""Where and how a training run computes: the device, the DDP process group, and the numeric path (precision and
memory layout) chosen by timing the first batch."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from train.speed import SpeedPath, autocast, candidates, fastest


@dataclass
class Runtime:
    device: torch.device
    rank: int
    world: int
    path: SpeedPath = SpeedPath("fp32", False)  # chosen once the first batch exists (choose_path)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def channels_last(self) -> bool:
        return self.path.channels_last

    def autocast(self):
        return autocast(self.device, self.path.precision)


def setup_runtime(device: str) -> Runtime:
    """The device ("auto": this rank's GPU, else the CPU) and, under torchrun, the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "auto":
        chosen = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    else:
        chosen = torch.device(device)
    if world > 1:
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(chosen, rank, world)


def choose_path(rt: Runtime, precision: str, channels_last: str, latent_dim: int, x: torch.Tensor) -> dict[str, float]:
    """Set rt.path to the fastest candidate on the first batch (rank 0 times, every rank follows); returns the figures."""
    paths = candidates(rt.device, precision, channels_last)
    chosen, rates = fastest(paths, x, latent_dim=latent_dim) if rt.main else (paths[0], {})
    if rt.world > 1:
        index = torch.tensor([paths.index(chosen)], device=rt.device)
        dist.broadcast(index, 0)
        chosen = paths[int(index)]
    rt.path = chosen
    if rates and rt.main:
        print(
            "Training speed on the first batch: "
            + ", ".join(f"{n} {r:.1f} img/s" for n, r in rates.items())
            + f" -> {chosen.name}"
        )
    return rates


def stop_everywhere(stop: bool, rt: Runtime) -> bool:
    """True on every rank as soon as one rank wants to stop, so DDP ranks leave the loop at the same step."""
    if rt.world == 1:
        return stop
    flag = torch.tensor([float(stop)], device=rt.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
