"""The server-side guards of the web package and the editor's settings check, on real files."""

import io
import json
import os
import socket
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from conftest import ROOT
from PIL import Image
from starlette.requests import Request

from vae.editor import SmileEditor
from vae.hub import ModelLoadError
from vae.image_file import ImageError
from vae.settings import EditorSettings, SettingsError, TransferSettings
from web.photos import PreparedCache
from web.server import limits
from web.server.fair_queue import client_address
from web.server.guards import read_upload
from web.server.results import ResultFiles, ResultsFull
from web.server.uploads import UploadStore


@pytest.fixture
def uploads(tmp_path) -> Path:
    root = tmp_path / "uploads"
    (root / "abc").mkdir(parents=True)
    (root / "abc" / "photo.png").write_bytes(b"x" * 100)
    return root


def test_an_uploaded_file_is_read(uploads):
    assert read_upload(str(uploads / "abc" / "photo.png"), uploads) == b"x" * 100


@pytest.mark.parametrize("target", ["/etc/passwd", "/dev/zero", "../outside.png", ""])
def test_paths_outside_the_upload_folder_are_refused_before_opening(uploads, target):
    with pytest.raises(ImageError, match="Only files uploaded|Upload a photo"):
        read_upload(target if not target.startswith("..") else str(uploads / target), uploads)


def test_links_pipes_folders_and_large_files_are_refused(uploads):
    (uploads / "abc" / "link.png").symlink_to("/etc/passwd")
    (uploads / "abc" / "inside.png").symlink_to(uploads / "abc" / "photo.png")  # even a link that stays inside
    os.mkfifo(uploads / "abc" / "pipe.png")
    for link in ("link.png", "inside.png"):
        with pytest.raises(ImageError, match="Only files uploaded"):
            read_upload(str(uploads / "abc" / link), uploads)
    with pytest.raises(ImageError, match="not a regular file"):
        read_upload(str(uploads / "abc" / "pipe.png"), uploads)  # returns at once: opened non-blocking
    with pytest.raises(ImageError, match="not a regular file"):
        read_upload(str(uploads / "abc"), uploads)
    with pytest.raises(ImageError, match="too large"):
        read_upload(str(uploads / "abc" / "photo.png"), uploads, max_bytes=99)
    with pytest.raises(ImageError, match="no longer available"):
        read_upload(str(uploads / "abc" / "gone.png"), uploads)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_results_get_fresh_names_and_live_until_their_lifetime_whatever_others_ask(tmp_path):
    clock = Clock()
    results = ResultFiles(tmp_path / "results", lifetime_s=600, clock=clock)
    pixels = np.zeros((8, 8, 3), np.uint8)
    paths = [results.image(pixels, "less") for _ in range(50)]  # many requests: none removes a young file
    assert len(set(paths)) == 50 and all(Path(p).exists() for p in paths)  # the same content never shares a file
    assert np.array_equal(np.asarray(Image.open(paths[-1])), pixels)
    clock.now = 599.0
    results.image(pixels, "more")
    assert all(Path(p).exists() for p in paths)
    clock.now = 600.0
    last = results.image(pixels, "more")  # the next write removes what has lived its lifetime
    assert not any(Path(p).exists() for p in paths) and Path(last).exists()
    assert results.bytes_held == 2 * os.path.getsize(last)


def test_results_refuse_new_work_rather_than_remove_live_files(tmp_path):
    clock = Clock()
    results = ResultFiles(tmp_path / "results", lifetime_s=600, max_bytes=1000, clock=clock)
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)  # ~800 bytes as a PNG
    first = results.image(noise, "less")
    results.image(noise, "more")
    with pytest.raises(ResultsFull, match="try again in a minute"):
        results.image(noise, "less")
    assert Path(first).exists()
    clock.now = 601.0
    assert Path(results.image(noise, "less")).exists()  # served again once the old ones have expired


def test_one_address_cannot_take_the_whole_results_budget(tmp_path):
    clock = Clock()
    results = ResultFiles(tmp_path / "results", lifetime_s=600, max_bytes=4000, max_bytes_each=1000, clock=clock)
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)  # ~800 bytes as a PNG
    results.image(noise, "less", "10.0.0.66")
    results.image(noise, "more", "10.0.0.66")
    with pytest.raises(ResultsFull, match="You hold as many results as one visitor may keep"):
        results.image(noise, "less", "10.0.0.66")
    assert Path(results.image(noise, "less", "10.0.0.1")).exists()  # another visitor is still served
    clock.now = 601.0
    assert Path(results.image(noise, "less", "10.0.0.66")).exists()  # and the first once its results expired


