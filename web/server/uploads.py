"""The upload folder, bounded: files that are not photos we can decode within the sandbox's bounds are
removed at once; the rest are bounded in bytes and in files, for each address and in all.

Gradio stores every upload (up to the per-file limit) and keeps it for its cache lifetime, so ten 25 MB
uploads of random bytes sat on disk for 30 minutes. `UploadStore.add` is called with the paths that
Gradio's upload route has just stored (see `track_uploads`): each is inspected (by the server's
sandbox, web/server/sandbox.py: its metadata bounded, its header checked, then decoded at the working size in
a child process with a time and a memory bound), and a file that fails is deleted and remembered with
the message its edit would have given; beyond `max_bytes` or `max_files` of uploads the oldest of the
address that holds the most of them is deleted, and beyond `per_address_files` the address's own oldest
(a photo, once prepared, stays in the photo cache), so a client that floods the folder pushes out its
own files, not a visitor's whose edit is still waiting in the queue. Each kept upload's pixel count is
remembered: the queue's shares count work in megapixels (web/server/fair_queue.py). Paths are kept resolved
(`os.path.realpath`), so another spelling of a path names the same upload.

The checks run in worker threads, never on the event loop (a crafted GIF comment once held every other
request for 25 s), one request at a time per address (so one visitor's slow files delay only its own),
and all of a request's files within REQUEST_SECONDS; the rest are refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import NamedTuple

import anyio
from starlette.requests import Request

from vae.image_file import inspect_file

from .fair_queue import client_address, trusted_proxies
from .sandbox import BUSY

UPLOADS_MAX_BYTES = 200 * 2**20  # docs/api.md, "What the server accepts"
UPLOADS_MAX_FILES = 2000
UPLOADS_PER_ADDRESS_FILES = 200
REQUEST_SECONDS = 30.0  # one upload request's checks, all its files together, from when its turn comes
WAIT_SECONDS = 20.0  # for a free checker, before the request's files are refused as BUSY
REMEMBERED = 4096  # refused uploads whose message is kept
STRAY_SECONDS = 180.0  # a loose file at the top of the upload folder older than a body's deadline (120 s) is Gradio's leftover
SWEEP_EVERY_S = 60.0
TOO_SLOW = "The upload took too long to check: send a smaller photo, or fewer files at once."


log = logging.getLogger(__name__)


class Kept(NamedTuple):
    size: int  # bytes
    address: str
    pixels: int  # from the header


class UploadStore:
    """The uploads Gradio stored for clients, in arrival order, bounded in bytes and files, in all and per address.

    `inspect(path)` says why a file is refused (or None) and its pixel count: `vae.image_file.inspect_file`
    in this process by default, the sandbox's child processes on the server. `root()` is the upload folder,
    swept of what Gradio leaves at its top.
    """

    def __init__(
        self,
        inspect: Callable[[str], tuple[str | None, int]] = inspect_file,
        root: Callable[[], str] | None = None,
        max_bytes: int = UPLOADS_MAX_BYTES,
        max_files: int = UPLOADS_MAX_FILES,
        per_address_files: int = UPLOADS_PER_ADDRESS_FILES,
    ) -> None:
        self.inspect, self.root, self._swept = inspect, root, 0.0
        self.max_bytes, self.max_files, self.per_address_files = max_bytes, max_files, per_address_files
        self.kept: OrderedDict[str, Kept] = OrderedDict()  # resolved path -> what is known of it, oldest first
        self.kept_bytes = 0
        self.refused: OrderedDict[str, str] = OrderedDict()  # resolved path -> the message for its edit
        self._lock = threading.Lock()

    def add(self, paths: list[str], address: str = "unknown", deadline: float = float("inf")) -> None:
        """Inspect and keep (or delete) each of `paths`; those not reached by `deadline` (time.monotonic) are refused.
        A path already kept is the same content again (Gradio names uploads by it): it keeps its first owner."""
        for path in map(os.path.realpath, paths):
            with self._lock:
                if path in self.kept:
                    continue
            try:
                reason, pixels = self.inspect(path) if time.monotonic() < deadline else (TOO_SLOW, 0)
                size = os.path.getsize(path) if reason is None else 0
            except Exception:  # a check that failed in a way of its own: the file is refused, never left unchecked
                log.exception("upload check failed: %s", path)
                reason, pixels = BUSY, 0
            with self._lock:
                if reason is not None:
                    self._refuse(path, reason)
                    continue
                self.refused.pop(path, None)
                self.kept[path] = Kept(size, address, pixels)
                self.kept_bytes += size
                self._bound(spare=path)
        self.sweep()

    def refuse(self, paths: list[str], reason: str) -> None:
        """Delete `paths`, unless kept or refused already, and answer their edits with `reason`."""
        with self._lock:
            for path in map(os.path.realpath, paths):
                if path not in self.kept and path not in self.refused:
                    self._refuse(path, reason)

    def sweep(self) -> None:
        """Delete files Gradio left at the top of the upload folder (a body cut off, a file sent under another field
        name): real uploads live in folders of their own, and these would sit there for Gradio's 30-minute cache."""
        if self.root is None or time.monotonic() - self._swept < SWEEP_EVERY_S:
            return
        self._swept = time.monotonic()
        try:
            with os.scandir(self.root()) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False) and time.time() - entry.stat().st_mtime > STRAY_SECONDS:
                        _remove_file(entry.path)
        except OSError:
            pass

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
            return self.refused.get(os.path.realpath(path))

    def pixels(self, path: str) -> int | None:
        """The pixel count of a kept upload's header, or None when it is not (or no longer) kept."""
        with self._lock:
            kept = self.kept.get(os.path.realpath(path))
            return kept.pixels if kept else None

    def files(self, address: str | None = None) -> int:
        """How many uploads are kept, in all or from `address`."""
        with self._lock:
            return sum(address is None or kept.address == address for kept in self.kept.values())


