"""Read CelebA in its official layout, from one or several folders.

A folder holds `img_align_celeba/*.jpg`, `list_attr_celeba.txt` (count, 40 names, rows of +-1) and
optionally `list_eval_partition.txt` and `identity_CelebA.txt` (`<name> <person id>`, who is who). A
folder may also hold `same_photo_in_celeba_folders.txt` (`<name> <other name> <other folder>`): such
pairs are the same photo. Both kinds of grouping feed the split (celeba/split.py), so that one photo,
or one person where known, never sits on both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
SAME_PHOTO_FILE = "same_photo_in_celeba_folders.txt"
IDENTITY_FILE = "identity_CelebA.txt"


class DatasetError(RuntimeError):
    """The data on disk does not match the official CelebA layout; the message says what to fix."""


def run_command(main: Callable[[], object]) -> None:
    """Run a command-line entry point: a DatasetError ends it with its one-line message (exit 1), not a traceback."""
    try:
        main()
    except DatasetError as err:
        raise SystemExit(f"error: {err}") from None


@dataclass
class CelebAIndex:
    """Every image of the given folders with its labels; rows line up across all arrays."""

    paths: list[Path]
    keys: list[str]  # "<folder name>/<file name>", unique across folders
    attr_names: list[str]
    attrs: np.ndarray  # (N, 40) int8 in {-1, 1}
    groups: list[str]  # images with the same group are the same photo
    partition: np.ndarray  # (N,) int8: 0 train, 1 val, 2 test, -1 unknown
    identities: list[str]  # the person's CelebA identity id, "" where the folder does not say

    def __len__(self) -> int:
        return len(self.paths)

    def attribute(self, name: str) -> np.ndarray:
        """Boolean column for one attribute, e.g. `index.attribute("Smiling")`."""
        return self.attrs[:, attribute_column(self.attr_names, name)] > 0


def attribute_column(attr_names: list[str], name: str) -> int:
    if name not in attr_names:
        raise KeyError(f"Unknown attribute {name!r}; known: {', '.join(attr_names)}")
    return attr_names.index(name)


def read_attributes(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Parse list_attr_celeba.txt: line 1 the count, line 2 the names, then `<file> v1 ... v40`."""
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise DatasetError(f"{path} is too short: expected a count line and a names line.")
    try:
        count = int(lines[0].strip())
    except ValueError as err:
        raise DatasetError(f"{path}: the first line should be the number of rows, not {lines[0]!r}.") from err
    names = lines[1].split()
    rows: dict[str, np.ndarray] = {}
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise DatasetError(f"{path}:{number}: expected a file name and {len(names)} values, got {len(parts)} fields.")
        values = np.array(parts[1:], dtype=np.int8)
        if not np.isin(values, (-1, 1)).all():
            raise DatasetError(f"{path}:{number}: attribute values must be -1 or 1.")
        rows[parts[0]] = values
    if count != len(rows):
        raise DatasetError(f"{path} says it has {count} rows but lists {len(rows)}.")
    return names, rows


def read_name_table(path: Path) -> dict[str, str]:
    """`<file name> <value>` lines (the partition and identity files); {} when the file is absent."""
    if not path.exists():
        return {}
    return dict(line.split()[:2] for line in path.read_text().splitlines() if line.strip())


def read_folder(root: Path) -> tuple[list[str], dict[str, np.ndarray], dict[str, str], dict[str, str]]:
    """Names, rows, partition and identities of one folder, checked against the images that really exist."""
    image_dir, attr_file = root / IMAGE_DIR, root / ATTR_FILE
    missing = [str(p) for p in (image_dir, attr_file) if not p.exists()]
    if missing:
        raise DatasetError(
            f"{root} is not in the CelebA layout: missing {', '.join(missing)}. Put the aligned JPEGs in "
            f"{image_dir}/ and the attribute file at {attr_file} (see README: Training on CelebA)."
        )
    names, rows = read_attributes(attr_file)
    images = {p.name for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    _report_mismatch(root, sorted(set(rows) - images), f"rows in {ATTR_FILE} without an image")
    _report_mismatch(root, sorted(images - set(rows)), f"images without a row in {ATTR_FILE}")
    return names, rows, read_name_table(root / PARTITION_FILE), read_name_table(root / IDENTITY_FILE)


def _report_mismatch(root: Path, names: list[str], what: str) -> None:
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise DatasetError(f"{root}: {len(names)} {what}: {shown}.")


def load_index(roots: list[str | Path]) -> CelebAIndex:
    """Read every folder in `roots` into one index; all must share the same 40 attribute names."""
    if not roots:
        raise DatasetError("No data folder given: pass --data PATH (a folder in the CelebA layout).")
    paths, keys, attrs, groups, partition, identities = [], [], [], [], [], []
    attr_names: list[str] | None = None
    folders = {Path(r).resolve().name for r in roots}
    for root in map(Path, roots):
        names, rows, part, identity = read_folder(root)
        if attr_names is not None and names != attr_names:
            raise DatasetError(f"{root} uses different attribute names from the first folder.")
        attr_names = names
        same_photo = _read_same_photo(root, folders)
        for name in sorted(rows):
            key = f"{root.resolve().name}/{name}"
            paths.append(root / IMAGE_DIR / name)
            keys.append(key)
            attrs.append(rows[name])
            groups.append(same_photo.get(name, key))
            partition.append(int(part.get(name, -1)))
            identities.append(identity.get(name, ""))
    if len(set(keys)) != len(keys):
        raise DatasetError("Two data folders have the same folder name; rename one so images stay distinct.")
    return CelebAIndex(paths, keys, attr_names or [], np.stack(attrs), groups, np.array(partition, dtype=np.int8), identities)


def _read_same_photo(root: Path, loaded_folders: set[str]) -> dict[str, str]:
    """Map this folder's file names to the key of the same photo in another loaded folder."""
    path = root / SAME_PHOTO_FILE
    if not path.exists():
        return {}
    pairs = (line.split() for line in path.read_text().splitlines() if line.strip())
    return {name: f"{folder}/{other}" for name, other, folder in pairs if folder in loaded_folders}
