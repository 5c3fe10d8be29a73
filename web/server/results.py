"""Result files under fresh names, written once, each kept for a documented lifetime.

Handing Gradio an image object lets it save the file under a name derived from the content, and a
second request with the same content rewrote that file while the first client was still downloading
it. So every result is written here, atomically, under a new name, and returned as a path.

A result stays fetchable for `lifetime_s` whatever other clients do: files go by age, never because
others asked for more. The disk is bounded all the same: while the results younger than their lifetime
hold `max_bytes`, new requests are refused with a message (ResultsFull) instead of deleting live files,
and one client address may hold at most `max_bytes_each` of them, so a single visitor editing as fast
as the queue lets them cannot fill the budget and lock everyone else out.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from vae.files import atomic_save
from vae.strip import save_gif

RESULT_LIFETIME_S = 600  # docs/api.md, "What the server accepts"
ENCODERS = 2  # PNG files written at once
RESULTS_MAX_BYTES = 4 * 2**30
RESULTS_MAX_BYTES_EACH = RESULTS_MAX_BYTES // 8  # one address's share: ~40 edits of a 2048-px photo


class ResultsFull(ValueError):
    """The results younger than their lifetime fill the disk budget; the message is for the visitor."""


class ResultFiles:
    """Result images under unique names in `folder`, removed `lifetime_s` after they were written."""

    def __init__(
        self,
        folder: str | os.PathLike,
        lifetime_s: float = RESULT_LIFETIME_S,
        max_bytes: int = RESULTS_MAX_BYTES,
        max_bytes_each: int = RESULTS_MAX_BYTES_EACH,
        clock=time.monotonic,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lifetime_s, self.max_bytes, self.max_bytes_each, self.clock = lifetime_s, max_bytes, max_bytes_each, clock
        self._written: deque[tuple[float, Path, int, str]] = deque()  # (written at, folder, bytes, owner), oldest first
        self._bytes = 0
        self._held: dict[str, int] = {}  # owner -> bytes of its live results
        self._lock = threading.Lock()
        self._encoders = ThreadPoolExecutor(max_workers=ENCODERS, thread_name_prefix="png")

    def _expire(self) -> None:
        """Remove the results older than their lifetime (called under the lock)."""
        now = self.clock()
        while self._written and now - self._written[0][0] >= self.lifetime_s:
            _, directory, size, owner = self._written.popleft()
            self._bytes -= size
            self._held[owner] -= size
            if not self._held[owner]:
                del self._held[owner]
            shutil.rmtree(directory, ignore_errors=True)

    def _write(self, name: str, save, owner: str) -> str:
        with self._lock:
            self._expire()
            minutes = max(1, round(self.lifetime_s / 60))
            if self._bytes >= self.max_bytes:
                raise ResultsFull(
                    f"The server holds as many results as it can keep for {minutes} minutes: try again in a minute."
                )
            if self._held.get(owner, 0) >= self.max_bytes_each:
                raise ResultsFull(
                    f"You hold as many results as one visitor may keep for {minutes} minutes: try again in a minute."
                )
        directory = self.folder / uuid.uuid4().hex
        directory.mkdir()
        path = save(directory / name)
        size = os.path.getsize(path)
        with self._lock:
            self._written.append((self.clock(), directory, size, owner))
            self._bytes += size
            self._held[owner] = self._held.get(owner, 0) + size
        return str(path)

    def image(self, pixels: np.ndarray | Image.Image, name: str, owner: str = "") -> str:
        """Write a PNG (lossless: the unedited pixels stay exactly the photo's) for the client address
        `owner` and return its path."""
        image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
        return self._write(f"{name}.png", lambda path: atomic_save(image, path, compress_level=1), owner)

    def images(self, named: Sequence[tuple[np.ndarray | Image.Image, str]], owner: str = "") -> list[str]:
        """`image` for each (pixels, name), encoded side by side: Pillow's PNG encoder releases the GIL, so two
        full-size photos take the time of one on two cores."""
        return list(self._encoders.map(lambda item: self.image(*item, owner), named))

    def gif(self, frames: list[Image.Image], name: str, owner: str = "") -> str:
        return self._write(f"{name}.gif", lambda path: save_gif(frames, path), owner)

    @property
    def bytes_held(self) -> int:
        return self._bytes
