import subprocess
import sys

from PIL import Image

from conftest import ROOT


def test_cli_writes_less_more_strip_and_gif(astronaut_path, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    done = subprocess.run([sys.executable, "-m", "vae", "edit", str(astronaut_path), str(bad), "--strength", "2",
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1  # one photo could not be used
    assert "bad.jpg: skipped" in done.stderr and "not an image" in done.stderr
    out = tmp_path / "out"
    assert Image.open(out / "astronaut_less.png").size == (128, 128)
    assert Image.open(out / "astronaut_strip.png").size == (7 * 128, 128)
    gif = Image.open(out / "astronaut_strip.gif")
    assert gif.n_frames == 12
    assert Image.open(out / "astronaut_in_photo.png").size == (512, 512)


def test_cli_reports_a_missing_model(astronaut_path, tmp_path):
    done = subprocess.run([sys.executable, "-m", "vae", "edit", str(astronaut_path), "--model", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert done.returncode == 2 and "incomplete" in done.stderr
