"""Write files so that a reader never sees half of one: results, images, JSON and arrays.

`atomic_path` is the one way the project writes a file: into a temporary file beside the target,
moved onto it with `os.replace` only when the write finished (readable by others, mode 0644).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so writers pick the format); moved onto `path` on success."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_files(folder: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """A temporary folder inside `folder`; on success each file written there replaces its namesake in
    `folder` by one rename, so a reader sees the old file or the new one, never a partial one."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".tmp-save-") as tmp:
        yield Path(tmp)
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), mode)  # safetensors writes 0600; a model folder is for everyone to read
            os.replace(os.path.join(tmp, name), target / name)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_save(image: Image.Image, path: str | os.PathLike, **kwargs) -> Path:
    """Save an image atomically (`kwargs` go to PIL's save)."""
    with atomic_path(path) as tmp:
        image.save(tmp, **kwargs)
    return Path(path)
