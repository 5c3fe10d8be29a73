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
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torchvision.utils import save_image
from tqdm import tqdm

from celeba.cache import FaceCache, add_data_args, open_cache
from celeba.split import Split, add_split_args, make_split, sample_rows
from train.checkpoint import check_resume, load_checkpoint, save_checkpoint, set_rng_state
from train.loss import vae_loss
from train.runtime import Runtime, choose_path, setup_runtime, stop_everywhere
from train.speed import SpeedPath
from vae.files import atomic_path, atomic_write_text
from vae.model import SmileVAE
from vae.preprocess import to_tensor
from vae.reconstruction import psnr, reconstruct


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run is started with (`python -m train`'s arguments), frozen: built once, passed down, never changed."""

    data: tuple[str, ...]  # CelebA-layout folders
    cache: str | None  # a built cache instead of data
    cache_dir: str
    align: str
    workers: int | None
    split: str
    split_by: str
    validation_fraction: float
    test_fraction: float
    out: str
    epochs: int
    batch_size: int  # per process
    lr: float
    beta: float  # weight of the KL term
    latent_dim: int
    seed: int
    max_steps: int | None
    max_minutes: float | None
    resume: bool
    device: str
    precision: str
    channels_last: str
    eval_images: int
    save_fp16: bool

    def to_dict(self) -> dict:
        """JSON values (the data folders as a list), as args.json and the checkpoint keep them."""
        return {**asdict(self), "data": list(self.data)}


def parse_args(argv: list[str] | None = None) -> TrainConfig:
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
    args = vars(p.parse_args(argv))
    return TrainConfig(**{**args, "data": tuple(args["data"])})


def get_cache(config: TrainConfig, rt: Runtime) -> FaceCache:
    """Rank 0 builds the cache (once, reused later); the other ranks wait and open it."""
    data = list(config.data)
    if rt.main:
        cache = open_cache(data, config.cache, config.cache_dir, config.align, config.workers)
    if rt.world > 1:
        dist.barrier()
    return cache if rt.main else open_cache(data, config.cache, config.cache_dir, config.align)


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


def run_split(config: TrainConfig, cache: FaceCache, out: Path) -> Split:
    """A new run makes the split (and rank 0 writes it); a resumed run reads its own back, whatever the flags say."""
    if config.resume:
        return Split.load(out)
    return make_split(cache, config.split, config.split_by, config.validation_fraction, config.test_fraction, config.seed)


@dataclass
class Run:
    """What one training run carries from step to step: its data, model and optimiser, and where it stands."""

    config: TrainConfig
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

    def state(self) -> dict:
        """What a checkpoint keeps of the run (train.checkpoint adds the random generators)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.skip,
            "global_step": self.global_step,
            "best": self.best,
            "path": (self.rt.path.precision, self.rt.path.channels_last),
            "latent_dim": self.model.latent_dim,
            "args": self.config.to_dict(),
            "images_seen": self.images_seen,
            "world": self.rt.world,
        }

    def restore(self, state: dict) -> None:
        """Take back where a checkpoint stood: weights, optimiser, random generators, position and best epoch."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        self.epoch, self.skip, self.global_step, self.best = (
            state["epoch"],
            state["step_in_epoch"],
            state["global_step"],
            state["best"],
        )
        # a checkpoint from before images_seen was stored: the batch size cannot have changed (check_resume)
        self.images_seen = state.get("images_seen", self.global_step * self.config.batch_size * self.rt.world)


@dataclass
class EpochStats:
    """Sums over the steps of one (possibly partial) epoch."""

    sums: torch.Tensor  # objective loss, mse, kl, each times the batch size
    t0: float
    step_in_epoch: int
    seen: int = 0  # images of this process
    stopped: bool = False


