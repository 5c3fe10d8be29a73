"""web/server/memory.py gives the C heap's free pages back to the system (glibc), and trims one at a time."""

import asyncio
import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from web.server.memory import MemoryReleaser


def has_glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    except (OSError, TypeError):
        return False


needs_glibc = pytest.mark.skipif(not has_glibc(), reason="malloc_trim is glibc's; elsewhere nothing is trimmed")

PROBE = """
import threading
from web.server.memory import release_freed_memory

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024

def fragment(kept):
    blocks = [bytearray(100_000) for _ in range(3000)]  # 300 MB of heap chunks, under glibc's mmap threshold
    kept += [bytearray(100) for _ in range(3000)]  # small blocks between them: the heap's top cannot shrink
    del blocks

kept = []
worker = threading.Thread(target=fragment, args=(kept,))  # a worker thread's arena, as a request's
worker.start()
worker.join()
before = rss_mb()
print(release_freed_memory(), before, rss_mb())
"""


@needs_glibc
def test_freed_heap_pages_go_back_to_the_system():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True, check=True).stdout
    released, before, after = out.split()
    assert released == "True"
    assert int(before) > 250, f"the probe's freed blocks were not kept by the heap ({before} MB)"
    assert int(after) < int(before) - 200, f"RSS {before} MB -> {after} MB after the trim"


@needs_glibc
def test_calls_ending_during_a_trim_share_one_more_trim_after_it_and_a_later_call_starts_another():
    async def calls() -> list:
        releaser = MemoryReleaser()
        first = releaser.after_call()
        during = [releaser.after_call() for _ in range(5)]  # the first trim has not been awaited: it is still running
        assert await first is True and not during[0].done()  # the owed trim starts only after the first one
        assert await during[0] is True
        return [first, *during, releaser.after_call()]

    first, *during, later = asyncio.run(calls())
    assert all(d is during[0] for d in during) and during[0] is not first
    assert later is not first and later is not during[0]
