"""Train the SMILE VAE: `python -m train --data DIR [--data DIR ...] --out runs/NAME`.

Reads CelebA (official layout), builds the preprocessing cache once, splits it once into train /
validation / test (80/10/10, by person where known) and writes that split to `RUN/split.json`; a
resumed run reads it back. Trains with MSE + KL and Adam, and writes into the run folder every epoch:
`log.jsonl` (train objective; train and validation MSE, PSNR, KL and loss of the posterior-mean
reconstruction), `grid_XXXX.png` (validation reconstructions over samples from the prior) and
`checkpoint.pt` (atomic). `RUN/model` (with a copy of split.json) holds the epoch with the lowest
validation loss; the test part is left for `python -m evaluation.faces`. Ctrl-C or SIGTERM stops
after the current optimiser step and saves a checkpoint; `--resume` carries on bit-for-bit. It needs the
same `--data` (or `--cache`) and arguments: only --epochs, --max-steps, --max-minutes and the device
settings may change, any other change is refused by name (args.json keeps the first command and lists
the resumes). `torchrun --nproc_per_node=N -m train ...` runs DDP.

`main` reads top to bottom: `setup` (data, split, model, optimiser, resume), then per epoch
`train_epoch` (the steps) and `end_epoch` (log, best model, grid, checkpoint), then `finish`.
"""

from __future__ import annotations

import argparse
import copy
import json
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

from train.cache import FaceCache, add_data_args, open_cache
from train.loss import psnr, reconstruct, vae_loss
from train.speed import SpeedPath, autocast, candidates, fastest
from train.split import Split, add_split_args, make_split, sample_rows
from vae.files import atomic_path, atomic_write_text
from vae.model import SmileVAE
from vae.preprocess import to_tensor


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    add_split_args(p)
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
    hw.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="auto: on a GPU bf16 (fp16 on old GPUs); on a CPU the fastest of fp32 and native bf16, timed",
    )
    hw.add_argument(
        "--channels-last",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto: on for a GPU; on a CPU timed against the plain layout",
    )
    hw.add_argument("--eval-images", type=int, default=2000, help="validation (and train) images scored each epoch (0 = all)")
    hw.add_argument("--save-fp16", action="store_true", help="store the end model in fp16 (~80 MB instead of ~160 MB)")
    return p.parse_args(argv)


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
    return Runtime(device, rank, world)


def choose_path(args: argparse.Namespace, rt: Runtime, x: torch.Tensor) -> dict[str, float]:
    """Set rt.path to the fastest candidate on the first batch (rank 0 times, every rank follows); returns the figures."""
    paths = candidates(rt.device, args.precision, args.channels_last)
    chosen, rates = fastest(paths, x, latent_dim=args.latent_dim) if rt.main else (paths[0], {})
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
        mine = order[self.rt.rank * self.per_rank : (self.rt.rank + 1) * self.per_rank]
        for b in range(skip, len(self)):
            yield self.load(np.sort(mine[b * self.batch_size : (b + 1) * self.batch_size]))

    def load(self, rows: np.ndarray) -> torch.Tensor:
        if isinstance(self.images, torch.Tensor):  # already on the GPU: convert there
            x = self.images[torch.from_numpy(rows).to(self.rt.device)].movedim(-1, -3).float().div_(255.0)
        else:
            x = to_tensor(self.images[rows]).to(self.rt.device, non_blocking=True)
        return x if self.rt.channels_last else x.contiguous()  # NHWC storage: the NCHW view is channels_last already


