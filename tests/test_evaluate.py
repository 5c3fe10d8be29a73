"""The judge and evaluation steps end to end on the small synthetic dataset (a real, tiny run)."""
import json

import numpy as np

from train.evaluate import main as evaluate_main
from train.judge import main as judge_main
from train.train import main as train_main
from train.vectors import main as vectors_main
from vae.vectors import AttributeVectors


def test_vectors_judge_and_evaluation_write_the_report_and_app_defaults(tiny_celeba, tmp_path):
    data = ["--data", str(tiny_celeba), "--cache-dir", str(tmp_path / "cache")]
    run = train_main([*data, "--out", str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "8", "--eval-images", "8"])
    vectors_main(["--model", str(run), *data])
    judge = judge_main([*data, "--out", str(tmp_path / "judge"), "--epochs", "1", "--batch-size", "8"])
    assert set(judge) == {"Smiling", "Male", "Young"} and all(0 <= v["accuracy"] <= 1 for v in judge.values())

    report = evaluate_main(["--model", str(run), *data, "--judge", str(tmp_path / "judge"), "--out", str(tmp_path / "eval"),
                            "--faces", "8", "--update-model"])
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    for key in ("test_psnr", "smile_auc", "flip_rate_by_group", "male_drift"):
        assert key in saved
    assert saved["edited_faces"] == 8 and saved["flip_rate_by_group"]["all"]["n"] == 8
    assert set(saved["flip_rate_by_group"]) == {"all", "male_young", "male_old", "female_young", "female_old"}
    assert 0 < report["test_psnr"] < 60 and 0 <= report["smile_auc"] <= 1
    assert len(report["variants"]) == 4 and report["default_attribute"] in report["variants"]
    vectors = AttributeVectors.load(run / "model")
    assert len(vectors.names) == 43 and report["default_attribute"] in vectors.names
    settings = json.loads((run / "model" / "editor.json").read_text())
    assert settings["default_attribute"] == report["default_attribute"]
    assert settings["default_strength"] == report["default_strength"]
    assert (tmp_path / "eval" / "p_smile_balanced.png").exists() and (tmp_path / "eval" / "astronaut_strip.png").exists()
    assert np.isfinite(report["projection_auc"]["Smiling"])