def _remove_file(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _remove(path: str) -> None:
    try:
        os.remove(path)
        os.rmdir(os.path.dirname(path))  # Gradio gives each upload a folder of its own; it may hold others
    except OSError:
        pass


def track_uploads(store: UploadStore, checkers: int = 2):
    """ASGI middleware: Gradio's upload route answers only after `store` has inspected what it stored.

    The checks run in worker threads (`checkers` at a time), one request at a time per client address; the
    event loop only waits for them. Gradio's own refusals of an upload request get messages of ours.
    """
    limiter = anyio.CapacityLimiter(checkers)
    turns = AddressTurns()

    def middleware(app):
        async def tracked(scope, receive, send):
            if scope["type"] != "http" or not scope["path"].endswith("/upload"):
                return await app(scope, receive, send)
            held: list[dict] = []

            async def holding_send(message):
                held.append(message)
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    status = held[0]["status"]
                    if status == 200:
                        address = client_address(Request(scope), trusted_proxies())
                        await _check_in_turn(store, b"".join(m.get("body", b"") for m in held[1:]), address, turns, limiter)
                    elif status in UPLOAD_REFUSALS:
                        held[:] = _answer(status, UPLOAD_REFUSALS[status])
                    for each in held:
                        await send(each)

            await app(scope, receive, holding_send)

        return tracked

    return middleware


UPLOAD_REFUSALS = {  # Gradio's own answers to a bad upload request (too many files, no multipart, a file too large)
    400: "The upload could not be read: send the photo as multipart/form-data, at most 1,000 files at once.",
    413: "The upload is too large: a photo may be up to 25 MB.",
}


def _answer(status: int, message: str) -> list[dict]:
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return [{"type": "http.response.start", "status": status, "headers": headers}, {"type": "http.response.body", "body": body}]


class AddressTurns:
    """One turn at a time per client address (an asyncio lock each, dropped when nobody holds or awaits it)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def of(self, address: str, wait_s: float):
        """The address's turn; TimeoutError after `wait_s` without it (its earlier requests still hold it)."""
        lock, users = self._locks.get(address, (asyncio.Lock(), 0))
        self._locks[address] = (lock, users + 1)
        try:
            await asyncio.wait_for(lock.acquire(), wait_s)
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[address]
            if users == 1:
                del self._locks[address]
            else:
                self._locks[address] = (lock, users - 1)


async def _check_in_turn(
    store: UploadStore, body: bytes, address: str, turns: AddressTurns, limiter: anyio.CapacityLimiter
) -> None:
    """`_check` once the address's earlier uploads are checked; every file not kept by then is refused."""
    try:
        paths = [p for p in json.loads(body) if isinstance(p, str)]
    except (ValueError, TypeError):
        log.warning("unexpected upload answer: %.80r", body)
        return
    try:
        async with turns.of(address, WAIT_SECONDS):
            await _check(store, paths, address, limiter)
    except TimeoutError:
        pass
    finally:  # a turn not had in time, a cancelled request: nothing stays on disk unchecked
        store.refuse(paths, BUSY)


async def _check(store: UploadStore, paths: list[str], address: str, limiter: anyio.CapacityLimiter) -> None:
    """Inspect `paths` in a worker thread, once a checker is free (WAIT_SECONDS at most)."""
    with anyio.move_on_after(WAIT_SECONDS) as waiting:
        await limiter.acquire()
    if waiting.cancelled_caught:
        return
    try:  # each file's check is bounded by the sandbox, so the thread ends soon after the deadline
        await anyio.to_thread.run_sync(store.add, paths, address, time.monotonic() + REQUEST_SECONDS)
    finally:
        limiter.release()
