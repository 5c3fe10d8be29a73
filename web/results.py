"""Result files under fresh names, written once.

Handing Gradio an image object lets it save the file under a name derived from the content, and a
second request with the same content rewrote that file while the first client was still downloading
it. So every result is written here, atomically, under a new name, and returned as a path.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections import deque
from pathlib import Path

import numpy as np
from PIL import Image

from vae.files import atomic_save, save_gif


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
