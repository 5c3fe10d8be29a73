"""The judge and evaluation steps: report pieces on hand-made inputs, then end to end on the synthetic dataset."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import SMOKE_TRAIN

from celeba.split import SplitRows
from evaluation.faces import ALPHAS, Faces, choose_default, edit_report, person_in_train, settle_default
from evaluation.faces import main as evaluate_main
from evaluation.judge import main as judge_main
from evaluation.report import merge_json
from train.train import main as train_main
from train.vectors import main as vectors_main
from vae.editor import SmileEditor
from vae.vectors import AttributeVectors

EVALUATE_5 = ["--faces", "5", "--update-model"]  # five faces per part: enough to fill every report field


def test_edit_report_conditions_flips_and_splits_by_cell_and_lighting():
    # 4 faces: male young, male old, female young, female old; dark, dark, mid, bright
    faces = Faces(
        np.zeros((4, 64), np.float32),
        np.array([1, 1, 0, 0], bool),
        np.array([1, 0, 1, 0], bool),
        {"dark": np.array([1, 1, 0, 0], bool), "mid": np.array([0, 0, 1, 0], bool), "bright": np.array([0, 0, 0, 1], bool)},
        [0.3, 0.6],
    )
    probs = np.full((len(ALPHAS), 4, 3), 0.5)
    zero, plus, minus = ALPHAS.index(0.0), ALPHAS.index(2.0), ALPHAS.index(-2.0)
    probs[zero, :, 0] = [0.1, 0.9, 0.2, 0.8]  # faces 0 and 2 judged non-smiling at alpha 0
    probs[plus, :, 0] = [0.7, 0.95, 0.3, 0.9]  # face 0 flips up, face 2 does not
    probs[minus, :, 0] = [0.05, 0.2, 0.1, 0.1]  # faces 1 and 3 flip down
    probs[plus, :, 1], probs[minus, :, 1] = [0.7, 0.3, 0.5, 0.5], [0.5, 0.5, 0.5, 0.6]
    report = edit_report(probs, faces, 2.0)
    everyone = report["flip_by_group"]["all"]
    assert (everyone["plus"]["rate"], everyone["plus"]["n"]) == (0.5, 2) and (
        everyone["minus"]["rate"],
        everyone["minus"]["n"],
    ) == (1.0, 2)
    assert report["flip_by_group"]["female_young"]["plus"]["rate"] == 0.0
    assert (
        report["flip_by_group"]["male_young"]["minus"]["n"] == 0
        and report["flip_by_group"]["male_young"]["minus"]["rate"] is None
    )
    assert report["flip_by_lighting"]["dark"]["plus"]["rate"] == 1.0 and report["flip_by_lighting"]["mid"]["plus"]["rate"] == 0.0
    assert report["worst_flip"] == 0.0  # female_young never flips up
    assert report["drift"]["male"]["plus"] == pytest.approx(0.0) and report["drift"]["male"]["plus_abs"] == pytest.approx(0.1)
    assert report["drift"]["male"]["minus"] == pytest.approx(0.025)


def variant(worst_flip: float, male_plus: float) -> dict:
    return {"worst_flip": worst_flip, "drift": {"male": {"plus": male_plus, "minus": 0.0}}}


def test_choose_default_prefers_small_side_effects_then_the_smallest_strength_that_flips():
    reports = {
        "low drift, flips at 2": {1.0: variant(0.5, 0.02), 2.0: variant(0.85, 0.05), 3.0: variant(0.99, 0.08)},
        "flips at 1, moves gender": {1.0: variant(0.9, 0.2), 2.0: variant(0.95, 0.3), 3.0: variant(1.0, 0.4)},
        "low drift, flips at 3": {1.0: variant(0.3, 0.0), 2.0: variant(0.6, 0.0), 3.0: variant(0.9, 0.0)},
    }
    assert choose_default(reports) == ("low drift, flips at 2", 2.0)


def test_update_report_keeps_other_steps_keys_and_drops_retired_ones(tmp_path):
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps({"photo": {"n": 3}, "male_drift": -0.1, "test_psnr": 1.0}))
    merged = merge_json(path, {"test_psnr": 20.0}, retire=("male_drift",))
    assert merged == {"photo": {"n": 3}, "test_psnr": 20.0} == json.loads(path.read_text())


def test_vectors_judge_and_evaluation_read_the_split_and_write_the_report(tiny_celeba, tmp_path):
    data = ["--data", str(tiny_celeba), "--cache-dir", str(tmp_path / "cache")]
    run = train_main([*data, "--out", str(tmp_path / "run"), "--max-steps", "2", *SMOKE_TRAIN])
    vectors_main(["--model", str(run), *data])
    judge = judge_main(["--model", str(run), *data, "--out", str(tmp_path / "judge"), "--epochs", "1", "--batch-size", "8"])
    assert set(judge) == {"Smiling", "Male", "Young"} and all(0 <= v["accuracy"] <= 1 for v in judge.values())
    (run / "model" / "evaluation.json").write_text(json.dumps({"photo": {"faces": 1}}))

    report = evaluate_main(
        ["--model", str(run), *data, "--judge", str(tmp_path / "judge"), "--out", str(tmp_path / "eval"), *EVALUATE_5]
    )
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["selection"]["subset"] == "validation" and saved["selection"]["n"] == 5
    assert saved["edited_faces"] == {"subset": "test", "n": 5, "alphas": ALPHAS} and saved["test_images"] == 5
    assert "alpha=0" in saved["flip_definition"]
    assert set(saved["flip_by_group"]) == {"all", "male_young", "male_old", "female_young", "female_old"}
    assert set(saved["flip_by_lighting"]) == {"dark", "mid", "bright"}
    for side in saved["flip_by_group"]["all"].values():
        assert set(side) == {"rate", "low", "high", "n"} and side["low"] <= side["high"]
    assert sum(side["n"] for side in saved["flip_by_group"]["all"].values()) == 5  # every face is in exactly one side
    assert set(saved["drift"]["male"]) == {"plus", "minus", "plus_abs", "minus_abs"}
    overlap = saved["test_by_identity_overlap"]  # the synthetic folder says nothing about people
    assert overlap["person_in_train"]["n"] == 0 and overlap["person_not_in_train_or_unknown"]["n"] == 5
    assert 0 < report["test_psnr"] < 60 and 0 <= report["smile_auc"] <= 1
    assert len(report["variants"]) == 4 and report["default_attribute"] in report["variants"]
    vectors = AttributeVectors.load(run / "model")
    assert len(vectors.names) == 43 and report["default_attribute"] in vectors.names
    settings = json.loads((run / "model" / "editor.json").read_text())
    assert settings["default_attribute"] == report["default_attribute"] and report["face_strength"] in (1.0, 2.0, 3.0)
    in_model = json.loads((run / "model" / "evaluation.json").read_text())
    assert in_model["photo"] == {"faces": 1} and in_model["flip_definition"] == saved["flip_definition"]
    assert (tmp_path / "eval" / "p_smile_balanced.png").exists() and (tmp_path / "eval" / "psnr_histogram.png").exists()
    assert np.isfinite(report["projection_auc"]["Smiling"])


def test_evaluation_refuses_a_judge_trained_on_another_split(tiny_celeba, tmp_path):
    data = ["--data", str(tiny_celeba), "--cache-dir", str(tmp_path / "cache")]
    common = ["--max-steps", "1", *SMOKE_TRAIN]
    run = train_main([*data, "--out", str(tmp_path / "run"), *common])
    other = train_main([*data, "--out", str(tmp_path / "other"), "--seed", "1", *common])
    judge_main(["--model", str(other), *data, "--out", str(tmp_path / "judge"), "--epochs", "1", "--batch-size", "8"])
    vectors_main(["--model", str(run), *data])
    with pytest.raises(SystemExit, match="not trained on this model's train part"):
        evaluate_main(["--model", str(run), *data, "--judge", str(tmp_path / "judge"), "--out", str(tmp_path / "eval")])


def test_person_in_train_follows_identities_and_twins():
    # rows 0-1 train, 2-5 test: row 2 is person 7 (also in train); rows 3 and 4 are one photo (an HQ twin and its
    # CelebA original) of person 8, also in train; row 5 says nothing about who it is
    cache = SimpleNamespace(groups=["a/1", "a/2", "a/3", "a/5", "a/5", "hq/9"], identities=["7", "8", "7", "", "8", ""])
    rows = SplitRows(np.array([0, 1]), np.array([], dtype=int), np.array([2, 3, 4, 5]))
    assert person_in_train(cache, rows).tolist() == [True, True, True, False]


def test_settle_default_keeps_the_previous_default_when_no_variant_flips():
    dead = {n: {a: variant(0.0, 0.0) for a in (1.0, 2.0, 3.0)} for n in ("Smiling", "Smiling (balanced)")}
    name, alpha, warning = settle_default(dead, previous="Smiling (balanced)")
    assert (name, alpha) == ("Smiling (balanced)", 3.0) and "every worst flip is 0" in warning
    assert settle_default(dead, previous="Male")[0] == "Smiling"  # not a variant: the recipe's vector
    weak = {**dead, "Smiling (balanced)": {1.0: variant(0.1, 0.0), 2.0: variant(0.3, 0.0), 3.0: variant(0.5, 0.0)}}
    assert settle_default(weak, previous=None)[0] == "Smiling (balanced)" and "0.8" in settle_default(weak, None)[2]


def test_an_untrained_model_keeps_its_default_and_every_step_leaves_the_folder_loadable(tiny_celeba, tmp_path):
    data = ["--data", str(tiny_celeba), "--cache-dir", str(tmp_path / "cache")]
    run = train_main(
        [*data, "--out", str(tmp_path / "run"), "--max-steps", "1", "--lr", "0", *SMOKE_TRAIN]
    )  # lr 0: the initial weights
    vectors_main(["--model", str(run), *data])
    judge_main(["--model", str(run), *data, "--out", str(tmp_path / "judge"), "--epochs", "1", "--batch-size", "8"])
    settings = run / "model" / "editor.json"
    settings.write_text(json.dumps({"default_attribute": "Smiling (logistic)"}))  # what an earlier evaluation chose
    report = evaluate_main(
        ["--model", str(run), *data, "--judge", str(tmp_path / "judge"), "--out", str(tmp_path / "eval"), *EVALUATE_5]
    )
    assert "every worst flip is 0" in report["selection"]["warning"]
    assert report["default_attribute"] == json.loads(settings.read_text())["default_attribute"] == "Smiling (logistic)"
    assert SmileEditor.from_pretrained(run / "model").settings.default_attribute == "Smiling (logistic)"
    vectors_main(["--model", str(run), *data])  # back to the recipe vectors only: the variant is gone
    assert json.loads(settings.read_text())["default_attribute"] == "Smiling"
    assert SmileEditor.from_pretrained(run / "model").settings.default_attribute == "Smiling"
