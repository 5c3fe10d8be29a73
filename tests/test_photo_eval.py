"""The whole-photo evaluation reads its folders from the model's split.json, whatever the folder is called."""

import json

import numpy as np
import pytest
from conftest import SMOKE_TRAIN, write_celeba
from PIL import Image, ImageEnhance

from evaluation.judge import main as judge_main
from evaluation.photos import choose
from evaluation.photos import main as photo_eval_main
from train.train import main as train_main
from train.vectors import main as vectors_main


def astronaut_folder(root, astronaut_path, count: int):
    """A CelebA-layout folder named `celeba` whose photos are the astronaut in CelebA's framing (MTCNN finds her)."""
    write_celeba(root, count)
    face = Image.open(astronaut_path).convert("RGB").crop((130, 20, 362, 303)).resize((178, 218))
    for i, path in enumerate(sorted((root / "img_align_celeba").iterdir())):
        ImageEnhance.Brightness(face).enhance(0.8 + 0.4 * i / count).save(path, quality=90)
    return root


def test_a_folder_named_celeba_is_edited_and_a_part_without_photos_says_so(astronaut_path, tmp_path):
    data_dir = astronaut_folder(tmp_path / "celeba", astronaut_path, 24)
    data = ["--data", str(data_dir), "--cache-dir", str(tmp_path / "cache")]
    run = train_main([*data, "--out", str(tmp_path / "run"), "--max-steps", "1", "--validation-fraction", "0.2", *SMOKE_TRAIN])
    vectors_main(["--model", str(run), *data])
    judge_main(["--model", str(run), *data, "--out", str(tmp_path / "judge"), "--epochs", "1", "--batch-size", "8"])
    common = ["--model", str(run), "--judge", str(tmp_path / "judge"), "--data", str(data_dir), "--part", "validation"]
    report = photo_eval_main([*common, "--limit", "2"])
    assert report["folders"] == ["celeba"] and report["folders_left_out"] == {}
    assert report["photos"] == 2 and np.isfinite(report["detail_ratio_median"]) and report["outside_unchanged"]
    looked = photo_eval_main([*common, "--limit", "2", "--look", str(tmp_path / "look")])
    (grid,) = looked["grids"]
    assert Image.open(grid).size == (3 * 240, 2 * 180)  # less / photo / more, a row per photo with a face
    with pytest.raises(SystemExit, match="No photos to edit: the validation part has none .*left out: celeba"):
        photo_eval_main([*common, "--skip-folder", "celeba"])
    assert json.loads((run / "model" / "split.json").read_text())["validation"][0].startswith("celeba/")


def summary(flips: float, realism: float, identity: float = 0.99) -> dict:
    """A row of the selection table with what `choose` reads."""
    return {
        "independent_judge": {"flip": {"plus": flips, "minus": flips}},
        "realism": {"mouth": {"more": realism, "less": realism}},
        "identity_kept": identity,
        "detail_ratio_median": 1.0,
        "colour_shift_max": 2.0,
    }


def test_choose_keeps_the_holds_first_then_counts_the_judged_targets_met_then_the_margin():
    table = {
        "meets the flips": {3.0: summary(0.92, 0.99)},
        "better realism, fewer flips": {3.0: summary(0.85, 0.95)},  # its worst margin (-0.25) beats -0.29
        "loses the person": {3.0: summary(0.99, 0.60, identity=0.90)},
    }
    assert choose(table) == ("meets the flips", 3.0, False)
    del table["meets the flips"]
    assert choose(table) == ("better realism, fewer flips", 3.0, False)
    table["every target"] = {2.5: summary(0.91, 0.69)}
    assert choose(table) == ("every target", 2.5, True)
