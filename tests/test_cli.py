import subprocess
import sys

import numpy as np
from conftest import ROOT
from PIL import Image


def run_cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "vae", "edit", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300, **kwargs
    )


def test_cli_writes_whole_photo_less_more_strip_and_gif(astronaut_path, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    namesake = tmp_path / "other" / "astronaut.png"
    namesake.parent.mkdir()
    Image.open(astronaut_path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(namesake)
    done = run_cli(astronaut_path, bad, namesake, "--strength", "2", "--out", tmp_path / "out")
    assert done.returncode == 1  # one photo could not be used
    assert "bad.jpg: skipped" in done.stderr and "not an image" in done.stderr
    out = tmp_path / "out"
    less, more = (np.asarray(Image.open(out / f"astronaut_{side}.png")) for side in ("less", "more"))
    assert less.shape == more.shape == (512, 512, 3)  # the whole photo, at its own size
    assert not np.array_equal(less, more)
    frame = Image.open(out / "astronaut_strip.png")
    assert frame.width > 6 * frame.height  # 7 frames side by side
    assert Image.open(out / "astronaut_strip.gif").n_frames == 12
    flipped = np.asarray(Image.open(out / "astronaut_2_more.png"))  # the namesake's results kept their own name
    assert np.abs(flipped[:, ::-1].astype(int) - more).mean() < 2 and "Wrote 2 result set(s)" in done.stdout


def test_cli_reports_a_missing_model_and_a_bad_attribute_without_a_traceback(astronaut_path, tmp_path):
    done = run_cli(astronaut_path, "--model", tmp_path, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert done.returncode == 2 and "incomplete" in done.stderr
    done = run_cli(astronaut_path, "--attribute", "NOPE", "--out", tmp_path)
    assert done.returncode == 2 and "Unknown attribute 'NOPE'" in done.stderr and "Traceback" not in done.stderr
    done = run_cli(astronaut_path, "--strength", "nan", "--out", tmp_path)
    assert done.returncode == 2 and "finite number" in done.stderr


def test_cli_says_no_such_folder_for_a_mistyped_local_model_path(astronaut_path, tmp_path):
    done = run_cli(astronaut_path, "--model", tmp_path / "runs" / "smle" / "model", "--out", tmp_path)
    assert done.returncode == 2 and "no such folder" in done.stderr and "Repo id" not in done.stderr
