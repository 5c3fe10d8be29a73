"""What a public server needs around the editor: read only what the client uploaded, write each result once.

- `read_upload` accepts a path only inside the server's upload folder, only a regular file, and only
  up to MAX_UPLOAD_BYTES, all checked on the open file before a byte is read: a request that names
  /etc/shadow, a named pipe or /dev/zero gets the same clear refusal and costs nothing.
- `ResultFiles` writes every result under a fresh name, atomically. Handing a web framework an
  image object instead lets it save the file under a name derived from the content, and a second
  request with the same content rewrites that file while the first client is still downloading it.
- `PreparedCache` keeps recently encoded photos by content, so a script that calls again with a new
  strength only decodes.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import threading
import uuid
from collections import OrderedDict, deque
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .editor import Prepared
from .export import atomic_save, save_gif
from .preprocess import ImageError

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # a 40-megapixel JPEG is ~15 MB


def read_upload(path: object, upload_root: str | os.PathLike, max_bytes: int = MAX_UPLOAD_BYTES) -> bytes:
    """The bytes of a file that the client uploaded into `upload_root`; ImageError for anything else."""
    if not isinstance(path, str) or not path:
        raise ImageError("Upload a photo of a face first.")
    root = os.path.realpath(upload_root)
    real = os.path.realpath(path)
    if os.path.commonpath([real, root]) != root or real == root or os.path.islink(path):
        raise ImageError("Only files uploaded to this app can be edited: upload the photo again.")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        raise ImageError("The uploaded file is no longer available: upload the photo again.") from err
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (os.stat(real).st_dev, os.stat(real).st_ino):  # swapped after the check
            raise ImageError("Only files uploaded to this app can be edited: upload the photo again.")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError("The upload is not a regular file.")
        if info.st_size > max_bytes:
            raise ImageError(f"The file is too large ({info.st_size / 2**20:.1f} MB); the limit is {max_bytes // 2**20} MB.")
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ImageError(f"The file is too large; the limit is {max_bytes // 2**20} MB.")
    return data


class ResultFiles:
    """Result images under unique names in `folder`; the oldest are removed beyond `keep` files."""

    def __init__(self, folder: str | os.PathLike, keep: int = 512) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._written: deque[Path] = deque()
        self._lock = threading.Lock()

    def _new_dir(self) -> Path:
        directory = self.folder / uuid.uuid4().hex
        directory.mkdir()
        with self._lock:
            self._written.append(directory)
            while len(self._written) > self.keep:
                shutil.rmtree(self._written.popleft(), ignore_errors=True)
        return directory

    def image(self, pixels: np.ndarray | Image.Image, name: str) -> str:
        """Write a PNG (lossless: the unedited pixels stay exactly the photo's) and return its path."""
        image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
        return str(atomic_save(image, self._new_dir() / f"{name}.png", compress_level=1))

    def gif(self, frames: list[Image.Image], name: str) -> str:
        return str(save_gif(frames, self._new_dir() / f"{name}.gif"))


class PreparedCache:
    """Recently prepared photos by content key, bounded in count and in bytes of photo kept.

    Sessions keep only the key: a browser session's state is then a short string, and the memory
    that photos take is bounded for the whole server, however many sessions there are.
    """

    def __init__(self, prepare: Callable[[bytes, bool], Prepared], size: int = 64, max_bytes: int = 1 << 30) -> None:
        self.prepare, self.size, self.max_bytes = prepare, size, max_bytes
        self.items: OrderedDict[str, Prepared] = OrderedDict()
        self.lock = threading.Lock()

    @staticmethod
    def key(data: bytes, align: bool) -> str:
        return f"{hashlib.sha256(data).hexdigest()}:{int(align)}"

    def get(self, data: bytes, align: bool) -> tuple[str, Prepared, bool]:
        """(key, prepared, whether it was already prepared) for these bytes and alignment setting."""
        key = self.key(data, align)
        found = self.find(key)
        if found is not None:
            return key, found, True
        prepared = self.prepare(data, align)
        with self.lock:
            self.items[key] = prepared
            while len(self.items) > self.size or (len(self.items) > 1 and self._bytes() > self.max_bytes):
                self.items.popitem(last=False)
        return key, prepared, False

    def find(self, key: str | None) -> Prepared | None:
        """The prepared photo under `key`, or None when it was never prepared or has been evicted."""
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def _bytes(self) -> int:
        return sum(item.photo.nbytes for item in self.items.values())
