"""The Mirror view in a real browser: Chromium's fake camera plays the astronaut, one click on #mirror_start
streams it, edited frames arrive in #mirror_out and change when the #mirror_strength slider moves."""

import base64
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from bench.appserver import CHROMIUM_ARGS, FAKE_CAMERA_ARGS
from bench.fakecam import astronaut_frames, read_stamp, write_y4m

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = CHROMIUM_ARGS + FAKE_CAMERA_ARGS


@pytest.fixture(scope="module")
def camera_browser(tmp_path_factory):
    """Chromium whose fake camera plays a still astronaut (with a little noise); the flags must be given at launch."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    clip = write_y4m(tmp_path_factory.mktemp("camera") / "astronaut.y4m", astronaut_frames(30, still_from=0))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS + [f"--use-file-for-fake-video-capture={clip}"])
        yield browser
        browser.close()


SHOWN_FRAME_JS = """async (old) => {
  // wait for a frame newer than `old` to be decoded, then read it in the same task (the next replaces it)
  for (const until = performance.now() + 60000; performance.now() < until; ) {
    const img = document.querySelector('#mirror_out img');
    if (img && img.src && img.src !== old && img.complete && img.naturalWidth > 0) {
      const canvas = document.createElement('canvas');
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      canvas.getContext('2d').drawImage(img, 0, 0);
      return [img.src, canvas.toDataURL('image/png')];
    }
    await new Promise((done) => setTimeout(done, 5));
  }
  throw new Error('no new frame in #mirror_out within 60 s');
}"""


def shown_frame(page, previous: str | None = None) -> tuple[str, np.ndarray]:
    """The next frame shown in #mirror_out (a new src than `previous`), as its pixels read back in the page."""
    src, png = page.evaluate(SHOWN_FRAME_JS, previous)
    body = base64.b64decode(png.split(",", 1)[1])
    return src, np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.int16)


def mouth_change(a: np.ndarray, b: np.ndarray) -> float:
    """Largest mean |a - b| over 16x16 blocks of the face's middle (where the mouth is, mirrored or not)."""
    diff = np.abs(a - b).mean(2)[96:288, 192:448]
    return float(diff.reshape(12, 16, 16, 16).mean((1, 3)).max())


def test_one_click_streams_edited_frames_that_follow_the_slider(camera_browser, app_server):
    page = camera_browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(app_server)
    page.locator("#mirror_start").click()
    src, first = shown_frame(page)
    assert page.locator("#mirror_out img").is_visible()
    assert first.shape == (480, 640, 3)
    stamps = set()
    for _ in range(4):  # frames keep arriving, each a new capture
        src, frame = shown_frame(page, src)
        stamps.add(read_stamp(frame.astype(np.uint8), mirrored=True))
    assert len(stamps - {None}) >= 3, stamps
    src, steady = shown_frame(page, src)  # the first frame may still come before the track settled (seen under load)
    same = mouth_change(frame, steady)  # same strength, next capture: noise only

    page.locator("#mirror_strength input[type=range]").fill("-3")
    for _ in range(3):  # a frame or two may have left before the slider moved
        src, less = shown_frame(page, src)
    moved = mouth_change(steady, less)
    assert moved > max(8.0, 3 * same), (moved, same)

    page.locator("#mirror_strength input[type=range]").fill("0")
    for _ in range(3):
        src, plain = shown_frame(page, src)
    assert mouth_change(plain, less) > max(4.0, 2 * same)
    page.close()
