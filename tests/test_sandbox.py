"""Uploads are test-decoded in child processes: a file past the time bound is refused and its process
replaced, one past the memory bound is refused, and a photo comes back with its pixel count."""

import time

import numpy as np
import pytest
from PIL import Image

from bench.hostile_files import flat_gif
from web.server.sandbox import TOO_SLOW, Sandbox


@pytest.fixture
def photo(astronaut_path) -> str:
    return str(astronaut_path)


def test_a_photo_is_decoded_and_counted(photo):
    sandbox = Sandbox(checkers=1)
    try:
        assert sandbox.inspect(photo, max_side=2048, min_side=32) == (None, 512 * 512)
    finally:
        sandbox.close()


def test_a_file_past_the_time_bound_is_refused_and_the_checker_replaced(tmp_path, photo):
    big = tmp_path / "big.gif"
    big.write_bytes(flat_gif())  # 40 MP to decode: far more than 50 ms
    sandbox = Sandbox(checkers=1, seconds=0.05)
    sandbox._all[0].seconds = 30
    try:
        sandbox.inspect(photo, max_side=2048)  # started (its imports are not what is timed) and answering
        sandbox._all[0].seconds = 0.05
        started = time.monotonic()
        assert sandbox.inspect(str(big), max_side=2048) == (TOO_SLOW, 0)
        assert time.monotonic() - started < 1.0  # killed at its bound, not waited for
        sandbox._all[0].seconds = 30
        assert sandbox.inspect(photo, max_side=2048)[0] is None  # a fresh child answers the next file
    finally:
        sandbox.close()


def test_a_file_past_the_memory_bound_is_refused(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((4000, 4000, 3), np.uint8)).save(path, compress_level=1)  # 64 MB once decoded
    sandbox = Sandbox(checkers=1, memory_bytes=24 * 2**20)
    try:
        refusal, pixels = sandbox.inspect(str(path), max_side=2048)
        assert pixels == 0 and ("too much memory" in refusal or "too large to decode" in refusal), refusal
    finally:
        sandbox.close()
