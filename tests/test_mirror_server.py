"""The mirror's HTTP routes (web/mirror.py) on the real app: a stream opens, edits JPEG frames, and every
bad request (a wrong token, a bad strength, a body that is no JPEG or too large, one stream too many, a
frame too many, a stream past its time) gets a status and a message."""

import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from vae.editor import SmileEditor
from web.mirror import IN_FLIGHT, MirrorRefused, MirrorStreams


def camera_frame(astronaut_path, size=(640, 480), quality=85) -> bytes:
    """A webcam-like JPEG: the astronaut on grey."""
    canvas = Image.new("RGB", size, (90, 90, 90))
    canvas.paste(Image.open(astronaut_path).convert("RGB").resize((400, 400)), (120, 40))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def post_frame(url: str, token: str, body: bytes, strength: str = "3") -> httpx.Response:
    headers = {"X-Mirror-Token": token, "X-Mirror-Strength": strength, "Content-Type": "image/jpeg"}
    return httpx.post(f"{url}mirror/frame", content=body, headers=headers, timeout=60)


@pytest.fixture
def stream(app_server):
    """An open stream's token, closed after the test."""
    opened = httpx.post(f"{app_server}mirror/start", timeout=30)
    assert opened.status_code == 200, opened.text
    token = opened.json()["token"]
    yield token
    httpx.post(f"{app_server}mirror/stop", params={"token": token}, timeout=30)


def test_a_stream_edits_frames_and_keeps_their_size_and_outside(app_server, stream, astronaut_path):
    body = camera_frame(astronaut_path)
    original = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.int16)
    plain = post_frame(app_server, stream, body, "0")
    more = post_frame(app_server, stream, body, "3")
    less = post_frame(app_server, stream, body, "-3")
    images = []
    for answer in (plain, more, less):
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "image/jpeg"
        image = Image.open(io.BytesIO(answer.content), formats=["JPEG"])
        assert image.size == (640, 480)
        images.append(np.asarray(image.convert("RGB"), dtype=np.int16))
    face = np.s_[110:190, 240:350]  # the astronaut's mouth on the 640x480 frame
    assert np.abs(images[1] - images[2])[face].mean() > 4  # more and less differ where the mouth is
    corner = np.s_[:40, :100]  # grey, far from the face: only JPEG's rounding
    assert np.abs(images[1] - original)[corner].max() <= 3


def test_a_frame_without_a_face_comes_back_with_a_note(app_server, stream):
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 120, 40)).save(buffer, "JPEG")
    answer = post_frame(app_server, stream, buffer.getvalue())
    assert answer.status_code == 200
    assert "No face" in answer.headers["x-mirror-note"]


@pytest.mark.parametrize(
    "strength, words",
    [("nan", "finite number"), ("4.5", "out of range"), ("two", "finite number"), ("9" * 400, "finite number")],
)
def test_a_bad_strength_is_refused_with_its_range(app_server, stream, astronaut_path, strength, words):
    answer = post_frame(app_server, stream, camera_frame(astronaut_path), strength)
    assert answer.status_code == 400
    assert words in answer.json()["detail"] and "-4" in answer.json()["detail"]


def test_bad_frames_are_refused(app_server, stream, astronaut_path):
    assert post_frame(app_server, stream, b"GIF89a not a jpeg").json()["detail"] == "A mirror frame must be a JPEG image."
    truncated = camera_frame(astronaut_path)[:4000]
    assert post_frame(app_server, stream, truncated).status_code == 400
    huge = camera_frame(astronaut_path, size=(2400, 1800), quality=10)
    answer = post_frame(app_server, stream, huge)
    assert answer.status_code == 400 and "2400x1800" in answer.json()["detail"]
    too_large = post_frame(app_server, stream, b"\xff\xd8" + bytes(3 * 2**20))
    assert too_large.status_code == 413 and "2 MB" in too_large.json()["detail"]
    assert post_frame(app_server, stream, camera_frame(astronaut_path)).status_code == 200  # the stream still works


def test_a_frame_needs_an_open_stream(app_server, astronaut_path):
    answer = post_frame(app_server, "not-a-token", camera_frame(astronaut_path))
    assert answer.status_code == 410 and "press Start again" in answer.json()["detail"]


def test_streams_are_bounded_and_a_stopped_one_frees_its_place(app_server):
    tokens, refused = [], None
    for _ in range(8):
        answer = httpx.post(f"{app_server}mirror/start", timeout=30)
        if answer.status_code != 200:
            refused = answer
            break
        tokens.append(answer.json()["token"])
    assert refused is not None and refused.status_code == 429
    assert "The mirror is busy" in refused.json()["detail"] and refused.headers["retry-after"]
    httpx.post(f"{app_server}mirror/stop", params={"token": tokens.pop()}, timeout=30)
    again = httpx.post(f"{app_server}mirror/start", timeout=30)
    assert again.status_code == 200
    for token in [*tokens, again.json()["token"]]:
        httpx.post(f"{app_server}mirror/stop", params={"token": token}, timeout=30)


@pytest.fixture(scope="module")
def editor(request):
    from conftest import ROOT

    return SmileEditor.from_pretrained(ROOT / "assets")


def test_a_stream_ends_after_its_time_and_after_idling(editor):
    streams = MirrorStreams(editor, max_streams=1, seconds=0.3, idle_seconds=10)
    token = streams.open()
    streams.release(streams.claim(token))
    time.sleep(0.4)
    with pytest.raises(MirrorRefused) as ended:
        streams.claim(token)
    assert ended.value.status == 410
    assert streams.active() == 0  # its place is free
    idle = MirrorStreams(editor, max_streams=1, seconds=60, idle_seconds=0.2, model=streams.model)
    idle.open()
    with pytest.raises(MirrorRefused):
        idle.open()  # full
    time.sleep(0.3)
    idle.open()  # the first sent nothing for too long: its place went to this one


def test_a_stream_has_a_bounded_number_of_frames_in_flight(editor):
    streams = MirrorStreams(editor, max_streams=1)
    token = streams.open()
    claimed = [streams.claim(token) for _ in range(IN_FLIGHT)]
    with pytest.raises(MirrorRefused) as full:
        streams.claim(token)
    assert full.value.status == 409
    streams.close(token)
    assert streams.active() == 1  # not closed while its frames are being edited
    for stream in claimed:
        streams.release(stream)
    streams.close(token)
    assert streams.active() == 0
