"""The upload folder, bounded: files that are not images, or whose header is over the pixel limit, are
removed at once; the rest are bounded in bytes.

Gradio stores every upload (up to the per-file limit) and keeps it for its cache lifetime, so ten 25 MB
uploads of random bytes sat on disk for 30 minutes. `UploadStore.add` is called with the paths that
Gradio's upload route has just stored (see `track_uploads`): a file whose bytes are not one of the
accepted formats is deleted and remembered with the message its edit would have given; beyond
`max_bytes` of uploads the oldest of the address that holds the most bytes is deleted (its photo, once
prepared, stays in the photo cache), so a client that floods the folder pushes out its own files, not a
visitor's whose edit is still waiting in the queue.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict

from PIL import Image, UnidentifiedImageError
from starlette.requests import Request

from vae.preprocess import FORMAT_NAMES, FORMATS, MAX_PIXELS, ImageError, check_size

from .fair_queue import client_address, trusted_proxies

UPLOADS_MAX_BYTES = 200 * 2**20  # README, "What the server accepts"
REMEMBERED = 4096  # refused uploads whose message is kept

log = logging.getLogger(__name__)


def refusal(path: str) -> str | None:
    """Why the file at `path` cannot be a photo (from its header only), or None when it may be one."""
    try:
        if os.path.getsize(path) == 0:
            return "The file is empty."
        with Image.open(path, formats=FORMATS) as image:  # reads the header, decodes nothing
            check_size(image.size, MAX_PIXELS)
            return None
    except ImageError as err:
        return str(err)
    except Image.DecompressionBombError:  # Pillow's own check, in open, for a header claiming over 179 MP
        return f"Image is too large; the limit is {MAX_PIXELS // 1_000_000} megapixels."
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return f"The upload is not an image we can read: the accepted formats are {FORMAT_NAMES}."
    except Exception:  # whatever else a crafted header raises: refused, never a 500 that leaves files behind
        log.exception("upload header check failed: %s", path)
        return f"The upload is not an image we can read: the accepted formats are {FORMAT_NAMES}."


class UploadStore:
    """The uploads Gradio stored for clients, in arrival order, with their total size bounded."""

    def __init__(self, max_bytes: int = UPLOADS_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.kept: OrderedDict[str, tuple[int, str]] = OrderedDict()  # path -> (bytes, client address), oldest first
        self.kept_bytes = 0
        self.refused: OrderedDict[str, str] = OrderedDict()  # path -> the message for its edit
        self._lock = threading.Lock()

    def add(self, paths: list[str], address: str = "unknown") -> None:
        for path in paths:
            reason = refusal(path)
            with self._lock:
                if reason is not None:
                    _remove(path)
                    self.refused[path] = reason
                    while len(self.refused) > REMEMBERED:
                        self.refused.popitem(last=False)
                    continue
                self._forget(path)  # Gradio names an upload by its content: the same file again
                self.kept[path] = (os.path.getsize(path), address)
                self.kept_bytes += self.kept[path][0]
                while self.kept_bytes > self.max_bytes and len(self.kept) > 1:
                    _remove(self._forget(self._oldest_of_the_heaviest(spare=path)))

    def _oldest_of_the_heaviest(self, spare: str) -> str:
        """The oldest upload, other than `spare`, of the address holding the most bytes."""
        held: dict[str, int] = {}
        for size, address in self.kept.values():
            held[address] = held.get(address, 0) + size
        # max keeps the first of equals, and `kept` runs oldest first: the heaviest address's oldest file
        return max((path for path in self.kept if path != spare), key=lambda path: held[self.kept[path][1]])

    def _forget(self, path: str) -> str:
        self.kept_bytes -= self.kept.pop(path, (0, ""))[0]
        return path

    def why_refused(self, path: str) -> str | None:
        with self._lock:
            return self.refused.get(path)


def _remove(path: str) -> None:
    try:
        os.remove(path)
        os.rmdir(os.path.dirname(path))  # Gradio gives each upload a folder of its own; it may hold others
    except OSError:
        pass


def track_uploads(store: UploadStore):
    """ASGI middleware: Gradio's upload route answers only after `store` has seen what it stored."""

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
                        _add_answer(store, b"".join(m.get("body", b"") for m in held[1:]), address)
                    for each in held:
                        await send(each)

            await app(scope, receive, holding_send)

        return tracked

    return middleware


def _add_answer(store: UploadStore, body: bytes, address: str) -> None:
    try:
        paths = [p for p in json.loads(body) if isinstance(p, str)]
    except (ValueError, TypeError):
        log.warning("unexpected upload answer: %.80r", body)
        return
    store.add(paths, address)
