"""The server-wide cache of prepared photos, bounded in count and in bytes, keyed by content.

Sessions keep only the key: a browser session's state is then a short string, and the memory
that photos take is bounded for the whole server, however many sessions there are. A script that
calls /edit again with a new strength only decodes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from vae.editor import Prepared


class PreparedCache:
    """Recently prepared photos by content key; the oldest go beyond `size` photos or `max_bytes` held."""

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

    @staticmethod
    def realigned(key: str | None, align: bool) -> str | None:
        """The key of the same content as `key`'s, prepared with `align`."""
        return None if key is None else f"{key.rsplit(':', 1)[0]}:{int(align)}"

    def find(self, key: str | None) -> Prepared | None:
        """The prepared photo under `key`, or None when it was never prepared or has been evicted."""
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def _bytes(self) -> int:
        return sum(item.nbytes for item in self.items.values())


class RecentKeys:
    """Photo keys by name (a session, an upload's path), the `size` most recently set kept; thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[Hashable, str] = OrderedDict()
        self.lock = threading.Lock()

    def set(self, name: Hashable, key: str) -> None:
        with self.lock:
            self.items[name] = key
            self.items.move_to_end(name)
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def get(self, name: Hashable) -> str | None:
        with self.lock:
            return self.items.get(name)

    def take(self, name: Hashable, key: str) -> bool:
        """Remove `name` if it holds `key`; whether it did (a strip owed once is made once)."""
        with self.lock:
            if self.items.get(name) != key:
                return False
            del self.items[name]
            return True
