"""The real app over HTTP with gradio_client: outputs, the strength axis, caching, bad input."""
import io

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server, verbose=False)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def edit(client, photo, strength, **kwargs):
    return client.predict(handle_file(str(photo)), strength, api_name="/edit", **kwargs)


def test_edit_returns_every_output(client, astronaut_path):
    less, more, recon, crop, in_photo, info = edit(client, astronaut_path, 2.0)
    for path in (less, more, recon, crop):
        assert Image.open(path).size == (128, 128)
    assert Image.open(in_photo).size == (512, 512)  # the astronaut photo itself, with the face pasted back
    assert info["faces_found"] == 1 and info["attribute"].startswith("Smiling")  # the model's default smile vector
    a, b, c = pixels(less), pixels(recon), pixels(more)
    assert np.abs(a - b).mean() > 1 and np.abs(c - b).mean() > 1 and np.abs(a - c).mean() > 1


def test_distance_from_the_reconstruction_grows_with_strength(client, astronaut_path):
    distances = []
    for strength in (0.5, 1.5, 3.0):
        _, more, recon, *_ = edit(client, astronaut_path, strength)
        distances.append(np.abs(pixels(more) - pixels(recon)).mean())
    assert distances[0] < distances[1] < distances[2]


def test_strength_zero_returns_the_reconstruction(client, astronaut_path):
    less, more, recon, *_ = edit(client, astronaut_path, 0.0)
    assert np.array_equal(pixels(less), pixels(recon)) and np.array_equal(pixels(more), pixels(recon))


def test_a_new_strength_does_not_re_encode_the_photo(client, tmp_path, astronaut_path):
    photo = tmp_path / "flipped.png"
    Image.open(astronaut_path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photo)  # content new to the server
    before = edit(client, photo, 1.0)[-1]["photos_encoded"]
    after = edit(client, photo, 2.5)[-1]["photos_encoded"]
    assert after == before
    edit(client, astronaut_path, 1.0, align=False)  # a different alignment setting is a new encoding
    assert edit(client, photo, 0.5)[-1]["photos_encoded"] == before + 1


def test_other_attributes(client, astronaut_path):
    _, more, recon, *_, info = edit(client, astronaut_path, 2.0, attribute="Eyeglasses")
    assert info["attribute"] == "Eyeglasses" and np.abs(pixels(more) - pixels(recon)).mean() > 1
    with pytest.raises(AppError):
        edit(client, astronaut_path, 2.0, attribute="Nonexistent")


def bad_files(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(buffer, "JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[:1500])
    huge = tmp_path / "huge.png"
    Image.new("L", (9000, 9000)).save(huge)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    return {"not an image": text, "truncated": truncated, "too large": huge, "empty": empty}


def test_bad_inputs_get_clean_errors_and_the_server_keeps_serving(client, tmp_path, astronaut_path):
    for expected, path in bad_files(tmp_path).items():
        with pytest.raises(AppError, match=expected):
            edit(client, path, 2.0)
    assert edit(client, astronaut_path, 1.0)[-1]["faces_found"] == 1


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P"])
def test_odd_modes_and_no_face(client, tmp_path, astronaut_path, mode):
    path = tmp_path / f"astronaut_{mode}.{'tiff' if mode == 'CMYK' else 'png'}"
    Image.open(astronaut_path).convert(mode).save(path)
    less, *_, info = edit(client, path, 2.0)
    assert Image.open(less).size == (128, 128) and info["faces_found"] == 1


def test_photo_without_a_face_falls_back_with_a_note(client, tmp_path):
    path = tmp_path / "sky.png"
    Image.new("RGB", (300, 200), (90, 140, 220)).save(path)
    *_, in_photo, info = edit(client, path, 2.0)
    assert info["faces_found"] == 0 and "No face" in info["notes"][0] and in_photo is None


@pytest.mark.parametrize("model", ["/nonexistent/model", "tests"])
def test_a_missing_or_broken_model_stops_the_app_with_one_clear_message(model):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "SMILE_MODEL": model, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    done = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "SMILE cannot start" in done.stderr and "Traceback" not in done.stderr


def test_page_flow_prepare_once_then_render_per_slider_move(app_server, astronaut_path):
    session = Client(app_server, verbose=False)  # one client = one browser session with its own state
    _, recon, less, more, in_photo = session.predict(handle_file(str(astronaut_path)), api_name="/prepare")
    assert Image.open(recon).size == (128, 128) and Image.open(in_photo).size == (512, 512)
    less2, more2, _ = session.predict(3.5, api_name="/render")
    assert np.abs(pixels(more2) - pixels(recon)).mean() > np.abs(pixels(more) - pixels(recon)).mean()
    other = Client(app_server, verbose=False)
    assert other.predict(2.0, api_name="/render") == (None, None, None)  # state is per session