def test_uploads_that_are_not_images_are_removed_and_the_rest_bounded_oldest_first(tmp_path):
    def stored(name: str, content: bytes) -> str:
        folder = tmp_path / name  # Gradio gives every upload a folder of its own
        folder.mkdir()
        (folder / "upload.jpg").write_bytes(content)
        return str(folder / "upload.jpg")

    photo = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(photo, format="PNG")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 1 1000000000 {pop} for\n"
    store = UploadStore(max_bytes=2 * len(photo.getvalue()))
    empty, program, noise = stored("empty", b""), stored("eps", eps), stored("noise", os.urandom(5000))
    photos = [stored(f"photo{k}", photo.getvalue()) for k in range(3)]
    store.add([empty, program, noise, *photos])
    assert store.why_refused(empty) == "The file is empty."
    for path in (program, noise):
        assert not Path(path).exists() and not Path(path).parent.exists()
        assert "not an image we can read: the accepted formats are JPEG, PNG" in store.why_refused(path)
    assert [Path(p).exists() for p in photos] == [False, True, True]  # two fit: the oldest went
    assert store.why_refused(photos[1]) is None and store.kept_bytes == 2 * len(photo.getvalue())


def test_a_client_flooding_the_uploads_pushes_out_its_own_files_not_a_visitors(tmp_path):
    photo = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(photo, format="PNG")
    noise = io.BytesIO()  # a flood of larger photos from one address
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(noise, format="PNG")
    fake = noise.getvalue()
    paths = []
    for k, content in enumerate([photo.getvalue(), *[fake] * 6]):
        (tmp_path / f"u{k}").mkdir()
        paths.append(tmp_path / f"u{k}" / "upload.png")
        paths[-1].write_bytes(content)
    store = UploadStore(max_bytes=3 * len(fake))
    store.add([str(paths[0])], "10.0.0.1")  # the visitor, whose edit waits in the queue
    for path in paths[1:]:
        store.add([str(path)], "10.0.0.66")
    assert paths[0].exists(), "the visitor's upload was pushed out by another client's"
    assert [p.exists() for p in paths[1:]] == [False] * 4 + [True] * 2
    assert store.kept_bytes == len(photo.getvalue()) + 2 * len(fake) <= store.max_bytes


def png_header(width: int, height: int) -> bytes:
    """A PNG's signature and IHDR chunk claiming width x height, with no pixels: what a crafted upload sends."""
    body = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")


@pytest.mark.parametrize("size", [(30000, 30000), (8000, 6000)])  # over Pillow's own bomb limit, and over ours alone
def test_an_upload_whose_header_claims_too_many_pixels_is_removed_with_its_reason(tmp_path, size):
    folder = tmp_path / "bomb"
    folder.mkdir()
    junk = os.urandom(1000)
    (folder / "upload.png").write_bytes(png_header(*size) + len(junk).to_bytes(4, "big") + b"IDAT" + junk)
    store = UploadStore()
    store.add([str(folder / "upload.png")])  # raised DecompressionBombError (a 500) and left the file before
    assert not folder.exists() and store.kept_bytes == 0
    assert "too large" in store.why_refused(str(folder / "upload.png")) and "40 megapixels" in store.why_refused(
        str(folder / "upload.png")
    )


def test_the_same_upload_stored_twice_is_counted_once(tmp_path):
    folder = tmp_path / "sha"  # Gradio names an upload's folder by its content: the same file, the same path
    folder.mkdir()
    photo = folder / "photo.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(photo)
    store = UploadStore(max_bytes=3 * photo.stat().st_size)
    for _ in range(9):
        store.add([str(photo)])
    assert store.kept_bytes == photo.stat().st_size and photo.exists()


def request_from(client: str, forwarded: str | None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "headers": headers, "client": (client, 5000)})


@pytest.mark.parametrize(
    "forwarded, proxies, address",
    [
        (None, 0, "10.0.0.9"),
        ("6.6.6.6", 0, "10.0.0.9"),  # with no proxy in front, the header is the client's own word
        ("6.6.6.6, 1.2.3.4", 1, "1.2.3.4"),  # the entry the proxy appended, not what the client wrote before it
        ("1.2.3.4, 172.16.0.2", 2, "1.2.3.4"),
        (None, 1, "10.0.0.9"),
        ("2001:db8:1:2:aaaa::1", 1, "2001:db8:1:2::/64"),  # one subscriber's block is one visitor
        ("2001:db8:1:2:ffff:ee::9", 1, "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", 1, "2001:db8:1:3::/64"),
        ("::ffff:1.2.3.4", 1, "1.2.3.4"),  # an IPv4 client seen through an IPv6 socket
    ],
)
def test_the_client_address_is_the_one_the_trusted_proxy_saw(forwarded, proxies, address):
    assert client_address(request_from("10.0.0.9", forwarded), proxies) == address


