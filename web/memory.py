"""Freed memory goes back to the system after each request (glibc's `malloc_trim`), so the server's
memory follows what it holds.

An edit of a 2048-px photo allocates and frees arrays of 12-50 MB. glibc raises its mmap threshold to
the size of a freed block (up to 32 MB), so later blocks of that size come from its heaps, and heaps
fragmented by them do not shrink: 28 flat 2048x2048 photos took the server 1,228 MB above its start
against a photo cache of 512 MB (README, "The memory bound"). A trim costs 5-10 ms; a fixed 8 MB mmap
threshold held memory as well but made every edit 12-25 % slower (each large array faulted in anew).
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable


def _find_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS, Windows)."""
    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # Windows has no process-wide CDLL(None)
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int  # int malloc_trim(size_t pad)
    return trim


_TRIM = _find_trim()


def release_freed_memory() -> bool:
    """Hand the C heap's free pages back to the system; False where that is not possible."""
    return bool(_TRIM(0)) if _TRIM is not None else False


class MemoryReleaser:
    """Trims after calls in a worker thread, one trim at a time, without holding up the response: a call
    that ends while a trim runs is covered by it (nothing to await, so nothing to mask a call's error)."""

    def __init__(self) -> None:
        self._running: asyncio.Future | None = None

    def after_call(self) -> asyncio.Future | None:
        """Start a trim unless one is running; the trim that covers this call (None without glibc)."""
        if _TRIM is not None and (self._running is None or self._running.done()):
            self._running = asyncio.get_running_loop().run_in_executor(None, release_freed_memory)
        return self._running
