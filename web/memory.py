"""Freed memory goes back to the system after each request (glibc's `malloc_trim`), so the server's
memory follows what it holds.

An edit of a 2048-px photo allocates and frees arrays of 12-50 MB. glibc raises its mmap threshold to
the size of a freed block (up to 32 MB), so later blocks of that size come from its heaps, and heaps
fragmented by them do not shrink: 28 flat 2048x2048 photos took the server 1,228 MB above its start
against a photo cache of 512 MB (README, "The memory bound"). A trim costs 5-10 ms; a fixed 8 MB mmap
threshold held memory as well but made every edit 12-25 % slower (each large array faulted in anew).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _find_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS, Windows)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # Windows has no process-wide CDLL(None)
        return None


_TRIM = _find_trim()


def release_freed_memory() -> bool:
    """Hand the C heap's free pages back to the system; False where that is not possible."""
    return bool(_TRIM(0)) if _TRIM is not None else False
