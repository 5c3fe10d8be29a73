"""The app's handlers in-process (no server): the same functions the HTTP tests reach through Gradio."""

import base64
import io
import json
import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from conftest import ROOT
from gradio.data_classes import FileData
from PIL import Image

from vae.editor import SmileEditor
from web.app import SmileApp, create_app


@pytest.fixture(scope="module")
def editor() -> SmileEditor:
    return SmileEditor.from_pretrained(ROOT / "assets")


@pytest.fixture
def app(editor, tmp_path) -> SmileApp:
    (tmp_path / "uploads").mkdir()
    return SmileApp(editor, tmp_path / "work", upload_root=lambda: str(tmp_path / "uploads"))


@pytest.fixture
def upload(tmp_path, astronaut_path) -> dict:
    """A payload as Gradio sends it: the path of a file inside the upload folder."""
    target = tmp_path / "uploads" / "abc" / "astronaut.jpg"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(astronaut_path, target)
    return {"path": str(target)}


def last(updates):
    """The page's final update of a /prepare (it yields a first look before it)."""
    *_, update = updates
    return update


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_prepare_sends_every_live_frame_and_the_photos(app, upload, astronaut_path):
    key, live, less, more, crop, recon, raw_less, raw_more, raw_live = last(app.prepare(upload, True, None))
    decoded = json.loads(raw_live)  # the model's own faces follow the slider too ("under the hood")
    assert decoded["strengths"] == json.loads(live)["strengths"] and len(decoded["frames"]) == len(decoded["strengths"])
    sizes = {Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size for uri in decoded["frames"]}
    assert sizes == {(128, 128)} and len(set(decoded["frames"])) == len(decoded["frames"])
    frames = json.loads(live)
    assert frames["strengths"] == app.frames and len(frames["frames"]) == len(app.frames) == 17
    assert Image.open(less).size == Image.open(more).size == (512, 512)
    assert {Image.open(p).size for p in (crop, recon, raw_less, raw_more)} == {(128, 128)}
    assert not np.array_equal(pixels(less), pixels(more)) and app.photos.find(key) is not None
    assert last(app.prepare(upload, True, None)).key == key and len(app.photos.items) == 1  # the same photo: encoded once


def frame_pixels(live: str) -> dict[float, np.ndarray]:
    """The live view's frames by strength, decoded from their data URIs."""
    value = json.loads(live)
    decoded = [pixels(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) for uri in value["frames"]]
    return dict(zip(value["strengths"], decoded, strict=True))


def test_a_first_look_comes_before_every_frame_and_shows_the_same_edits(app, upload):
    first, update = app.prepare(upload, True, None)
    assert first.key == update.key and first.less is None and first.decoded_frames == ""  # the last photo's are cleared
    assert json.loads(first.live_frames)["complete"] is False and json.loads(update.live_frames)["complete"] is True
    few, every = frame_pixels(first.live_frames), frame_pixels(update.live_frames)
    assert sorted(few) == [-3.0, 0.0, 3.0]  # -+ the default strength and the photo itself
    for strength, frame in few.items():  # the same pictures, within JPEG's rounding of two separate batches
        assert np.abs(frame - every[strength]).mean() < 0.5, strength
    assert np.abs(few[3.0] - few[0.0]).mean() > 0.5  # and they are edits


def test_render_and_strip_use_the_session_photo_without_encoding_again(app, upload, astronaut_path):
    key = last(app.prepare(upload, True, None)).key
    photo = app.render(key, -3.5, None)
    assert np.abs(pixels(photo) - pixels(astronaut_path)).mean() > 0.05
    assert np.array_equal(pixels(app.render(key, 0.0, None)), pixels(astronaut_path))  # 0 is the photo itself
    strip, gif = app.strip(key, None)
    assert Image.open(strip).width % 7 == 0 and Image.open(strip).width > 6 * Image.open(strip).height  # 7 frames
    assert Image.open(gif).n_frames == 12  # less -> more -> less
    with pytest.raises(gr.Error, match="Upload a photo"):
        app.render(None, 1.0, None)
    with pytest.raises(gr.Error, match="no longer in the server's memory"):
        app.render("0" * 64 + ":1", 1.0, None)


def test_a_photo_still_in_memory_takes_an_attribute_change_after_its_upload_file_is_gone(app, upload):
    key = last(app.prepare(upload, True, None)).key
    Path(upload["path"]).unlink()  # Gradio's cache lifetime, or the upload bound, removed it
    assert last(app.prepare(upload, True, "Smiling")).key == key
    with pytest.raises(gr.Error, match="no longer available"):  # never prepared unaligned: the file is needed
        last(app.prepare(upload, False, None))


def test_a_stale_strip_leaves_the_newer_photos_strip_owed(app, upload, tmp_path):
    first = last(app.prepare(upload, True, None)).key
    other = Path(upload["path"]).with_name("flipped.png")
    Image.open(upload["path"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    second = last(app.prepare({"path": str(other)}, True, None)).key  # a second upload overtook the first one's strip
    assert app.strip(first, None) == (gr.skip(), gr.skip())
    strip, gif = app.strip(second, None)
    assert Image.open(strip).width > Image.open(strip).height
    with pytest.raises(gr.Error, match="made once"):
        app.strip(second, None)


def test_edit_returns_files_and_info(app, upload):
    *files, info = app.edit(FileData(path=upload["path"]), 2.0)
    assert all(isinstance(f, FileData) for f in files) and Image.open(files[0].path).size == (512, 512)
    assert info["faces_found"] == 1 and info["strength"] == 2.0 and not info["reused_encoding"]
    assert app.edit(upload, 1.0, True, "Smiling")[-1]["reused_encoding"]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda app, up: app.edit({"path": "/etc/passwd"}, 2.0), "Only files uploaded"),
        (lambda app, up: app.edit(up, float("nan")), "finite number"),
        (lambda app, up: app.edit(up, 2.0, "yes"), "align must be true or false"),
        (lambda app, up: app.edit(up, 2.0, True, "Nope"), "Unknown attribute 'Nope'"),
        (lambda app, up: app.render(None, 9.0, None), "out of range"),
    ],
)
def test_bad_values_get_the_message_a_person_sees(app, upload, call, message):
    with pytest.raises(gr.Error, match=message):
        call(app, upload)


def test_create_app_builds_the_page_and_its_named_endpoints(editor, tmp_path):
    demo = create_app(editor, tmp_path)
    names = {dep.api_name for dep in demo.fns.values() if dep.api_name}
    assert {"prepare", "render", "edit"} <= names
    assert len(list(tmp_path.glob("prior_face_*.png"))) == 2  # the examples were written into the work folder only