def setup(config: TrainConfig, rt: Runtime) -> Run:
    """Data, split, model and optimiser, restored from the checkpoint with --resume; writes the run's files."""
    out = Path(config.out)
    checkpoint_path = out / "checkpoint.pt"
    if config.resume and not checkpoint_path.exists():
        raise SystemExit(f"--resume: no checkpoint at {checkpoint_path}")
    state = load_checkpoint(checkpoint_path, rt.device) if config.resume else None
    if state:
        ignored = check_resume(config.to_dict(), state, rt.world, out)
        if ignored and rt.main:
            print(f"--resume reads the run's own split.json: {', '.join(ignored)} ignored.")
    torch.manual_seed(config.seed)
    cache = get_cache(config, rt)
    split = run_split(config, cache, out)
    rows = split.rows(cache)
    eval_count = None if config.eval_images <= 0 else config.eval_images
    scored = {part: sample_rows(getattr(rows, part), eval_count, config.seed) for part in ("train", "validation")}
    batches = Batches(cache.images, rows.train, config.batch_size, rt, config.seed)
    if len(batches) == 0:
        raise SystemExit(f"Only {len(rows.train)} training images: fewer than one batch of {config.batch_size} per process.")
    if len(rows.validation) == 0:
        raise SystemExit("The split has no validation images, so no epoch could be chosen: raise --validation-fraction.")

    if state:
        rt.path, speed_trial = SpeedPath(*state["path"]), {}  # the same numerics as before the stop
    else:
        first = batches.load(rows.train[: config.batch_size])
        speed_trial = choose_path(rt, config.precision, config.channels_last, config.latent_dim, first)
    model = SmileVAE(latent_dim=config.latent_dim).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler(enabled=rt.path.precision == "fp16")
    ddp = DistributedDataParallel(model) if rt.world > 1 else model
    run = Run(config, rt, out, split, batches, scored, batches.load(rows.validation[:8]), model, ddp, optimizer, scaler)
    if state:
        run.restore(state)
    if rt.main:
        write_run_files(run, cache, speed_trial)
    run.started = time.time()
    return run


def write_run_files(run: Run, cache: FaceCache, speed_trial: dict[str, float]) -> None:
    """A new run writes split.json and args.json; a resumed one keeps them and adds what changed to args.json."""
    config, rt, out = run.config, run.rt, run.out
    out.mkdir(parents=True, exist_ok=True)
    path = out / "args.json"
    if config.resume and path.exists():
        record = json.loads(path.read_text())
        changes = {k: getattr(config, k) for k in ("epochs", "max_steps", "max_minutes") if record.get(k) != getattr(config, k)}
        resumed = {"step": run.global_step, "device": str(rt.device), "changed": changes}
        record = {**record, **changes, "resumed": [*record.get("resumed", []), resumed]}
    else:
        if not config.resume:
            run.split.save(out)
        record = {
            **config.to_dict(),
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
    loss, mse, kl = vae_loss(recon, x, mean, logvar, run.config.beta)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.global_step += 1
    run.images_seen += len(x) * run.rt.world
    return loss, mse, kl


def train_epoch(run: Run, signalled: StopFlag) -> EpochStats:
    """The rest of the current epoch, or up to a stop (signal, --max-steps, --max-minutes), at a step boundary."""
    config, rt = run.config, run.rt
    bar = tqdm(
        run.batches.epoch(run.epoch, run.skip),
        total=len(run.batches),
        initial=run.skip,
        desc=f"epoch {run.epoch + 1}/{config.epochs}",
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
        minutes_up = config.max_minutes is not None and (time.time() - run.started) / 60 >= config.max_minutes
        steps_up = config.max_steps is not None and run.global_step >= config.max_steps
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
            save_model(copy.deepcopy(run.model), run.split, run.out / "model", run.config.save_fp16)
        record["best_epoch"] = run.best["epoch"]
        with open(run.out / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        save_grid(run.model, run.grid_x, run.out / f"grid_{run.epoch:04d}.png", run.rt, run.config.seed)
        tqdm.write(
            f"epoch {run.epoch}: validation PSNR {record['validation_psnr']:.2f} dB, loss {record['validation_loss']:.1f} "
            f"(best: epoch {run.best['epoch']}), {record['images_per_s']:.0f} img/s"
        )
    save_checkpoint(run.checkpoint_path, run.state())


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
        record.update(evaluate(run.model, run.batches, rows, rt, run.config.beta, part))
    return record


def finish(run: Run) -> None:
    """Make sure RUN/model exists (a run without a whole epoch keeps its last state) and say what was saved."""
    if run.rt.main:
        best, out = run.best, run.out
        if best is None:  # no whole epoch yet (a smoke run): the model is the last state
            save_model(copy.deepcopy(run.model), run.split, out / "model", run.config.save_fp16)
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
    config = parse_args(argv)
    rt = setup_runtime(config.device)
    run = setup(config, rt)
    with StopFlag() as signalled:
        stopped = False
        while run.epoch < config.epochs and not stopped:
            stats = train_epoch(run, signalled)
            stopped = stats.stopped
            end_epoch(run, stats)
    finish(run)
    return run.out
