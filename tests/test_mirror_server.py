"""The mirror's HTTP routes (web/mirror.py) on the real app: a stream opens, edits JPEG frames, and every
bad request (a wrong token, a bad strength, a body that is no JPEG, progressive, too large or too thin,
one stream too many for the server or for one address, a frame too many, a stream past its time or
stopped) gets a status and a message."""

import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from vae.editor import SmileEditor
from web.mirror import IDLE_SECONDS, IN_FLIGHT, MirrorRefused, MirrorStreams


def camera_frame(astronaut_path, size=(640, 480), quality=85) -> bytes:
    """A webcam-like JPEG: the astronaut on grey."""
    canvas = Image.new("RGB", size, (90, 90, 90))
    canvas.paste(Image.open(astronaut_path).convert("RGB").resize((400, 400)), (120, 40))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def stop(url: str, token: str) -> None:
    assert httpx.post(f"{url}mirror/stop", headers={"X-Mirror-Token": token}, timeout=30).status_code == 204


def open_stream(url: str) -> httpx.Response:
    """POST /mirror/start; waits out a stream of this address that an earlier test's page left (IDLE_SECONDS)."""
    deadline = time.monotonic() + IDLE_SECONDS + 2
    while True:
        answer = httpx.post(f"{url}mirror/start", timeout=30)
        if answer.status_code != 429 or "You already have" not in answer.text or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


def post_frame(url: str, token: str, body: bytes, strength: str = "3") -> httpx.Response:
    headers = {"X-Mirror-Token": token, "X-Mirror-Strength": strength, "Content-Type": "image/jpeg"}
    return httpx.post(f"{url}mirror/frame", content=body, headers=headers, timeout=60)


@pytest.fixture
def stream(app_server):
    """An open stream's token, closed after the test."""
    opened = open_stream(app_server)
    assert opened.status_code == 200, opened.text
    token = opened.json()["token"]
    yield token
    stop(app_server, token)


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
    huge = camera_frame(astronaut_path, size=(1600, 1200), quality=10)
    answer = post_frame(app_server, stream, huge)
    assert answer.status_code == 400 and "1600x1200" in answer.json()["detail"]
    thin = io.BytesIO()
    Image.new("RGB", (640, 32), (90, 90, 90)).save(thin, "JPEG")
    answer = post_frame(app_server, stream, thin.getvalue())
    assert answer.status_code == 400 and "640x32" in answer.json()["detail"]
    progressive = io.BytesIO()
    Image.open(io.BytesIO(camera_frame(astronaut_path))).save(progressive, "JPEG", progressive=True)
    answer = post_frame(app_server, stream, progressive.getvalue())
    assert answer.status_code == 400 and "baseline" in answer.json()["detail"]
    too_large = post_frame(app_server, stream, b"\xff\xd8" + bytes(3 * 2**20))
    assert too_large.status_code == 413 and "2 MB" in too_large.json()["detail"]
    assert post_frame(app_server, stream, camera_frame(astronaut_path)).status_code == 200  # the stream still works


def test_a_frame_needs_an_open_stream(app_server, astronaut_path):
    answer = post_frame(app_server, "not-a-token", camera_frame(astronaut_path))
    assert answer.status_code == 410 and "press Start again" in answer.json()["detail"]


def test_a_frame_at_the_aspect_bound_is_edited_not_refused(app_server, stream):
    buffer = io.BytesIO()
    Image.new("RGB", (512, 128), (90, 90, 90)).save(buffer, "JPEG")  # 4:1, the most a frame may be
    answer = post_frame(app_server, stream, buffer.getvalue())
    assert answer.status_code == 200 and "No face" in answer.headers["x-mirror-note"]


def test_one_address_holds_one_stream_and_stopping_frees_it_at_once(app_server):
    first = open_stream(app_server)
    assert first.status_code == 200, first.text
    second = httpx.post(f"{app_server}mirror/start", timeout=30)
    assert second.status_code == 429 and "You already have" in second.json()["detail"]
    assert 1 <= int(second.headers["retry-after"]) <= first.json()["seconds"]
    stop(app_server, first.json()["token"])
    again = httpx.post(f"{app_server}mirror/start", timeout=30)  # at once: far sooner than IDLE_SECONDS
    assert again.status_code == 200, again.text
    stop(app_server, again.json()["token"])


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


def test_the_server_bounds_streams_and_says_when_a_place_frees(editor):
    streams = MirrorStreams(editor, max_streams=2, per_address=1, seconds=40, idle_seconds=60)
    streams.open("a")
    with pytest.raises(MirrorRefused) as yours:
        streams.open("a")
    assert yours.value.status == 429 and "You already have" in str(yours.value)
    streams.open("b")
    with pytest.raises(MirrorRefused) as busy:
        streams.open("c")
    assert busy.value.status == 429 and "The mirror is busy" in str(busy.value)
    assert 39 <= busy.value.retry_after <= 40 and f"{busy.value.retry_after} s" in str(busy.value)


def test_a_stream_has_a_bounded_number_of_frames_in_flight_and_stops_while_one_is_edited(editor):
    streams = MirrorStreams(editor, max_streams=1, idle_seconds=60)
    token = streams.open()
    claimed = [streams.claim(token) for _ in range(IN_FLIGHT)]
    with pytest.raises(MirrorRefused) as full:
        streams.claim(token)
    assert full.value.status == 409
    streams.close(token)
    with pytest.raises(MirrorRefused) as stopped:
        streams.claim(token)
    assert stopped.value.status == 410  # stopped: no new frame, even before the ones at the server are done
    assert streams.active() == 1  # its frames are still being edited
    for stream in claimed:
        streams.release(stream)
    assert streams.active() == 0  # and then its place is free, with no second stop
