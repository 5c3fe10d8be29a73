"""Freed memory goes back to the system after each request (glibc's `malloc_trim`), so the server's
memory follows what it holds.

An edit of a 2048-px photo allocates and frees arrays of 12-50 MB. glibc raises its mmap threshold to
the size of a freed block (up to 32 MB), so later blocks of that size come from its heaps, and heaps
fragmented by them do not shrink: 28 flat 2048x2048 photos took the server 1,228 MB above its start
against a photo cache of 512 MB (docs/benchmarks.md, "The memory bound"). A trim costs 5-10 ms; a fixed 8 MB mmap
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
    """Trims after calls in a worker thread without holding up the response. One trim runs at a time; the
    calls that end while it runs share one more trim after it (what they freed may lie where the running
    trim has already been), so a burst's last call is covered too and trims never pile up. The caller has
    nothing to await, so nothing to mask its call's error."""

    def __init__(self) -> None:
        self._running: asyncio.Future | None = None
        self._next: asyncio.Future | None = None  # the trim owed to calls that ended during the running one

    def after_call(self) -> asyncio.Future | None:
        """Start a trim, or owe one after the running trim; the trim that covers this call (None without glibc)."""
        if _TRIM is None:
            return None
        if self._running is None or self._running.done():
            return self._start()
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        return self._next

    def _start(self) -> asyncio.Future:
        self._running = asyncio.get_running_loop().run_in_executor(None, release_freed_memory)
        self._running.add_done_callback(self._after_trim)
        return self._running

    def _after_trim(self, done: asyncio.Future) -> None:
        """In the event loop when a trim ends: run the trim owed, and let its waiters see its result."""
        if self._next is None:
            return
        owed, self._next = self._next, None
        trim = self._start()
        trim.add_done_callback(lambda _: owed.done() or owed.set_result(trim.result()))
