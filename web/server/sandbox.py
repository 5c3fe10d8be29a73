"""Test-decode every upload in a process of its own, with a time and a memory bound.

A check in a thread of the server cannot be stopped once Pillow is inside it: files that pass every
structural bound of vae/metadata.py may still find a slow path (a million empty GIF comments took 20 s,
and refused checks went on burning a core each). So each upload is opened and decoded at the working
size, as its edit will be, by one of CHECKERS child processes (`python -m vae.image_file --serve`:
numpy and Pillow, no torch, ~30 MB each). A child that has not answered within CHECK_SECONDS is killed
and replaced, and one that would pass CHECK_MEMORY_BYTES fails its allocation (RLIMIT_AS); either way
the file is refused with a message, and a file that is kept is known to decode within both bounds.
"""

from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKERS = 2  # child processes: uploads checked at once
CHECK_SECONDS = 5.0  # one file's check; a 40 MP PNG or GIF decodes in ~0.7-1.1 s on a quiet 2-core machine
STARTUP_SECONDS = 20.0  # a child's imports, not charged to the first file it checks
CHECK_MEMORY_BYTES = 512 * 2**20  # a 40 MP decode at the working size needs ~250 MB (python -m bench.decode)
TOO_SLOW = "The photo took too long to read: save it again as a plain JPEG or PNG."
TOO_LARGE = "The photo needs too much memory to read: save it again as a plain JPEG or PNG."
BUSY = "The server is checking many uploads right now: try again in a moment."


class _Checker:
    """One child process answering `inspect_file` requests, started again after it is killed."""

    def __init__(self, seconds: float, memory_bytes: int) -> None:
        self.seconds, self.memory_bytes = seconds, memory_bytes
        self.proc: subprocess.Popen | None = None
        self._start()

    def _start(self) -> None:
        self.ready = False
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vae.image_file", "--serve", "--memory-mb", str(self.memory_bytes // 2**20)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,  # read with os.read: nothing may wait in a Python buffer
            cwd=ROOT,
            env=env,
        )

    def inspect(self, path: str, max_side: int | None, min_side: int | None) -> tuple[str | None, int]:
        if self.proc.poll() is not None:
            self._start()
        if not self.ready:
            self.ready = self._read_line(STARTUP_SECONDS).get("ready", False)
            if not self.ready:
                self._replace()
                return BUSY, 0
        try:
            self.proc.stdin.write(json.dumps({"path": path, "max_side": max_side, "min_side": min_side}).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:  # the child died meanwhile
            self._replace()
            return TOO_LARGE, 0
        answer = self._read_line(self.seconds)
        if "refusal" not in answer or not isinstance(answer.get("pixels"), int):  # past its time, dead, or garbled
            timed_out = answer.get("timed_out", False)
            self._replace()
            return (TOO_SLOW if timed_out else TOO_LARGE), 0
        return answer["refusal"], answer["pixels"]

    def _read_line(self, seconds: float) -> dict:
        """The child's next JSON line within `seconds` (poll(), which takes any descriptor number, unlike select());
        {"timed_out": True} past them, {} if the child ended or wrote something else."""
        fd, buffer, deadline = self.proc.stdout.fileno(), b"", time.monotonic() + seconds
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not buffer.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                return {"timed_out": True}
            chunk = os.read(fd, 65536)
            if not chunk:
                return {}
            buffer += chunk
        try:
            answer = json.loads(buffer)
        except ValueError:
            return {}
        return answer if isinstance(answer, dict) else {}

    def _replace(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._start()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Sandbox:
    """CHECKERS child processes that test-decode files; `inspect` takes a free one or answers BUSY."""

    def __init__(self, checkers: int = CHECKERS, seconds: float = CHECK_SECONDS, memory_bytes: int = CHECK_MEMORY_BYTES) -> None:
        self.checkers = checkers
        self._idle: queue.Queue[_Checker] = queue.Queue()
        self._all = [_Checker(seconds, memory_bytes) for _ in range(checkers)]
        for checker in self._all:
            self._idle.put(checker)

    def inspect(
        self, path: str, max_side: int | None = None, min_side: int | None = None, wait_s: float = 10.0
    ) -> tuple[str | None, int]:
        """(why the file at `path` is refused, or None; its pixel count), decoded in a child process."""
        try:
            checker = self._idle.get(timeout=wait_s)
        except queue.Empty:
            return BUSY, 0
        try:
            return checker.inspect(path, max_side, min_side)
        finally:
            self._idle.put(checker)

    def close(self) -> None:
        for checker in self._all:
            checker.close()
