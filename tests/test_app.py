"""The real app over HTTP with gradio_client: whole-photo outputs, the strength axis, caching, the page's API."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server, verbose=False)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def edit(client, photo, strength, **kwargs):
    return client.predict(handle_file(str(photo)), strength, api_name="/edit", **kwargs)


def test_edit_returns_the_whole_photo_less_and_more(client, astronaut_path):
    less, more, recon, crop, raw_less, raw_more, info = edit(client, astronaut_path, 2.0)
    photo = pixels(astronaut_path)
    for path in (less, more):
        assert Image.open(path).size == (512, 512)  # the person's own photo, at its own resolution
    for path in (recon, crop, raw_less, raw_more):
        assert Image.open(path).size == (128, 128)  # what the model sees and draws
    assert info["faces_found"] == 1 and info["size"] == [512, 512] and info["attribute"].startswith("Smiling")
    for path in (less, more):
        changed = (pixels(path) != photo).any(2)
        ys, xs = np.nonzero(changed)
        assert 0.005 < changed.mean() < 0.15  # the face changed, not the picture
        assert 150 < xs.mean() < 300 and 60 < ys.mean() < 220  # where the astronaut's face is
        assert not changed[:, :100].any() and not changed[350:].any()  # background, suit: byte for byte the photo
    assert np.abs(pixels(less) - pixels(more)).mean() > 0.1


def test_strength_zero_gives_back_the_photo_itself(client, astronaut_path):
    less, more, *_ = edit(client, astronaut_path, 0.0)
    assert np.array_equal(pixels(less), pixels(astronaut_path)) and np.array_equal(pixels(more), pixels(astronaut_path))


def test_the_change_grows_with_strength(client, astronaut_path):
    photo = pixels(astronaut_path)
    distances = [np.abs(pixels(edit(client, astronaut_path, s)[1]) - photo).mean() for s in (0.5, 1.5, 3.0)]
    assert distances[0] < distances[1] < distances[2]


def test_a_new_strength_does_not_re_encode_the_photo(client, tmp_path, astronaut_path):
    photo = tmp_path / "flipped.png"
    Image.open(astronaut_path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photo)  # content new to the server
    assert not edit(client, photo, 1.0)[-1]["reused_encoding"]
    assert edit(client, photo, 2.5)[-1]["reused_encoding"]
    assert not edit(client, photo, 0.5, align=False)[-1]["reused_encoding"]  # another alignment setting: a new encoding


def test_other_attributes_and_an_unknown_one(client, astronaut_path):
    _, more, *_, info = edit(client, astronaut_path, 2.0, attribute="Eyeglasses")
    assert info["attribute"] == "Eyeglasses" and np.abs(pixels(more) - pixels(astronaut_path)).mean() > 0.1
    with pytest.raises(AppError, match="Unknown attribute 'Nonexistent'"):
        edit(client, astronaut_path, 2.0, attribute="Nonexistent")


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P"])
def test_odd_modes_still_find_the_face(client, tmp_path, astronaut_path, mode):
    path = tmp_path / f"astronaut_{mode}.{'tiff' if mode == 'CMYK' else 'png'}"
    Image.open(astronaut_path).convert(mode).save(path)
    less, *_, info = edit(client, path, 2.0)
    assert Image.open(less).size == (512, 512) and info["faces_found"] == 1


def test_photo_without_a_face_falls_back_with_a_note(client, tmp_path):
    path = tmp_path / "sky.png"
    Image.new("RGB", (300, 200), (90, 140, 220)).save(path)
    less, *_, info = edit(client, path, 2.0)
    assert info["faces_found"] == 0 and "No face" in info["notes"][0] and Image.open(less).size == (300, 200)


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


def test_page_flow_prepare_once_then_download_any_strength(app_server, astronaut_path):
    session = Client(app_server, verbose=False)  # one client = one browser session with its own state
    live, less, more, crop, recon, raw_less, raw_more, raw_live = session.predict(
        handle_file(str(astronaut_path)), api_name="/prepare"
    )
    frames = json.loads(live)
    assert frames["strengths"][0] == -4.0 and frames["strengths"][-1] == 4.0 and 0.0 in frames["strengths"]
    assert len(frames["frames"]) == len(frames["strengths"]) >= 17
    assert all(uri.startswith("data:image/jpeg;base64,") for uri in frames["frames"])
    assert Image.open(more).size == (512, 512) and Image.open(recon).size == (128, 128)
    photo = session.predict(-3.5, api_name="/render")
    assert Image.open(photo).size == (512, 512)
    assert np.abs(pixels(photo) - pixels(astronaut_path)).mean() > np.abs(pixels(less) - pixels(astronaut_path)).mean()
    other = Client(app_server, verbose=False)
    with pytest.raises(AppError, match="Upload a photo"):
        other.predict(2.0, api_name="/render")  # state is per session


def test_the_app_logs_its_cpu_and_how_openmp_waits_once_at_start(app_process):
    from vae.runtime import OPENMP_SPIN_COUNT, OPENMP_WAIT_VARIABLES

    lines = [line for line in app_process.log.read_text().splitlines() if " app: CPU: " in line]
    assert len(lines) == 1 and "'flags': {'avx2'" in lines[0]
    preset = any(name in os.environ for name in OPENMP_WAIT_VARIABLES)  # then the app keeps what it was given
    assert lines[0].endswith("(from the environment)" if preset else f"; OpenMP: GOMP_SPINCOUNT={OPENMP_SPIN_COUNT}")


def test_a_server_stopped_while_it_starts_exits_promptly_and_removes_its_files(tmp_path):
    """SIGTERM at any moment of the start (imports, the model, MTCNN warming up in a thread, the page just up)."""
    from bench.appserver import app_environment

    env, _ = app_environment(str(tmp_path / "uploads"))
    env["TMPDIR"] = str(tmp_path)  # where the app makes its work folder
    log = tmp_path / "app.log"
    for delay in (3.0, 6.0, 9.0):
        with open(log, "w") as out:
            app = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        time.sleep(delay)
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()
            pytest.fail(f"the app did not stop within 30 s of SIGTERM, {delay} s into its start")
        assert app.returncode in (0, -signal.SIGTERM), log.read_text()[-2000:]  # -15: stopped before main()
    assert not list(tmp_path.glob("smile-*"))  # each run's examples and results were removed
