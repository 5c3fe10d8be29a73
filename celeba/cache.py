"""Decode, align, crop and resize every image once into a memory-mapped uint8 array.

Epochs then read ready 128x128 pixels and never wait on JPEG decoding. A cache is keyed by a
fingerprint of its sources (image names and sizes, and the contents of the attribute, partition,
identity and same-photo files) and settings, so the next run with the same data reuses it; any
change, a single flipped label included, builds a new one. A cache folder is self-contained: `--cache DIR` trains
from it on a machine that has no copy of the source images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from celeba.reader import CelebAIndex, load_index
from vae.align import FRAME_SIZE, FaceAligner
from vae.image_file import load_image
from vae.preprocess import CROP_FRACTION, IMAGE_SIZE, crop_and_resize

CACHE_VERSION = 2  # 2: meta.json carries the identities the split needs
ALIGN_MODES = ("auto", "always", "never")


@dataclass
class FaceCache:
    """Preprocessed images (N, size, size, 3) uint8 plus the labels and grouping needed to split."""

    path: Path
    images: np.ndarray
    attrs: np.ndarray
    attr_names: list[str]
    keys: list[str]
    groups: list[str]
    partition: np.ndarray
    identities: list[str]
    info: dict

    def __len__(self) -> int:
        return len(self.keys)


def fingerprint(index: CelebAIndex, size: int, fraction: float, align: str) -> str:
    """Hash of the settings, every image's name and size, and everything the cache copies from the annotation
    files (the attribute, partition and identity rows and the same-photo groups): a flipped label is other data."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, size, fraction, align, index.attr_names]).encode())
    for path, key in zip(index.paths, index.keys):
        digest.update(f"{key}:{path.stat().st_size}\n".encode())
    digest.update(np.ascontiguousarray(index.attrs, dtype=np.int8).tobytes())
    digest.update(np.ascontiguousarray(index.partition, dtype=np.int8).tobytes())
    digest.update(json.dumps([index.identities, index.groups]).encode())
    return digest.hexdigest()[:16]


def needs_alignment(width: int, height: int, align: str) -> bool:
    """`auto` aligns images whose shape is not CelebA's 178x218 aligned framing (e.g. CelebA-HQ squares)."""
    if align == "always":
        return True
    if align == "never":
        return False
    return abs(width / height - FRAME_SIZE[0] / FRAME_SIZE[1]) > 0.02


_aligner: FaceAligner | None = None


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _process(job: tuple[str, int, float, str]) -> tuple[np.ndarray, int]:
    """One image -> (pixels, status): status 0 as is, 1 aligned, 2 alignment found no face."""
    global _aligner
    path, size, fraction, align = job
    image = load_image(path)
    status = 0
    if needs_alignment(image.width, image.height, align):
        _aligner = _aligner or FaceAligner()
        aligned = _aligner.align(image)
        image, status = (aligned.frame, 1) if aligned.found else (image, 2)
    return crop_and_resize(image, size, fraction), status


def _write_cache(index: CelebAIndex, tmp: Path, size: int, fraction: float, align: str, workers: int | None) -> None:
    """Decode every image of `index` into `tmp` (images.npy, attrs.npy, meta.json)."""
    images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(len(index), size, size, 3))
    jobs = [(str(p), size, fraction, align) for p in index.paths]
    statuses = np.zeros(len(index), dtype=np.int8)
    workers = workers or os.cpu_count() or 1
    with get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        results = pool.imap(_process, jobs, chunksize=16)
        for i, (pixels, status) in enumerate(tqdm(results, total=len(jobs), desc="Building image cache", unit="img")):
            images[i] = pixels
            statuses[i] = status
    images.flush()
    del images
    np.save(tmp / "attrs.npy", index.attrs)
    info = {
        "version": CACHE_VERSION,
        "size": size,
        "crop_fraction": fraction,
        "align": align,
        "aligned": int((statuses == 1).sum()),
        "no_face": [index.keys[i] for i in np.flatnonzero(statuses == 2)],
    }
    meta = {
        "info": info,
        "attr_names": index.attr_names,
        "keys": index.keys,
        "groups": index.groups,
        "partition": index.partition.tolist(),
        "identities": index.identities,
    }
    (tmp / "meta.json").write_text(json.dumps(meta))


def build_cache(
    index: CelebAIndex,
    cache_root: str | Path,
    size: int = IMAGE_SIZE,
    fraction: float = CROP_FRACTION,
    align: str = "auto",
    workers: int | None = None,
) -> FaceCache:
    """Return the cache for `index`, building it (with a progress bar) only if it does not exist yet."""
    if align not in ALIGN_MODES:
        raise ValueError(f"align must be one of {ALIGN_MODES}, not {align!r}")
    target = Path(cache_root) / fingerprint(index, size, fraction, align)
    if (target / "meta.json").exists():
        return load_cache(target)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_cache(index, tmp, size, fraction, align, workers)
    except BaseException:  # a failed or interrupted build leaves no full-size temporary array behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, target)  # a whole cache appears at once, or not at all
    except OSError:  # another process finished the same cache first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return load_cache(target)


def load_cache(path: str | Path) -> FaceCache:
    """Open a built cache folder; the images stay on disk, memory-mapped."""
    path = Path(path)
    if not (path / "meta.json").exists():
        raise FileNotFoundError(f"{path} is not an image cache (no meta.json); build one with `python -m train --data ...`.")
    meta = json.loads((path / "meta.json").read_text())
    if meta["info"].get("version") != CACHE_VERSION:
        raise SystemExit(f"{path} was built by an older version of the cache; build it again with `python -m train --data ...`.")
    return FaceCache(
        path=path,
        images=np.load(path / "images.npy", mmap_mode="r"),
        attrs=np.load(path / "attrs.npy"),
        attr_names=meta["attr_names"],
        keys=meta["keys"],
        groups=meta["groups"],
        partition=np.array(meta["partition"], dtype=np.int8),
        identities=meta["identities"],
        info=meta["info"],
    )


def open_cache(
    data: list[str], cache: str | None, cache_dir: str | Path, align: str = "auto", workers: int | None = None
) -> FaceCache:
    """The cache for `--data` folders (built on first use) or an explicit `--cache` folder."""
    if cache:
        return load_cache(cache)
    if not data:
        raise SystemExit("Give the data: --data DIR (CelebA layout, repeatable) or --cache DIR.")
    return build_cache(load_index(data), cache_dir, align=align, workers=workers)


def add_data_args(p: argparse.ArgumentParser) -> None:
    """`--data` / `--cache` and the cache settings, shared by every step that reads faces."""
    g = p.add_argument_group("data")
    g.add_argument("--data", action="append", default=[], metavar="DIR", help="CelebA-layout folder; repeat for several")
    g.add_argument("--cache", metavar="DIR", help="an already built cache folder instead of --data")
    g.add_argument("--cache-dir", default="runs/cache", help="where caches are built and reused (default: %(default)s)")
    g.add_argument("--align", choices=ALIGN_MODES, default="auto", help="align faces with MTCNN: auto = only non-CelebA framings")
    g.add_argument("--workers", type=int, default=None, help="processes for building the cache (default: all cores)")
