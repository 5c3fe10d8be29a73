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


def test_checkers_answer_when_the_server_holds_over_a_thousand_descriptors(photo):
    """select() refused descriptors past 1023 (a server with many connections): the check must not break."""
    import resource

    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1300:
        pytest.skip("this machine allows fewer than 1,300 open files")
    held = [open(photo, "rb") for _ in range(1100)]
    try:
        sandbox = Sandbox(checkers=1)
        try:
            assert sandbox._all[0].proc.stdout.fileno() > 1023
            assert sandbox.inspect(photo, max_side=2048) == (None, 512 * 512)
        finally:
            sandbox.close()
    finally:
        for file in held:
            file.close()


def test_an_upload_is_checked_before_an_edit_reads_it_even_if_its_check_has_not_answered(tmp_path):
    """The page's edit can name a stored upload before the upload's own check answers: it is checked first."""
    from conftest import ROOT

    from bench.hostile_files import rle_bmp
    from vae.editor import SmileEditor
    from web.app import SmileApp

    uploads = tmp_path / "uploads"
    (uploads / "abc").mkdir(parents=True)
    (uploads / "abc" / "slow.bmp").write_bytes(rle_bmp())  # never seen by the upload route's check
    app = SmileApp(SmileEditor.from_pretrained(ROOT / "assets"), tmp_path / "work", upload_root=lambda: str(uploads))
    try:
        with pytest.raises(Exception, match="RLE-compressed BMP"):
            list(app.prepare({"path": str(uploads / "abc" / "slow.bmp")}, True, None))
        assert not (uploads / "abc" / "slow.bmp").exists()
    finally:
        app.sandbox.close()


def test_files_gradio_leaves_loose_in_the_upload_folder_are_swept(tmp_path, photo):
    import os

    from web.server.uploads import STRAY_SECONDS, UploadStore

    stray = tmp_path / "tmpab12cd"  # a cut-off body's temporary file, at the top of the folder
    stray.write_bytes(b"x" * 1000)
    os.utime(stray, (time.time() - STRAY_SECONDS - 5,) * 2)
    fresh = tmp_path / "tmpfresh"
    fresh.write_bytes(b"x")
    (tmp_path / "abc").mkdir()
    kept = tmp_path / "abc" / "photo.jpg"
    kept.write_bytes(open(photo, "rb").read())
    UploadStore(root=lambda: str(tmp_path)).add([str(kept)])
    assert not stray.exists() and fresh.exists() and kept.exists()
