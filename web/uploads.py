"""The upload folder, bounded: files that are not images, or whose header is over the pixel limit, are
removed at once; the rest are bounded in bytes and in files, for each address and in all.

Gradio stores every upload (up to the per-file limit) and keeps it for its cache lifetime, so ten 25 MB
uploads of random bytes sat on disk for 30 minutes. `UploadStore.add` is called with the paths that
Gradio's upload route has just stored (see `track_uploads`): a file whose bytes are not one of the
accepted formats is deleted and remembered with the message its edit would have given; beyond
`max_bytes` or `max_files` of uploads the oldest of the address that holds the most of them is deleted,
and beyond `per_address_files` the address's own oldest (a photo, once prepared, stays in the photo
cache), so a client that floods the folder pushes out its own files, not a visitor's whose edit is
still waiting in the queue. Each kept upload's pixel count is remembered: the queue's shares count work
in megapixels (web/fair_queue.py).

The check reads a file's header (vae.preprocess.check_file bounds its metadata first) in a worker
thread, a few at a time, never on the event loop: a crafted GIF comment once held every other request
for 25 s. A request whose files are not all checked within CHECK_SECONDS has the rest refused.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import NamedTuple

import anyio
from PIL import UnidentifiedImageError
from starlette.requests import Request

from vae.preprocess import FORMAT_NAMES, ImageError, check_file

from .fair_queue import client_address, trusted_proxies

UPLOADS_MAX_BYTES = 200 * 2**20  # README, "What the server accepts"
UPLOADS_MAX_FILES = 2000
UPLOADS_PER_ADDRESS_FILES = 200
CHECK_SECONDS = 10.0  # one upload request's header checks, all its files together
CHECKS_AT_ONCE = 2  # worker threads checking headers at once: the rest wait their turn, off the event loop
REMEMBERED = 4096  # refused uploads whose message is kept
TOO_SLOW = "The upload took too long to check: send a smaller photo, or fewer files at once."

log = logging.getLogger(__name__)


class Kept(NamedTuple):
    size: int  # bytes
    address: str
    pixels: int  # from the header


def inspect(path: str) -> tuple[str | None, int]:
    """(why the file at `path` cannot be a photo, or None; its pixel count), from its header only."""
    try:
        if os.path.getsize(path) == 0:
            return "The file is empty.", 0
        _, (width, height) = check_file(path)
        return None, width * height
    except ImageError as err:
        return str(err), 0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return f"The upload is not an image we can read: the accepted formats are {FORMAT_NAMES}.", 0
    except Exception:  # whatever else a crafted header raises: refused, never a 500 that leaves files behind
        log.exception("upload header check failed: %s", path)
        return f"The upload is not an image we can read: the accepted formats are {FORMAT_NAMES}.", 0


class UploadStore:
    """The uploads Gradio stored for clients, in arrival order, bounded in bytes and files, in all and per address."""

    def __init__(
        self,
        max_bytes: int = UPLOADS_MAX_BYTES,
        max_files: int = UPLOADS_MAX_FILES,
        per_address_files: int = UPLOADS_PER_ADDRESS_FILES,
    ) -> None:
        self.max_bytes, self.max_files, self.per_address_files = max_bytes, max_files, per_address_files
        self.kept: OrderedDict[str, Kept] = OrderedDict()  # oldest first
        self.kept_bytes = 0
        self.refused: OrderedDict[str, str] = OrderedDict()  # path -> the message for its edit
        self._abandoned: set[str] = set()  # refused while their check still ran (past the deadline)
        self._lock = threading.Lock()

    def add(self, paths: list[str], address: str = "unknown", deadline: float = float("inf")) -> None:
        """Check and keep (or delete) each of `paths`; those not reached by `deadline` (time.monotonic) are refused."""
        for path in paths:
            reason, pixels = inspect(path) if time.monotonic() < deadline else (TOO_SLOW, 0)
            with self._lock:
                if path in self._abandoned:  # refused meanwhile: its check ran past the deadline
                    self._abandoned.discard(path)
                    reason = reason or TOO_SLOW
                if reason is not None:
                    self._refuse(path, reason)
                    continue
                self.refused.pop(path, None)
                self._forget(path)  # Gradio names an upload by its content: the same file again
                self.kept[path] = Kept(os.path.getsize(path), address, pixels)
                self.kept_bytes += self.kept[path].size
                self._bound(spare=path)

    def refuse(self, paths: list[str], reason: str) -> None:
        """Delete `paths` and answer their edits with `reason` (a check that did not finish in time)."""
        with self._lock:
            for path in paths:
                if path not in self.kept:
                    self._abandoned.add(path)
                    self._refuse(path, reason)

    def _refuse(self, path: str, reason: str) -> None:
        _remove(path)
        self.refused[path] = reason
        self.refused.move_to_end(path)
        while len(self.refused) > REMEMBERED:
            self.refused.popitem(last=False)

    def _bound(self, spare: str) -> None:
        """Delete the oldest uploads, other than `spare`, while a bound is passed: the address's own first."""
        mine = [path for path, kept in self.kept.items() if kept.address == self.kept[spare].address]
        for path in mine[: max(0, len(mine) - self.per_address_files)]:
            _remove(self._forget(path))
        while len(self.kept) > 1 and self.kept_bytes > self.max_bytes:
            _remove(self._forget(self._oldest_of_the_heaviest(spare, lambda kept: kept.size)))
        while len(self.kept) > max(1, self.max_files):
            _remove(self._forget(self._oldest_of_the_heaviest(spare, lambda kept: 1)))

    def _oldest_of_the_heaviest(self, spare: str, weight) -> str:
        """The oldest upload, other than `spare`, of the address holding the most `weight` (bytes, or files)."""
        held: dict[str, int] = {}
        for kept in self.kept.values():
            held[kept.address] = held.get(kept.address, 0) + weight(kept)
        # max keeps the first of equals, and `kept` runs oldest first: the heaviest address's oldest file
        return max((path for path in self.kept if path != spare), key=lambda path: held[self.kept[path].address])

    def _forget(self, path: str) -> str:
        kept = self.kept.pop(path, None)
        self.kept_bytes -= kept.size if kept else 0
        return path

    def why_refused(self, path: str) -> str | None:
        with self._lock:
            return self.refused.get(path)

    def pixels(self, path: str) -> int | None:
        """The pixel count of a kept upload's header, or None when it is not (or no longer) kept."""
        with self._lock:
            kept = self.kept.get(path)
            return kept.pixels if kept else None

    def files(self, address: str | None = None) -> int:
        """How many uploads are kept, in all or from `address`."""
        with self._lock:
            return sum(address is None or kept.address == address for kept in self.kept.values())


