"""The train / validation / test split: made once by training, stored next to the model as split.json.

Vectors, judge and evaluation read the split back from the model folder instead of re-deriving it
from their own flags, so a different `--seed`, `--split` or `--data` order can never fit a vector or
the judge on the faces the model is tested on. `split.json` names every image as `<data folder
name>/<file name>` and carries a fingerprint of the data (every key with its 40 labels): a split
applies only to the data it was made from, and any other data stop with a message that says why.

`python -m celeba.split --data DIR ... --out DIR` writes a split without training (e.g. for a model
trained before splits were stored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from celeba.reader import PARTITION_FILE, DatasetError, load_index, run_command
from vae.files import atomic_write_text

SPLIT_FILE = "split.json"
PARTS = ("train", "validation", "test")


class Labelled(Protocol):
    """What a split needs from the data: a CelebAIndex or a FaceCache."""

    keys: list[str]
    attrs: np.ndarray
    groups: list[str]
    identities: list[str]
    partition: np.ndarray


class SplitRows(NamedTuple):
    """Row numbers of each part in one particular data order."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


@dataclass
class Split:
    train: list[str]
    validation: list[str]
    test: list[str]
    fingerprint: str
    unit: str  # what was kept on one side: "person" (where known, else photo), "photo" or "official partition"

    def rows(self, data: Labelled) -> SplitRows:
        """Rows of `data` per part; stops with a clear message unless `data` are the data the split was made from."""
        found = data_fingerprint(data.keys, data.attrs)
        if found != self.fingerprint:
            raise SystemExit(
                f"The data do not match this model's split.json: {self._difference(data.keys)}. "
                "Give the same --data folders (or --cache) the model was trained on."
            )
        position = {key: i for i, key in enumerate(data.keys)}
        return SplitRows(*(np.array(sorted(position[k] for k in getattr(self, part)), dtype=np.int64) for part in PARTS))

    def _difference(self, keys: list[str]) -> str:
        mine, theirs = set(self.train + self.validation + self.test), set(keys)
        missing, extra = sorted(mine - theirs), sorted(theirs - mine)
        if not missing and not extra:
            return "the same images, but their labels (list_attr_celeba.txt) differ"
        return (
            f"{len(missing)} of its images are missing (e.g. {missing[:3]}), {len(extra)} images are not in it (e.g. {extra[:3]})"
        )

    def digest(self, part: str) -> str:
        """Hash of one part's keys: what a judge records so evaluation can check it was trained on this train part."""
        return hashlib.sha256("\n".join(sorted(getattr(self, part))).encode()).hexdigest()[:16]

    def counts(self) -> dict[str, int]:
        return {part: len(getattr(self, part)) for part in PARTS}

    def save(self, directory: str | Path) -> Path:
        """Write `directory/split.json` atomically (one key per line, so diffs stay readable)."""
        path = Path(directory) / SPLIT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"fingerprint": self.fingerprint, "unit": self.unit, **{part: getattr(self, part) for part in PARTS}}
        return atomic_write_text(path, json.dumps(body, indent=1) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> Split:
        path = Path(directory) / SPLIT_FILE
        if not path.exists():
            raise SystemExit(
                f"No {SPLIT_FILE} in {directory}: train with `python -m train` (it writes one next to the model) "
                f"or write one with `python -m celeba.split`."
            )
        body = json.loads(path.read_text())
        return cls(*(body[part] for part in PARTS), body["fingerprint"], body["unit"])


def sample_rows(rows: np.ndarray, count: int | None, seed: int) -> np.ndarray:
    """A seeded, sorted subset of `count` rows (all when count is None or larger): rows are in folder order,
    so a plain prefix would score only the first folder."""
    if count is None or count >= len(rows):
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, count, replace=False))


def data_fingerprint(keys: list[str], attrs: np.ndarray) -> str:
    """Hash of every image key with its labels, independent of the order the folders were given in."""
    digest = hashlib.sha256()
    for key, row in sorted(zip(keys, (" ".join(map(str, r)) for r in attrs.tolist()))):
        digest.update(f"{key} {row}\n".encode())
    return digest.hexdigest()[:16]


def split_units(groups: list[str], identities: list[str], by: str) -> list[str]:
    """The unit kept on one side per image: its photo group, or (`by="person"`) its person where any image of
    the photo group names one. Identity ids are CelebA's, shared by every CelebA folder."""
    if by == "photo":
        return list(groups)
    if by != "person":
        raise ValueError(f"split unit must be 'person' or 'photo', not {by!r}")
    person = {g: f"person {i}" for g, i in zip(groups, identities) if i}
    return [person.get(g, g) for g in groups]


def random_parts(units: list[str], validation_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Part per image (0 train, 1 validation, 2 test): a seeded shuffle of the distinct units.

    The first `validation_fraction + test_fraction` of the shuffled units are held out, and of those the
    first `test_fraction` are test. The held-out part is thus the same as a one-way split with
    test_fraction = validation + test, which is how the shipped model's old 80/20 split is kept.
    """
    unique = sorted(set(units))
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    n_test, n_held = round(len(unique) * test_fraction), round(len(unique) * (validation_fraction + test_fraction))
    part = {u: 2 for u in order[:n_test]} | {u: 1 for u in order[n_test:n_held]}
    return np.array([part.get(u, 0) for u in units], dtype=np.int8)


def make_split(
    data: Labelled,
    mode: str = "random",
    by: str = "person",
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Split:
    """`random`: seeded, by unit (see split_units). `official`: CelebA's list_eval_partition.txt (0/1/2)."""
    if mode == "official":
        if (data.partition < 0).any():
            raise DatasetError(
                f"--split official needs a {PARTITION_FILE} row for every image; {(data.partition < 0).sum()} have none."
            )
        parts, unit = data.partition, "official partition"
    elif mode == "random":
        units = split_units(data.groups, data.identities, by)
        parts, unit = random_parts(units, validation_fraction, test_fraction, seed), by
    else:
        raise ValueError(f"split mode must be 'random' or 'official', not {mode!r}")
    members = [sorted(k for k, p in zip(data.keys, parts) if p == i) for i in range(3)]
    return Split(*members, data_fingerprint(data.keys, data.attrs), unit)


def add_split_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("split")
    g.add_argument(
        "--split",
        choices=("random", "official"),
        default="random",
        help="seeded split by --split-by, or list_eval_partition.txt (0 train, 1 validation, 2 test)",
    )
    g.add_argument(
        "--split-by",
        choices=("person", "photo"),
        default="person",
        help="keep each person (where identity_CelebA.txt says who is who, else each photo) on one side",
    )
    g.add_argument("--validation-fraction", type=float, default=0.1)
    g.add_argument("--test-fraction", type=float, default=0.1)


def main(argv: list[str] | None = None) -> Split:
    p = argparse.ArgumentParser(
        prog="python -m celeba.split", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", action="append", default=[], metavar="DIR", required=True)
    p.add_argument("--out", required=True, help="folder that receives split.json (a model folder)")
    p.add_argument("--seed", type=int, default=0)
    add_split_args(p)
    args = p.parse_args(argv)
    split = make_split(load_index(args.data), args.split, args.split_by, args.validation_fraction, args.test_fraction, args.seed)
    path = split.save(args.out)
    print(f"Wrote {path}: {split.counts()} (kept together: {split.unit}, data fingerprint {split.fingerprint})")
    return split


if __name__ == "__main__":
    run_command(main)