@torch.no_grad()
def evaluate(
    model: SmileVAE, batches: Batches, rows: np.ndarray, rt: Runtime, beta: float, prefix: str, batch_size: int = 128
) -> dict:
    """Posterior-mean reconstruction of `rows`: MSE, PSNR (per image, then averaged), KL and the loss
    (summed squared error + beta * KL per image, the objective with z = mu), keys prefixed `prefix_`."""
    model.eval()
    mses, kls = [], []
    for start in range(0, len(rows), batch_size):
        x = batches.load(rows[start : start + batch_size])
        with rt.autocast():
            _, mse, kl = reconstruct(model, x)
        mses.append(mse.cpu())
        kls.append(kl.cpu())
    model.train()
    mse, kl = torch.cat(mses).numpy(), torch.cat(kls).numpy()
    pixels = int(np.prod(batches.images.shape[1:]))
    scores = {"mse": mse.mean(), "psnr": psnr(mse).mean(), "kl": kl.mean(), "loss": (mse * pixels + beta * kl).mean()}
    return {f"{prefix}_{name}": float(value) for name, value in scores.items()}


@torch.no_grad()
def save_grid(model: SmileVAE, x: torch.Tensor, path: Path, rt: Runtime, seed: int) -> None:
    """Rows: validation images, their reconstructions, samples from the prior (same prior draws every epoch)."""
    model.eval()
    z = torch.randn(len(x), model.latent_dim, generator=torch.Generator().manual_seed(seed)).to(rt.device)
    with rt.autocast():
        recon = model.decode(model.encode(x)[0])
        samples = model.decode(z)
    model.train()
    with atomic_path(path) as tmp:
        save_image(torch.cat([x.float(), recon.float(), samples.float()]), tmp, nrow=len(x))


def rng_state() -> dict:
    """Every generator's state in types a weights_only load accepts (numpy's keys as a tensor)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "cached": cached}
    state = {"torch": torch.get_rng_state(), "numpy": numpy, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(
        (numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["cached"])
    )
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: Path,
    model: SmileVAE,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    step_in_epoch: int,
    global_step: int,
    best: dict | None,
    rt: Runtime,
    args: argparse.Namespace,
    images_seen: int,
) -> None:
    """Write to a temporary file and rename: a crash mid-write never corrupts the last checkpoint."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "global_step": global_step,
        "rng": rng_state(),
        "best": best,
        "path": (rt.path.precision, rt.path.channels_last),
        "latent_dim": model.latent_dim,
        "args": vars(args),
        "images_seen": images_seen,
        "world": rt.world,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    """weights_only: a checkpoint holds tensors and plain values, so loading one runs no pickled code."""
    return torch.load(path, map_location=device, weights_only=True)


class StopFlag:
    """SIGINT/SIGTERM only raise a flag, which the loop reads between optimiser steps.

    A handler that raised wherever Python happened to be could cut Adam's per-parameter update in
    half, or land after the update but before the step counter moved (that batch would be replayed
    on resume). A second signal acts as it did before, for a run that must die at once.
    """

    def __init__(self) -> None:
        self.raised = False
        self.previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.raised = True
        signal.signal(signum, self.previous[signum])

    def __enter__(self) -> StopFlag:
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def save_model(model: SmileVAE, split: Split, directory: Path, fp16: bool) -> None:
    """The model and, next to it, the split it was trained on (what vectors, judge and evaluate read)."""
    model.eval()
    model.to(memory_format=torch.contiguous_format).save_pretrained_atomic(directory, fp16=fp16)
    split.save(directory)


def run_split(args: argparse.Namespace, cache: FaceCache, out: Path) -> Split:
    """A new run makes the split (and rank 0 writes it); a resumed run reads its own back, whatever the flags say."""
    if args.resume:
        return Split.load(out)
    return make_split(cache, args.split, args.split_by, args.validation_fraction, args.test_fraction, args.seed)