@pytest.fixture
def deadline_server(monkeypatch):
    """A real uvicorn server with DeadlineH11Protocol and deadlines of a second; yields (host, port)."""
    monkeypatch.setattr(limits, "HEADERS_DEADLINE_S", 1.0)
    monkeypatch.setattr(limits, "BODY_DEADLINE_S", 1.0)
    monkeypatch.setattr(limits, "WATCH_EVERY_S", 0.2)

    async def hello(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(hello, host="127.0.0.1", port=port, http=limits.DeadlineH11Protocol, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize(
    "sent",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n",  # headers never finished
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf",  # a body never finished
    ],
)
def test_a_connection_stuck_sending_a_request_is_closed_after_its_deadline(deadline_server, sent):
    with socket.create_connection(deadline_server) as connection:
        connection.sendall(sent)
        connection.settimeout(10)
        started = time.monotonic()
        assert connection.recv(100) == b""  # closed, with no answer
        assert 0.9 < time.monotonic() - started < 3


def test_a_request_sent_in_time_is_answered_and_its_connection_kept(deadline_server):
    with socket.create_connection(deadline_server) as connection:
        connection.settimeout(10)
        for _ in range(3):  # each request on the kept connection gets a fresh deadline
            time.sleep(0.6)
            connection.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
            answer = b""
            while not answer.endswith(b"hello") and (part := connection.recv(1000)):
                answer += part
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")


def test_the_prepared_cache_reuses_by_content_and_bounds_its_bytes():
    class Photo:  # a stand-in for vae.editor.Prepared: the cache only reads its size
        def __init__(self, data: bytes) -> None:
            self.nbytes = len(data)

    cache = PreparedCache(lambda data, align: Photo(data), size=10, max_bytes=250)
    key, first, cached = cache.get(b"a" * 100, True)
    assert not cached and cache.get(b"a" * 100, True) == (key, first, True)
    assert not cache.get(b"a" * 100, False)[2]  # another alignment setting is another entry
    cache.get(b"b" * 100, True)  # 300 bytes kept > 250: the oldest goes
    assert cache.find(key) is None and len(cache.items) == 2


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"default_strength": "high"}', "default_strength must be a finite number"),
        ('{"default_strength": 9, "max_strength": 4}', "default_strength must be between 0 and 4"),
        ('{"strip_steps": 2.5}', "strip_steps must be a whole number"),
        ('{"transfer": {"mouth_gain": -1}}', "transfer.mouth_gain must be between"),
        ('{"transfer": {"residual_gain": 1.5}}', "transfer.residual_gain must be between 0 and 1"),
        ('{"transfer": {"lower_face": "yes"}}', "transfer.lower_face must be true or false"),
        ('{"colour": 1}', "unknown setting"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_a_bad_editor_json_stops_loading_with_a_message_naming_it(tmp_path, content, message):
    (tmp_path / "editor.json").write_text(content)
    with pytest.raises(SettingsError, match=message) as raised:
        EditorSettings.load(tmp_path)
    assert "editor.json" in str(raised.value)


def test_settings_are_checked_however_they_are_built(tmp_path):
    with pytest.raises(SettingsError, match="default_strength"):
        EditorSettings(default_strength=float("nan"))
    with pytest.raises(SettingsError, match="max_strength"):
        EditorSettings().replace(max_strength=0)
    settings = EditorSettings(default_attribute="Smiling", default_strength=3.0, transfer=TransferSettings(mouth_gain=0.5))
    settings.save(tmp_path)
    assert EditorSettings.load(tmp_path) == settings  # what evaluation writes is what the app reads
    assert EditorSettings.load(tmp_path / "nowhere") == EditorSettings()  # no editor.json: the defaults


def test_the_editor_refuses_a_default_attribute_it_has_no_vector_for(editor):
    with pytest.raises(SettingsError, match="not one of the model's vectors"):
        SmileEditor(editor.model, editor.vectors, EditorSettings(default_attribute="Nope"), editor.aligner)


def test_a_model_folder_whose_editor_json_names_a_missing_vector_does_not_load(tmp_path):
    for name in ("config.json", "model.safetensors", "attribute_vectors.npz"):
        os.symlink(ROOT / "assets" / name, tmp_path / name)
    (tmp_path / "editor.json").write_text('{"default_attribute": "Nope"}')
    with pytest.raises(ModelLoadError, match="not one of the model's vectors"):
        SmileEditor.from_pretrained(tmp_path)


@pytest.fixture(scope="module")
def editor() -> SmileEditor:
    return SmileEditor.from_pretrained(ROOT / "assets")


def test_the_shipped_settings_are_valid(editor):
    settings = json.loads((ROOT / "assets" / "editor.json").read_text())
    assert editor.settings.default_attribute == settings["default_attribute"] in editor.attributes
    assert editor.settings == EditorSettings.load(ROOT / "assets")


def test_strengths_must_be_finite_and_in_range(editor):
    assert editor.settings.max_strength == 4.0
    assert editor.check_strength(2) == 2.0 and editor.check_strength(-4.0, signed=True) == -4.0
    assert editor.check_strength(np.float32(2.5)) == 2.5 and editor.check_strength(np.int64(3)) == 3.0  # a script's numbers
    for bad in (float("nan"), float("inf"), np.float32("nan"), "2", None, True, np.bool_(True)):
        with pytest.raises(ValueError, match="finite number"):
            editor.check_strength(bad)
    for bad in (-0.5, 4.5):
        with pytest.raises(ValueError, match="out of range"):
            editor.check_strength(bad)


def test_gradio_telemetry_is_off_unless_asked_for(monkeypatch):
    from web.server.blocks import SmileBlocks
    from web.server.uploads import UploadStore

    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)  # Gradio's own default would be on
    assert SmileBlocks(uploads=UploadStore()).analytics_enabled is False
