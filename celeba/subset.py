"""A small CelebA-layout folder to try training on: `python -m celeba.subset --data DIR --count 300 --out DIR`.

Picks `--count` images of `--data` (seeded), links them into `OUT/img_align_celeba/` (symlinks: no image
is copied) and writes the matching rows of every annotation file there is (`list_attr_celeba.txt` with
its header and count, `list_eval_partition.txt`, `identity_CelebA.txt`, `same_photo_in_celeba_folders.txt`).
OUT then trains like any data folder; its name becomes the first part of every image key in split.json.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from celeba.reader import ATTR_FILE, IDENTITY_FILE, IMAGE_DIR, PARTITION_FILE, SAME_PHOTO_FILE, read_folder, run_command


def make_subset(data: Path, out: Path, count: int, seed: int = 0) -> list[str]:
    """Write the subset folder; returns the picked file names (sorted)."""
    read_folder(data)  # stops with a message unless `data` is in the CelebA layout
    lines = (data / ATTR_FILE).read_text().splitlines()
    rows = {line.split()[0]: line for line in lines[2:] if line.strip()}
    if count > len(rows):
        raise SystemExit(f"--count {count}: {data} has only {len(rows)} images.")
    if (out / IMAGE_DIR).exists() and any((out / IMAGE_DIR).iterdir()):
        raise SystemExit(f"{out / IMAGE_DIR} is not empty: choose a new --out.")
    names = sorted(np.random.default_rng(seed).choice(sorted(rows), count, replace=False).tolist())
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    for name in names:
        os.symlink((data / IMAGE_DIR / name).resolve(), out / IMAGE_DIR / name)
    (out / ATTR_FILE).write_text(f"{len(names)}\n{lines[1]}\n" + "".join(rows[n] + "\n" for n in names))
    picked = set(names)
    for table in (PARTITION_FILE, IDENTITY_FILE, SAME_PHOTO_FILE):
        if (data / table).exists():
            kept = [line for line in (data / table).read_text().splitlines() if line.split()[:1] and line.split()[0] in picked]
            (out / table).write_text("".join(line + "\n" for line in kept))
    return names


def main(argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(
        prog="python -m celeba.subset", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, required=True, help="a CelebA-layout folder")
    p.add_argument("--out", type=Path, required=True, help="the new folder (e.g. runs/data/celeba-300)")
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    names = make_subset(args.data, args.out, args.count, args.seed)
    print(f"Wrote {args.out}: {len(names)} images of {args.data} (symlinks) with their annotation rows")
    return names


if __name__ == "__main__":
    run_command(main)