def stop_everywhere(stop: bool, rt: Runtime) -> bool:
    """True on every rank as soon as one rank wants to stop, so DDP ranks leave the loop at the same step."""
    if rt.world == 1:
        return stop
    flag = torch.tensor([float(stop)], device=rt.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


# Arguments a resumed run may change: how long it goes on, and where and how fast it runs. Every other one
# shapes the run (its batches, its numbers, its model), so a resume with another value is refused.
MAY_CHANGE_ON_RESUME = {
    "epochs",
    "max_steps",
    "max_minutes",
    "resume",
    "out",
    "device",
    "precision",
    "channels_last",
    "workers",
    "cache",
    "cache_dir",
    "data",
}  # the data are checked against split.json instead
SPLIT_ARGS = {"split", "split_by", "validation_fraction", "test_fraction"}  # a resumed run reads its own split back


def check_resume(args: argparse.Namespace, state: dict, rt: Runtime) -> None:
    """Stop, naming every argument that differs and the data if missing, unless this command continues the run."""
    before = state["args"]
    changed = [
        name
        for name, value in vars(args).items()
        if name not in MAY_CHANGE_ON_RESUME | SPLIT_ARGS and name in before and before[name] != value
    ]
    problems = []
    if changed:
        listed = ", ".join(f"--{n.replace('_', '-')} {before[n]} (now {getattr(args, n)})" for n in changed)
        problems.append(
            f"it was started with {listed}: give the run's own values (see {Path(args.out) / 'args.json'}); "
            "only --epochs, --max-steps, --max-minutes and the device settings may change"
        )
    if not args.data and not args.cache:
        problems.append(
            "it needs the data the run was trained on: the same --data folders (or --cache) as the first run, "
            f"which had --data {' --data '.join(before.get('data') or []) or '(none)'}"
            + (f" --cache {before['cache']}" if before.get("cache") else "")
        )
    if state.get("world", rt.world) != rt.world:
        problems.append(f"the run used {state['world']} processes, this command {rt.world}, so the batches would differ")
    if problems:
        raise SystemExit("--resume would not continue the same run: " + "; ".join(problems) + ".")
    ignored = [f"--{n.replace('_', '-')}" for n in sorted(SPLIT_ARGS) if n in before and before[n] != getattr(args, n)]
    if ignored and rt.main:
        print(f"--resume reads the run's own split.json: {', '.join(ignored)} ignored.")


@dataclass
class Run:
    """What one training run carries from step to step: its data, model and optimiser, and where it stands."""

    args: argparse.Namespace
    rt: Runtime
    out: Path
    split: Split
    batches: Batches
    scored: dict[str, np.ndarray]  # the rows evaluated each epoch, per part
    grid_x: torch.Tensor
    model: SmileVAE
    ddp: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    epoch: int = 0  # whole epochs done
    skip: int = 0  # steps of the current epoch done (a resumed mid-epoch stop)
    global_step: int = 0
    images_seen: int = 0  # over every process
    best: dict | None = None
    started: float = 0.0

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"


@dataclass
class EpochStats:
    """Sums over the steps of one (possibly partial) epoch."""

    sums: torch.Tensor  # objective loss, mse, kl, each times the batch size
    t0: float
    step_in_epoch: int
    seen: int = 0  # images of this process
    stopped: bool = False


def setup(args: argparse.Namespace, rt: Runtime) -> Run:
    """Data, split, model and optimiser, restored from the checkpoint with --resume; writes the run's files."""
    out = Path(args.out)
    checkpoint_path = out / "checkpoint.pt"
    if args.resume and not checkpoint_path.exists():
        raise SystemExit(f"--resume: no checkpoint at {checkpoint_path}")
    state = load_checkpoint(checkpoint_path, rt.device) if args.resume else None
    if state:
        check_resume(args, state, rt)
    torch.manual_seed(args.seed)
    cache = get_cache(args, rt)
    split = run_split(args, cache, out)
    rows = split.rows(cache)
    eval_count = None if args.eval_images <= 0 else args.eval_images
    scored = {part: sample_rows(getattr(rows, part), eval_count, args.seed) for part in ("train", "validation")}
    batches = Batches(cache.images, rows.train, args.batch_size, rt, args.seed)
    if len(batches) == 0:
        raise SystemExit(f"Only {len(rows.train)} training images: fewer than one batch of {args.batch_size} per process.")
    if len(rows.validation) == 0:
        raise SystemExit("The split has no validation images, so no epoch could be chosen: raise --validation-fraction.")

    if state:
        rt.path, speed_trial = SpeedPath(*state["path"]), {}  # the same numerics as before the stop
    else:
        speed_trial = choose_path(args, rt, batches.load(rows.train[: args.batch_size]))
    model = SmileVAE(latent_dim=args.latent_dim).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scaler = torch.amp.GradScaler(enabled=rt.path.precision == "fp16")
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
    ddp = DistributedDataParallel(model) if rt.world > 1 else model
    run = Run(args, rt, out, split, batches, scored, batches.load(rows.validation[:8]), model, ddp, optimizer, scaler)
    if state:
        run.epoch, run.skip, run.global_step, run.best = (
            state["epoch"],
            state["step_in_epoch"],
            state["global_step"],
            state["best"],
        )
        # a checkpoint from before images_seen was stored: the batch size cannot have changed (check_resume)
        run.images_seen = state.get("images_seen", run.global_step * args.batch_size * rt.world)
    if rt.main:
        write_run_files(run, cache, speed_trial)
    run.started = time.time()
    return run


def write_run_files(run: Run, cache: FaceCache, speed_trial: dict[str, float]) -> None:
    """A new run writes split.json and args.json; a resumed one keeps them and adds what changed to args.json."""
    args, rt, out = run.args, run.rt, run.out
    out.mkdir(parents=True, exist_ok=True)
    path = out / "args.json"
    if args.resume and path.exists():
        record = json.loads(path.read_text())
        changes = {k: getattr(args, k) for k in ("epochs", "max_steps", "max_minutes") if record.get(k) != getattr(args, k)}
        resumed = {"step": run.global_step, "device": str(rt.device), "changed": changes}
        record = {**record, **changes, "resumed": [*record.get("resumed", []), resumed]}
    else:
        if not args.resume:
            run.split.save(out)
        record = {
            **vars(args),
            "cache_path": str(cache.path),
            **run.split.counts(),
            "split_unit": run.split.unit,
            "precision": rt.path.precision,
            "channels_last": rt.channels_last,
            "speed_trial_images_per_s": speed_trial,
            "device": str(rt.device),
            "world_size": rt.world,
        }
    atomic_write_text(path, json.dumps(record, indent=2))


def train_step(run: Run, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step on the batch x; returns (objective, mse, kl) of the batch."""
    with run.rt.autocast():
        recon, mean, logvar = run.ddp(x)
    loss, mse, kl = vae_loss(recon, x, mean, logvar, run.args.beta)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.global_step += 1
    run.images_seen += len(x) * run.rt.world
    return loss, mse, kl


def train_epoch(run: Run, signalled: StopFlag) -> EpochStats:
    """The rest of the current epoch, or up to a stop (signal, --max-steps, --max-minutes), at a step boundary."""
    args, rt = run.args, run.rt
    bar = tqdm(
        run.batches.epoch(run.epoch, run.skip),
        total=len(run.batches),
        initial=run.skip,
        desc=f"epoch {run.epoch + 1}/{args.epochs}",
        disable=not rt.main,
        unit="batch",
        dynamic_ncols=True,
    )
    stats = EpochStats(torch.zeros(3, device=rt.device), time.time(), run.skip)
    for x in bar:
        loss, mse, kl = train_step(run, x)
        stats.step_in_epoch += 1
        stats.sums += torch.stack([loss.detach(), mse.detach(), kl.detach()]) * len(x)
        stats.seen += len(x)
        if stats.step_in_epoch % 10 == 0 or stats.step_in_epoch == len(run.batches):
            rate = stats.seen * rt.world / max(time.time() - stats.t0, 1e-9)
            bar.set_postfix(loss=f"{loss.item():.1f}", mse=f"{mse.item():.4f}", kl=f"{kl.item():.1f}", img_s=f"{rate:.0f}")
        minutes_up = args.max_minutes is not None and (time.time() - run.started) / 60 >= args.max_minutes
        steps_up = args.max_steps is not None and run.global_step >= args.max_steps
        if stop_everywhere(signalled.raised or steps_up or minutes_up, rt):
            stats.stopped = True
            if signalled.raised and rt.main:
                tqdm.write(f"Stopping after step {stats.step_in_epoch} of epoch {run.epoch + 1}: saving a checkpoint.")
            break
    bar.close()
    return stats


def end_epoch(run: Run, stats: EpochStats) -> None:
    """Move the position on; after a whole epoch log it, keep the best model and write a grid; always checkpoint."""
    epoch_done = stats.step_in_epoch >= len(run.batches)
    if epoch_done:
        run.epoch, run.skip = run.epoch + 1, 0
    else:
        run.skip = stats.step_in_epoch
    if not run.rt.main:
        return
    if epoch_done and stats.seen:
        record = epoch_record(run, stats)
        if run.best is None or record["validation_loss"] < run.best["validation_loss"]:
            run.best = {"epoch": run.epoch, "validation_loss": record["validation_loss"]}
            save_model(copy.deepcopy(run.model), run.split, run.out / "model", run.args.save_fp16)
        record["best_epoch"] = run.best["epoch"]
        with open(run.out / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        save_grid(run.model, run.grid_x, run.out / f"grid_{run.epoch:04d}.png", run.rt, run.args.seed)
        tqdm.write(
            f"epoch {run.epoch}: validation PSNR {record['validation_psnr']:.2f} dB, loss {record['validation_loss']:.1f} "
            f"(best: epoch {run.best['epoch']}), {record['images_per_s']:.0f} img/s"
        )
    save_checkpoint(
        run.checkpoint_path,
        run.model,
        run.optimizer,
        run.epoch,
        run.skip,
        run.global_step,
        run.best,
        run.rt,
        run.args,
        run.images_seen,
    )


def epoch_record(run: Run, stats: EpochStats) -> dict:
    """One line of log.jsonl: the epoch's objective, its speed, and train / validation scores."""
    seen, rt = stats.seen, run.rt
    record = {
        "epoch": run.epoch,
        "step": run.global_step,
        "images_seen": run.images_seen,
        "objective_loss": (stats.sums[0] / seen).item(),
        "objective_mse": (stats.sums[1] / seen).item(),
        "objective_kl": (stats.sums[2] / seen).item(),
        "images_per_s": seen * rt.world / (time.time() - stats.t0),
        "wall_s": time.time() - run.started,
    }
    for part, rows in run.scored.items():
        record.update(evaluate(run.model, run.batches, rows, rt, run.args.beta, part))
    return record


def finish(run: Run) -> None:
    """Make sure RUN/model exists (a run without a whole epoch keeps its last state) and say what was saved."""
    if run.rt.main:
        best, out = run.best, run.out
        if best is None:  # no whole epoch yet (a smoke run): the model is the last state
            save_model(copy.deepcopy(run.model), run.split, out / "model", run.args.save_fp16)
        print(
            f"Saved {out / 'model'}: "
            + (
                f"epoch {best['epoch']}, the lowest validation loss"
                if best
                else f"the state after {run.global_step} steps (no whole epoch)"
            )
            + f"; stopped at epoch {run.epoch}, {run.global_step} steps"
        )
    if run.rt.world > 1:
        dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    rt = setup_runtime(args)
    run = setup(args, rt)
    with StopFlag() as signalled:
        stopped = False
        while run.epoch < args.epochs and not stopped:
            stats = train_epoch(run, signalled)
            stopped = stats.stopped
            end_epoch(run, stats)
    finish(run)
    return run.out