def _remove(path: str) -> None:
    try:
        os.remove(path)
        os.rmdir(os.path.dirname(path))  # Gradio gives each upload a folder of its own; it may hold others
    except OSError:
        pass


def track_uploads(store: UploadStore):
    """ASGI middleware: Gradio's upload route answers only after `store` has checked what it stored.

    The checks run in worker threads (CHECKS_AT_ONCE at a time); the event loop only waits for them.
    """
    limiter = anyio.CapacityLimiter(CHECKS_AT_ONCE)

    def middleware(app):
        async def tracked(scope, receive, send):
            if scope["type"] != "http" or not scope["path"].endswith("/upload"):
                return await app(scope, receive, send)
            held: list[dict] = []

            async def holding_send(message):
                held.append(message)
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    if held[0]["status"] == 200:
                        address = client_address(Request(scope), trusted_proxies())
                        await _check(store, b"".join(m.get("body", b"") for m in held[1:]), address, limiter)
                    for each in held:
                        await send(each)

            await app(scope, receive, holding_send)

        return tracked

    return middleware


async def _check(store: UploadStore, body: bytes, address: str, limiter: anyio.CapacityLimiter) -> None:
    """Check the files an upload answer names, off the event loop; those unchecked after CHECK_SECONDS are refused."""
    try:
        paths = [p for p in json.loads(body) if isinstance(p, str)]
    except (ValueError, TypeError):
        log.warning("unexpected upload answer: %.80r", body)
        return
    deadline = time.monotonic() + CHECK_SECONDS
    with anyio.move_on_after(CHECK_SECONDS + 0.5) as scope:  # the thread itself stops at the deadline, file by file
        await anyio.to_thread.run_sync(store.add, paths, address, deadline, limiter=limiter, abandon_on_cancel=True)
    if scope.cancelled_caught:
        store.refuse(paths, TOO_SLOW)
