"""A public Space gets hostile requests: every odd or malicious input over HTTP ends in a correct result or a
clear error naming the problem, no file outside the uploads is ever read, and the server keeps serving."""

import io
import json
import os
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import ROOT
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

ATTRIBUTE = "Smiling"


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server, verbose=False)


def raw_call(url: str, endpoint: str, data: list) -> tuple[str, dict | list]:
    """POST /gradio_api/call/<endpoint> with any JSON (NaN included), then read the event stream's last event."""
    posted = httpx.post(
        f"{url}gradio_api/call/{endpoint}",
        content=json.dumps({"data": data}),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    event_id = posted.json()["event_id"]
    kind = None
    with httpx.stream("GET", f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                return kind, json.loads(line[5:])
    raise AssertionError("the event stream ended without a result")


def upload(url: str, path: Path) -> str:
    """Upload through Gradio's own upload route, as a browser does; returns the server-side path."""
    with open(path, "rb") as file:
        return httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, file)}, timeout=60).json()[0]


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
        "/render strength 99": ("render", [99, ATTRIBUTE], "greater than maximum value 4"),
    }
    for name, (endpoint, data, expected) in raw.items():
        kind, body = raw_call(app_server, endpoint, data)
        assert kind == "error" and expected in body["error"], (name, body)
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8" + bytes(26 * 2**20))
    with open(big, "rb") as file:  # over 25 MB: Gradio's upload route refuses it before it is stored
        refused = httpx.post(f"{app_server}gradio_api/upload", files={"files": ("big.jpg", file)}, timeout=60)
    assert refused.status_code == 413 and "size" in refused.text, refused.text

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
