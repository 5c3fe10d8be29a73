"""A public Space gets hostile requests: every odd or malicious input over HTTP ends in a correct result or a
clear error naming the problem, no file outside the uploads is ever read, and the server keeps serving."""

import io
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import ROOT
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from bench.appserver import completed, endpoint_index, join, raw_call, upload

ATTRIBUTE = "Smiling"


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server, verbose=False)


def save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def hostile_files(tmp: Path, astronaut: Path) -> dict[str, tuple[Path, str | None]]:
    """name: (file, expected error text, or None when the edit must succeed)."""
    face = Image.open(astronaut).convert("RGB")
    noise = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(noise).save(jpeg, "JPEG")
    files = {
        "empty": (tmp / "empty.png", "empty"),
        "text as JPEG": (tmp / "notes.jpg", "not an image"),
        "truncated JPEG": (tmp / "truncated.jpg", "truncated"),
        "decompression bomb": (save(Image.new("L", (12000, 12000)), tmp / "bomb.png"), "too large"),
        "SVG": (tmp / "drawing.svg", "not an image"),
        "random bytes": (tmp / "random.jpg", "not an image"),
        "1x1": (save(Image.new("RGB", (1, 1)), tmp / "dot.png"), "too small"),
        "12x12": (save(face.resize((12, 12)), tmp / "tiny.png"), "too small"),
        "3x5000": (save(Image.new("RGB", (3, 5000)), tmp / "line.png"), "too small"),
        "16-bit greyscale": (save(Image.fromarray(np.asarray(face.convert("L"), np.uint16) * 257), tmp / "deep.png"), None),
        "CMYK JPEG": (save(face.convert("CMYK"), tmp / "cmyk.jpg"), None),
        "RGBA": (save(face.convert("RGBA"), tmp / "alpha.png"), None),
        "palette": (save(face.convert("P"), tmp / "palette.png"), None),
        "animated GIF": (save(face, tmp / "anim.gif", save_all=True, append_images=[face.rotate(10)], duration=100), None),
        "no face": (save(Image.new("RGB", (300, 200), (90, 140, 220)), tmp / "sky.png"), None),
        "6000x4000": (
            save(face.resize((4000, 4000)).crop((0, 0, 4000, 4000)).resize((6000, 4000)), tmp / "large.jpg", quality=70),
            None,
        ),
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; shown upright after rotating 90 degrees clockwise
    files["EXIF-rotated"] = (save(face.rotate(90, expand=True), tmp / "rotated.jpg", exif=exif), None)
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "notes.jpg").write_text("this is not an image")
    (tmp / "truncated.jpg").write_bytes(jpeg.getvalue()[:1500])
    (tmp / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle r="4"/></svg>')
    (tmp / "random.jpg").write_bytes(np.random.default_rng(1).bytes(5000))
    return files


@pytest.fixture(scope="module")
def reference():
    """The same pipeline in this process: what the server must return, file for file."""
    from vae.editor import SmileEditor

    editor = SmileEditor.from_pretrained(ROOT / "assets")

    def outputs(photo: Path, strength: float = 2.0) -> list[np.ndarray]:
        result = editor.edit(photo.read_bytes(), strength)
        return [
            result.less,
            result.more,
            *(np.asarray(face) for face in (result.reconstruction, result.crop, result.decoded_less, result.decoded_more)),
        ]

    return outputs


def same_pictures(files: list[str], expected: list[np.ndarray]) -> bool:
    """Every file decodes completely and equals its reference within one level (the server's threads may round differently)."""
    for path, reference in zip(files, expected):
        got = np.asarray(Image.open(path).convert("RGB"))
        if got.shape != reference.shape or np.abs(got.astype(int) - reference).max() > 1:
            return False
    return True


def test_the_hostile_corpus_gets_results_or_clear_errors_and_changes_nothing(
    client, app_server, astronaut_path, tmp_path, reference
):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    link_dir = Path(upload(app_server, astronaut_path)).parent
    (link_dir / "link.png").symlink_to("/etc/passwd")  # the server has its own upload folder in the tests
    uploaded = upload(app_server, astronaut_path)
    outside = "Only files uploaded to this app"
    raw = {  # name: (endpoint, data, expected error text)
        "/etc/passwd without meta": ("edit", [{"path": "/etc/passwd"}, 2.0, True, ATTRIBUTE], outside),
        "/etc/shadow (no existence oracle)": ("edit", [{"path": "/etc/shadow"}, 2.0, True, ATTRIBUTE], outside),
        "a real image outside the uploads": ("edit", [{"path": str(astronaut_path)}, 2.0, True, ATTRIBUTE], outside),
        "a named pipe": ("edit", [{"path": str(fifo)}, 2.0, True, ATTRIBUTE], outside),
        "/dev/zero": ("edit", [{"path": "/dev/zero"}, 2.0, True, ATTRIBUTE], outside),
        "a symlink in the upload folder": ("edit", [{"path": str(link_dir / "link.png")}, 2.0, True, ATTRIBUTE], outside),
        "the upload folder itself": ("edit", [{"path": str(link_dir.parent)}, 2.0, True, ATTRIBUTE], outside),
        "/prepare with /etc/passwd": ("prepare", [{"path": "/etc/passwd"}, True, ATTRIBUTE], outside),
        "/prepare with a pipe": ("prepare", [{"path": str(fifo)}, True, ATTRIBUTE], outside),
        "a bare string path": ("edit", ["/etc/passwd", 2.0, True, ATTRIBUTE], "Upload a photo"),
        "strength NaN": ("edit", [{"path": uploaded}, float("nan"), True, ATTRIBUTE], "finite number"),
        "strength Infinity": ("edit", [{"path": uploaded}, float("inf"), True, ATTRIBUTE], "finite number"),
        "strength -Infinity": ("edit", [{"path": uploaded}, float("-inf"), True, ATTRIBUTE], "finite number"),
        "strength 1e9": ("edit", [{"path": uploaded}, 1e9, True, ATTRIBUTE], "out of range"),
        "strength -1": ("edit", [{"path": uploaded}, -1, True, ATTRIBUTE], "out of range"),
        "strength 'abc'": ("edit", [{"path": uploaded}, "abc", True, ATTRIBUTE], "finite number"),
        "strength None": ("edit", [{"path": uploaded}, None, True, ATTRIBUTE], "finite number"),
        "align 'yes'": ("edit", [{"path": uploaded}, 2.0, "yes", ATTRIBUTE], "align must be true or false"),
        "/prepare align 'yes'": ("prepare", [{"path": uploaded}, "yes", ATTRIBUTE], "align must be true or false"),
        "/prepare unknown attribute": ("prepare", [{"path": uploaded}, True, "Nope"], "Unknown attribute"),
        "/render strength NaN": ("render", [float("nan"), ATTRIBUTE], "finite number"),
        "/render strength 99": ("render", [99, ATTRIBUTE], "out of range: use -4 to 4"),
        "/render strength '2'": ("render", ["2", ATTRIBUTE], "finite number between -4 and 4, not '2'"),
        "/render strength null": ("render", [None, ATTRIBUTE], "finite number between -4 and 4, not nothing"),
        "/render strength 10^400": ("render", [10**400, ATTRIBUTE], "finite number"),
        "a refused FileData path": (
            "edit",
            [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, 2.0, True, ATTRIBUTE],
            outside,
        ),
        "a URL, which Gradio would download": (
            "edit",
            [{"path": "https://example.com/face.jpg", "meta": {"_type": "gradio.FileData"}}, 2.0, True, ATTRIBUTE],
            outside,
        ),
        "/prepare with text for the photo": ("prepare", ["/etc/passwd", True, ATTRIBUTE], "not of the kind it takes"),
        "/prepare with a number for the photo": ("prepare", [7, True, ATTRIBUTE], "not of the kind it takes"),
        "/prepare with a URL inside a list": ("prepare", [[{"path": "http://10.0.0.1/a.png"}], True, ATTRIBUTE], outside),
        "/edit with no arguments": ("edit", [], "takes 4 inputs and got 0"),
        "/edit with one argument": ("edit", [{"path": uploaded}], "takes 4 inputs and got 1"),
        "/prepare with no arguments": ("prepare", [], "takes 3 inputs and got 0"),
        "a long attribute is quoted short": ("edit", [{"path": uploaded}, 2.0, True, "x" * 5000], "'" + "x" * 38 + "…"),
    }
    for name, (endpoint, data, expected) in raw.items():
        kind, body = raw_call(app_server, endpoint, data)
        assert kind == "error" and expected in body["error"], (name, body)
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8" + bytes(26 * 2**20))
    with open(big, "rb") as file:  # over 25 MB: Gradio's upload route refuses it before it is stored
        refused = httpx.post(f"{app_server}gradio_api/upload", files={"files": ("big.jpg", file)}, timeout=60)
    assert refused.status_code == 413 and "a photo may be up to 25 MB" in refused.text, refused.text

    for name, (path, expected) in hostile_files(tmp_path, astronaut_path).items():
        if expected:
            for endpoint in ("/edit", "/prepare"):
                args = (handle_file(str(path)), 2.0) if endpoint == "/edit" else (handle_file(str(path)),)
                with pytest.raises(AppError, match=expected):
                    client.predict(*args, api_name=endpoint)
            continue
        less, more, *_, info = client.predict(handle_file(str(path)), 2.0, api_name="/edit")
        width, height = Image.open(more).size
        assert max(width, height) <= 2048 and Image.open(less).size == (width, height), name
        if name == "6000x4000":
            assert (width, height) == (2048, 1365)
        if name != "no face":
            assert info["faces_found"] >= 1, name
        if name == "EXIF-rotated":
            assert (width, height) == (512, 512)  # upright
    flipped = save(Image.open(astronaut_path).transpose(Image.Transpose.FLIP_LEFT_RIGHT), tmp_path / "after.png")
    after = client.predict(handle_file(str(flipped)), 2.0, api_name="/edit")  # new content: the whole pipeline runs again
    assert same_pictures(after[:6], reference(flipped))


def test_eight_clients_times_five_edits_all_get_complete_correct_files(app_server, astronaut_path, tmp_path, reference):
    face = Image.open(astronaut_path).convert("RGB")
    photos = [save(face.rotate(k - 4, fillcolor=(128, 128, 128)), tmp_path / f"photo_{k}.png") for k in range(8)]
    expected = [reference(photo) for photo in photos]  # 8 distinct photos: the server aligns and encodes concurrently
    failures: list[str] = []

    def worker(k: int) -> None:
        client = Client(app_server, verbose=False)
        for call in range(5):
            photo = (k + call) % 8
            try:
                files = client.predict(handle_file(str(photos[photo])), 2.0, api_name="/edit")[:6]
                if not same_pictures(files, expected[photo]):
                    failures.append(f"client {k} call {call}: a file differs from the reference or is cut off")
            except Exception as err:  # a cut-off download raises here
                failures.append(f"client {k} call {call}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not failures, failures[:5]


def test_an_eps_program_uploaded_as_a_jpeg_is_removed_unrun_and_answered(app_server, tmp_path):
    eps = tmp_path / "face.jpg"  # Pillow would hand this to Ghostscript; 10^9 turns of the loop would take minutes
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 1 1000000000 {pop} for\n")
    stored = upload(app_server, eps)
    assert not Path(stored).exists()  # removed as soon as it was stored: only the six formats stay on disk
    started = time.monotonic()
    kind, body = raw_call(app_server, "edit", [{"path": stored}, 2.0, True, ATTRIBUTE])
    assert kind == "error" and "not an image we can read: the accepted formats are JPEG, PNG" in body["error"]
    assert time.monotonic() - started < 10


def test_uploads_that_are_not_images_leave_the_disk_at_once(app_server, tmp_path):
    junk = tmp_path / "junk.png"
    stored = []
    for k in range(10):
        junk.write_bytes(np.random.default_rng(k).bytes(2 * 2**20))
        stored.append(upload(app_server, junk))
    assert not any(Path(path).exists() for path in stored)
    assert Path(upload(app_server, ROOT / "assets" / "examples" / "astronaut.jpg")).exists()  # a photo stays


def test_a_result_stays_fetchable_while_other_clients_edit(app_server, astronaut_path, tmp_path):
    kind, first = raw_call(app_server, "edit", [{"path": upload(app_server, astronaut_path)}, 2.0, True, ATTRIBUTE])
    assert kind == "complete"
    paths = [item["path"] for item in first[0][:6]]  # gr.api answers its tuple as one output
    face = Image.open(astronaut_path).convert("RGB")
    others = [save(face.rotate(k + 1), tmp_path / f"other_{k}.png") for k in range(3)]

    def edit_many(k: int) -> None:
        client = Client(app_server, verbose=False)
        for call in range(5):
            client.predict(handle_file(str(others[(k + call) % 3])), 1.0, api_name="/edit")

    threads = [threading.Thread(target=edit_many, args=(k,)) for k in range(3)]  # 15 edits, 90 files, by others
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for path in paths:  # what the first client was promised is all still there, complete
        answer = httpx.get(f"{app_server}gradio_api/file={path}", timeout=30)
        assert answer.status_code == 200, (path, answer.status_code)
        Image.open(io.BytesIO(answer.content)).load()


def test_an_endpoint_number_that_does_not_exist_is_answered_not_crashed(app_server):
    answer = join(app_server, 99999, [], uuid.uuid4().hex)  # Gradio's own lookup raised KeyError: a bare 500
    assert answer.status_code == 404 and "no endpoint number 99999" in answer.text
    assert httpx.get(f"{app_server}config").status_code == 200  # and the server serves on


def test_one_session_gets_a_bounded_share_of_the_queue_and_others_are_served(app_server, astronaut_path, tmp_path):
    face = Image.open(astronaut_path).convert("RGB").resize((1536, 1536))
    photos = [upload(app_server, save(face.rotate(k * 7 + 3), tmp_path / f"flood_{k}.png")) for k in range(20)]
    edit = endpoint_index(app_server, "edit")
    flood = uuid.uuid4().hex
    answers = [join(app_server, edit, [{"path": p}, 2.0, True, ATTRIBUTE], flood) for p in photos]  # new photos: slow jobs
    refused = [a for a in answers if a.status_code != 200]
    assert len(answers) - len(refused) <= 8 and len(refused) >= 12  # 6 may wait or run (one or two may finish meanwhile)
    assert all(a.status_code == 429 and "Too many requests at once from this page" in a.text for a in refused)
    other = Client(app_server, verbose=False)  # another visitor is not refused, and is served
    *_, info = other.predict(handle_file(str(astronaut_path)), 1.0, api_name="/edit")
    assert info["faces_found"] == 1
    accepted = [a.json()["event_id"] for a in answers if a.status_code == 200]
    assert all(m["success"] for m in completed(app_server, flood, *accepted))  # the share was served, not dropped


def test_one_address_gets_a_bounded_share_of_the_queue(app_server, astronaut_path, tmp_path):
    face = Image.open(astronaut_path).convert("RGB").resize((1536, 1536))
    photos = [upload(app_server, save(face.rotate(-k * 7 - 3), tmp_path / f"address_{k}.png")) for k in range(24)]
    edit = endpoint_index(app_server, "edit")
    sessions = [uuid.uuid4().hex for _ in photos]
    answers = [join(app_server, edit, [{"path": p}, 2.0, True, ATTRIBUTE], s) for p, s in zip(photos, sessions, strict=True)]
    refused = [a for a in answers if a.status_code != 200]
    assert len(refused) >= 6 and all("Too many requests at once from your address" in a.text for a in refused)
    for session, answer in zip(sessions, answers, strict=True):  # the share was served, and the server is idle again
        if answer.status_code == 200:
            assert completed(app_server, session, answer.json()["event_id"])[0]["success"]


def test_the_strip_is_made_once_per_upload_even_when_called_directly(app_server, astronaut_path):
    dependencies = httpx.get(f"{app_server}config").json()["dependencies"]
    prepare = endpoint_index(app_server, "prepare")
    strip = next(d["id"] for d in dependencies if d.get("api_visibility") == "private")
    session = uuid.uuid4().hex
    photo = {"path": upload(app_server, astronaut_path), "meta": {"_type": "gradio.FileData"}}
    prepared = join(app_server, prepare, [photo, True, ATTRIBUTE], session).json()["event_id"]
    assert completed(app_server, session, prepared)[0]["success"]
    first = join(app_server, strip, [None, ATTRIBUTE], session).json()["event_id"]  # what the page chains after it
    assert completed(app_server, session, first)[0]["success"]
    again = join(app_server, strip, [None, ATTRIBUTE], session).json()["event_id"]  # nine more edits, asked directly
    (answer,) = completed(app_server, session, again)
    assert not answer["success"] and "made once, after each upload" in answer["output"]["error"]


def test_request_bodies_are_bounded_before_they_are_parsed(app_process):
    url = app_process.url
    before = app_process.rss_mb()
    huge = b'{"data": [' + b"1," * 30_000_000 + b"1]}"  # 60 MB: a million arguments, sixty times over
    answer = httpx.post(f"{url}gradio_api/call/edit", content=huge, headers={"Content-Type": "application/json"}, timeout=60)
    assert answer.status_code == 413 and "arguments may be up to 64 KB" in answer.json()["detail"]
    attribute = json.dumps({"data": [None, 2.0, True, "x" * (60 * 2**20)]})
    answer = httpx.post(f"{url}gradio_api/call/edit", content=attribute, headers={"Content-Type": "application/json"}, timeout=60)
    assert answer.status_code == 413

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(100):
            yield b"1," * 2**14

    answer = httpx.post(f"{url}gradio_api/call/edit", content=chunks(), headers={"Content-Type": "application/json"}, timeout=60)
    assert answer.status_code == 413
    with socket.create_connection((url.split("//")[1].split(":")[0], int(url.rsplit(":", 1)[1].strip("/")))) as raw:
        raw.sendall(  # a small Content-Length, and chunks that h11 follows instead
            b"POST /gradio_api/call/edit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (2**14, b"1" * 2**14) for _ in range(8))
        )
        raw.settimeout(30)
        assert raw.recv(100).startswith(b"HTTP/1.1 413")
    direct = httpx.post(f"{url}gradio_api/run/edit", json={"data": [None, 2.0, True, "Smiling"]}, timeout=30)
    assert direct.status_code != 200  # the REST route that would skip the queue (and its shares) is closed
    assert app_process.rss_mb() - before < 100


def test_a_client_that_never_finishes_its_headers_is_cut_off(app_server):
    host, port = app_server.split("//")[1].strip("/").split(":")
    slow = [socket.create_connection((host, int(port))) for _ in range(8)]
    for connection in slow:
        connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        connection.settimeout(60)
    assert httpx.get(app_server, timeout=10).status_code == 200  # others are served meanwhile
    started = time.monotonic()
    assert all(connection.recv(100) == b"" for connection in slow)  # closed by the server
    assert time.monotonic() - started < 30  # HEADERS_DEADLINE_S (20 s) and one watch period


def test_the_photo_cache_bounds_memory_for_huge_flat_photos(app_process, tmp_path):
    """40 flat 2048x2048 PNGs of a few KB each, align off, used to take the server from 1.2 to 2.8 GB (stopped there)."""
    from web.app import PHOTO_CACHE_BYTES

    client = Client(app_process.url, verbose=False)
    before = app_process.rss_mb()
    peak = before
    for k in range(28):  # 2 x 12.6 MB kept per photo: 512 MB holds 20
        photo = save(Image.new("RGB", (2048, 2048), (k * 9 % 256, 120, 200)), tmp_path / f"flat_{k}.png")
        client.predict(handle_file(str(photo)), 2.0, False, api_name="/edit")
        peak = max(peak, app_process.rss_mb())
    assert peak - before < PHOTO_CACHE_BYTES / 2**20 + 400, (before, peak)
