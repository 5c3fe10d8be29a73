"""A training run's checkpoint: written atomically, loaded without running pickled code, and checked on --resume.

What goes in is the run's own business (`train.train.Run.state`); this module adds every random generator's
state, so a resumed run draws what the uninterrupted one would have, and refuses a resume that would not
continue the same run.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from vae.files import atomic_path

# Settings a resumed run may change: how long it goes on, and where and how fast it runs. Every other one
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
SPLIT_SETTINGS = {"split", "split_by", "validation_fraction", "test_fraction"}  # a resumed run reads its own split back


def rng_state() -> dict:
    """Every generator's state in types a weights_only load accepts (numpy's keys as a tensor)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "cached": cached}
    state = {"torch": torch.get_rng_state(), "numpy": numpy, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Every generator as `rng_state` saved it; a checkpoint loaded onto a GPU brings the states back to the CPU first."""
    torch.set_rng_state(state["torch"].cpu())
    numpy = state["numpy"]
    np.random.set_state(
        (numpy["kind"], numpy["keys"].cpu().numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["cached"])
    )
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path: Path, state: dict) -> None:
    """`state` plus the generators' states, written to a temporary file and renamed: a crash mid-write never
    corrupts the last checkpoint."""
    with atomic_path(path) as tmp:
        torch.save({**state, "rng": rng_state()}, tmp)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    """weights_only: a checkpoint holds tensors and plain values, so loading one runs no pickled code."""
    return torch.load(path, map_location=device, weights_only=True)


def check_resume(settings: dict, state: dict, world: int, run_folder: Path) -> list[str]:
    """Stop, naming every setting that differs and the data if missing, unless these `settings` (the command's, as
    JSON values) continue the run of `state`. Returns the split settings that are ignored (the run reads its own)."""
    before = state["args"]
    changed = [
        name
        for name, value in settings.items()
        if name not in MAY_CHANGE_ON_RESUME | SPLIT_SETTINGS and name in before and before[name] != value
    ]
    problems = []
    if changed:
        listed = ", ".join(f"--{n.replace('_', '-')} {before[n]} (now {settings[n]})" for n in changed)
        problems.append(
            f"it was started with {listed}: give the run's own values (see {run_folder / 'args.json'}); "
            "only --epochs, --max-steps, --max-minutes and the device settings may change"
        )
    if not settings["data"] and not settings["cache"]:
        problems.append(
            "it needs the data the run was trained on: the same --data folders (or --cache) as the first run, "
            f"which had --data {' --data '.join(before.get('data') or []) or '(none)'}"
            + (f" --cache {before['cache']}" if before.get("cache") else "")
        )
    if state.get("world", world) != world:
        problems.append(f"the run used {state['world']} processes, this command {world}, so the batches would differ")
    if problems:
        raise SystemExit("--resume would not continue the same run: " + "; ".join(problems) + ".")
    return [f"--{n.replace('_', '-')}" for n in sorted(SPLIT_SETTINGS) if n in before and before[n] != settings[n]]
