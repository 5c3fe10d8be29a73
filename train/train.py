"""Train the SMILE VAE: `python -m train --data DIR [--data DIR ...] --out runs/NAME`.

Reads CelebA (official layout), builds the preprocessing cache once, splits 80/20 with a seed,
trains with MSE + KL and Adam, and writes into the run folder every epoch: `log.jsonl` (train/test
MSE, PSNR, KL), `grid_XXXX.png` (test reconstructions over samples from the prior) and
`checkpoint.pt` (atomic). Ctrl-C saves a checkpoint; `--resume` carries on bit-for-bit. The end
model goes to `RUN/model` with `save_pretrained`. `torchrun --nproc_per_node=N -m train ...` runs DDP.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torchvision.utils import save_image
from tqdm import tqdm

from train.cache import ALIGN_MODES, FaceCache, open_cache
from train.data import held_out_mask
from train.loss import vae_loss
from vae.model import SmileVAE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("data")
    src.add_argument("--data", action="append", default=[], metavar="DIR", help="CelebA-layout folder; repeat for several")
    src.add_argument("--cache", metavar="DIR", help="train from an already built cache folder instead of --data")
    src.add_argument("--cache-dir", default="runs/cache", help="where caches are built and reused (default: %(default)s)")
    src.add_argument("--align", choices=ALIGN_MODES, default="auto", help="align faces with MTCNN: auto = only non-CelebA framings")
    src.add_argument("--split", choices=("random", "official"), default="random", help="seeded 80/20, or list_eval_partition.txt")
    src.add_argument("--test-fraction", type=float, default=0.2)
    src.add_argument("--workers", type=int, default=None, help="processes for building the cache (default: all cores)")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--out", default="runs/smile", help="run folder (default: %(default)s)")
    opt.add_argument("--epochs", type=int, default=100)
    opt.add_argument("--batch-size", type=int, default=64, help="per process")
    opt.add_argument("--lr", type=float, default=1e-4)
    opt.add_argument("--beta", type=float, default=1.0, help="weight of the KL term")
    opt.add_argument("--latent-dim", type=int, default=64)
    opt.add_argument("--seed", type=int, default=0, help="seeds the split, the initialisation and the batch order")
    opt.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps (tests, smoke runs)")
    opt.add_argument("--max-minutes", type=float, default=None, help="stop cleanly (checkpoint + model) after this long")
    opt.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    hw = p.add_argument_group("speed")
    hw.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    hw.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                    help="auto: bf16 autocast where the CPU/GPU supports it natively, fp32 on other CPUs, fp16 on old GPUs")
    hw.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto", help="auto = on (faster convolutions)")
    hw.add_argument("--eval-images", type=int, default=2000, help="test images scored each epoch (0 = all)")
    hw.add_argument("--save-fp16", action="store_true", help="store the end model in fp16 (~80 MB instead of ~160 MB)")
    return p.parse_args(argv)


@dataclass
class Runtime:
    device: torch.device
    rank: int
    world: int
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)


def default_precision(device: torch.device) -> str:
    """bf16 autocast where the hardware runs it natively, else fp32 on CPU and fp16 on old GPUs.

    On CPUs without AVX-512 BF16 / AMX, oneDNN falls back to reference kernels and bf16 training
    runs ~15x *slower* than fp32 (measured on this project's 2-core AMD EPYC), so we never guess.
    """
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def setup_runtime(args: argparse.Namespace) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if args.device == "auto":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    precision = args.precision if args.precision != "auto" else default_precision(device)
    channels_last = args.channels_last == "on" or args.channels_last == "auto"
    return Runtime(device, rank, world, precision, channels_last)


def get_cache(args: argparse.Namespace, rt: Runtime) -> FaceCache:
    """Rank 0 builds the cache (once, reused later); the other ranks wait and open it."""
    if rt.main:
        cache = open_cache(args.data, args.cache, args.cache_dir, args.align, args.workers)
    if rt.world > 1:
        dist.barrier()
    return cache if rt.main else open_cache(args.data, args.cache, args.cache_dir, args.align)


class Batches:
    """Seeded per-epoch order over the train rows, sharded across ranks, as float tensors on the device.

    On CUDA the whole uint8 set is copied to the GPU once when it fits in a quarter of its memory.
    """

    def __init__(self, images: np.ndarray, rows: np.ndarray, batch_size: int, rt: Runtime, seed: int) -> None:
        self.rows, self.batch_size, self.rt, self.seed = rows, batch_size, rt, seed
        self.images: np.ndarray | torch.Tensor = images
        if rt.device.type == "cuda" and images.nbytes < torch.cuda.get_device_properties(rt.device).total_memory / 4:
            self.images = torch.from_numpy(np.ascontiguousarray(images)).to(rt.device)
        self.per_rank = len(rows) // rt.world

    def __len__(self) -> int:
        return self.per_rank // self.batch_size

    def epoch(self, epoch: int, skip: int = 0):
        order = np.random.default_rng((self.seed, epoch)).permutation(self.rows)
        mine = order[self.rt.rank * self.per_rank:(self.rt.rank + 1) * self.per_rank]
        for b in range(skip, len(self)):
            yield self.load(np.sort(mine[b * self.batch_size:(b + 1) * self.batch_size]))

    def load(self, rows: np.ndarray) -> torch.Tensor:
        if isinstance(self.images, torch.Tensor):
            pixels = self.images[torch.from_numpy(rows).to(self.rt.device)]
        else:
            pixels = torch.from_numpy(self.images[rows]).to(self.rt.device, non_blocking=True)
        x = pixels.permute(0, 3, 1, 2).float().div_(255.0)  # NHWC storage: this view is channels_last already
        return x if self.rt.channels_last else x.contiguous()


def psnr(mse_per_image: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1.0 / mse_per_image.clamp_min(1e-10))


@torch.no_grad()
def evaluate(model: SmileVAE, batches: Batches, rows: np.ndarray, rt: Runtime, batch_size: int = 128) -> dict:
    """Test reconstruction of the posterior mean: per-pixel MSE, PSNR (mean over images), KL."""
    model.eval()
    mses, kls = [], []
    for start in range(0, len(rows), batch_size):
        x = batches.load(rows[start:start + batch_size])
        with rt.autocast():
            mean, logvar = model.encode(x)
            recon = model.decode(mean)
        mses.append((recon.float() - x).pow(2).flatten(1).mean(1).cpu())
        kls.append((0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1)).cpu())
    model.train()
    mse, kl = torch.cat(mses), torch.cat(kls)
    return {"test_mse": mse.mean().item(), "test_psnr": psnr(mse).mean().item(), "test_kl": kl.mean().item()}


@torch.no_grad()
def save_grid(model: SmileVAE, x: torch.Tensor, path: Path, rt: Runtime, seed: int) -> None:
    """Rows: test images, their reconstructions, samples from the prior (same prior draws every epoch)."""
    model.eval()
    z = torch.randn(len(x), model.latent_dim, generator=torch.Generator().manual_seed(seed)).to(rt.device)
    with rt.autocast():
        recon = model.decode(model.encode(x)[0])
        samples = model.decode(z)
    model.train()
    tmp = path.with_suffix(".tmp.png")
    save_image(torch.cat([x.float(), recon.float(), samples.float()]), tmp, nrow=len(x))
    os.replace(tmp, path)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, model: SmileVAE, optimizer: torch.optim.Optimizer, epoch: int, step_in_epoch: int,
                    global_step: int, args: argparse.Namespace) -> None:
    """Write to a temporary file and rename: a crash mid-write never corrupts the last checkpoint."""
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
        "step_in_epoch": step_in_epoch, "global_step": global_step, "rng": rng_state(),
        "latent_dim": model.latent_dim, "args": vars(args),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    # weights_only=False is needed for the numpy RNG state; only load checkpoints you wrote yourself.
    return torch.load(path, map_location=device, weights_only=False)


class StopRequested(Exception):
    """Raised from the SIGINT/SIGTERM handler between steps so the loop can checkpoint and exit."""


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    rt = setup_runtime(args)
    out = Path(args.out)
    torch.manual_seed(args.seed)
    cache = get_cache(args, rt)
    is_test = held_out_mask(cache.groups, cache.partition, args.split, args.test_fraction, args.seed)
    train_rows, test_rows = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    eval_rows = test_rows if args.eval_images <= 0 else test_rows[: args.eval_images]
    batches = Batches(cache.images, train_rows, args.batch_size, rt, args.seed)
    if len(batches) == 0:
        raise SystemExit(f"Only {len(train_rows)} training images: fewer than one batch of {args.batch_size} per process.")

    model = SmileVAE(latent_dim=args.latent_dim).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scaler = torch.amp.GradScaler(enabled=rt.precision == "fp16")
    epoch, skip, global_step = 0, 0, 0
    checkpoint_path = out / "checkpoint.pt"
    if args.resume:
        if not checkpoint_path.exists():
            raise SystemExit(f"--resume: no checkpoint at {checkpoint_path}")
        state = load_checkpoint(checkpoint_path, rt.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, skip, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        set_rng_state(state["rng"])
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps({**vars(args), "cache_path": str(cache.path), "train_images": len(train_rows),
                                                   "test_images": len(test_rows), "precision": rt.precision,
                                                   "device": str(rt.device), "world_size": rt.world}, indent=2))
    ddp = DistributedDataParallel(model) if rt.world > 1 else model
    grid_x = batches.load(test_rows[:8]) if len(test_rows) else batches.load(train_rows[:8])

    def request_stop(signum, frame):
        raise StopRequested()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.time()
    stopped = False
    try:
        while epoch < args.epochs and not stopped:
            bar = tqdm(batches.epoch(epoch, skip), total=len(batches), initial=skip, desc=f"epoch {epoch + 1}/{args.epochs}",
                       disable=not rt.main, unit="batch", dynamic_ncols=True)
            sums = torch.zeros(3, device=rt.device)
            seen, t0, step_in_epoch = 0, time.time(), skip
            try:
                for x in bar:
                    with rt.autocast():
                        recon, mean, logvar = ddp(x)
                    loss, mse, kl = vae_loss(recon, x, mean, logvar, args.beta)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    step_in_epoch += 1
                    global_step += 1
                    sums += torch.stack([loss.detach(), mse.detach(), kl.detach()]) * len(x)
                    seen += len(x)
                    if step_in_epoch % 10 == 0 or step_in_epoch == len(batches):
                        rate = seen * rt.world / max(time.time() - t0, 1e-9)
                        bar.set_postfix(loss=f"{loss.item():.1f}", mse=f"{mse.item():.4f}", kl=f"{kl.item():.1f}", img_s=f"{rate:.0f}")
                    minutes_up = args.max_minutes is not None and (time.time() - started) / 60 >= args.max_minutes
                    if (args.max_steps is not None and global_step >= args.max_steps) or minutes_up:
                        stopped = True
                        break
            except StopRequested:
                stopped = True
                if rt.main:
                    print(f"\nInterrupted: saving checkpoint at epoch {epoch + 1}, step {step_in_epoch}.")
            bar.close()
            epoch_done = step_in_epoch >= len(batches)
            if epoch_done:
                epoch, skip_next = epoch + 1, 0
            else:
                skip_next = step_in_epoch
            if rt.main:
                save_checkpoint(checkpoint_path, model, optimizer, epoch, skip_next, global_step, args)
                if epoch_done and seen:
                    record = {"epoch": epoch, "step": global_step, "images_seen": global_step * args.batch_size * rt.world,
                              "train_loss": (sums[0] / seen).item(), "train_mse": (sums[1] / seen).item(),
                              "train_kl": (sums[2] / seen).item(), "train_psnr": -10 * math.log10(max((sums[1] / seen).item(), 1e-10)),
                              "images_per_s": seen * rt.world / (time.time() - t0), "wall_s": time.time() - started,
                              **evaluate(model, batches, eval_rows, rt)}
                    with open(out / "log.jsonl", "a") as log:
                        log.write(json.dumps(record) + "\n")
                    save_grid(model, grid_x, out / f"grid_{epoch:04d}.png", rt, args.seed)
                    tqdm.write(f"epoch {epoch}: test PSNR {record['test_psnr']:.2f} dB, KL {record['test_kl']:.1f}, "
                               f"{record['images_per_s']:.0f} img/s")
            skip = skip_next
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if rt.main:
        model.eval()
        model.to(memory_format=torch.contiguous_format).save_pretrained_atomic(out / "model", fp16=args.save_fp16)
        print(f"Saved model to {out / 'model'} (epoch {epoch}, {global_step} steps)")
    if rt.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out
