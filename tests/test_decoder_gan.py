"""The decoder fine-tuned alone (train.decoder_gan), end to end on the synthetic dataset."""

import json
import shutil

import pytest
import torch
from conftest import SMOKE_TRAIN

from train.decoder_gan import main as decoder_gan_main
from train.train import main as train_main
from train.vectors import main as vectors_main
from vae.editor import SmileEditor
from vae.model import SmileVAE

SMALL = ["--batch", "4", "--width", "8", "--save-every", "2"]


def test_only_the_decoder_changes_and_the_folder_it_writes_edits_and_resumes(tiny_celeba, tmp_path):
    data = ["--data", str(tiny_celeba), "--cache-dir", str(tmp_path / "cache")]
    run = train_main([*data, "--out", str(tmp_path / "run"), "--max-steps", "2", *SMOKE_TRAIN])
    vectors_main(["--model", str(run), *data])
    out = tmp_path / "gan"
    decoder_gan_main(["--model", str(run), *data, "--out", str(out), "--steps", "2", "--lr", "1e-2", *SMALL])

    before, after = (SmileVAE.load(folder).state_dict() for folder in (run / "model", out / "model"))
    changed = {name for name in before if not torch.equal(before[name].half(), after[name].half())}
    assert changed and all(name.startswith(("decoder.", "decoder_input.")) for name in changed)  # z and the vectors hold
    editor = SmileEditor.from_pretrained(out / "model")  # a whole model folder: vectors and settings came along
    photo = torch.rand(160, 140, 3).mul(255).byte().numpy()
    result = editor.edit(photo, 2.0)
    assert result.more.shape == result.less.shape == photo.shape
    assert (out / "grid_000002.png").stat().st_size > 1000

    decoder_gan_main(["--model", str(run), *data, "--out", str(out), "--steps", "4", "--lr", "1e-2", "--resume", *SMALL])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["started_at_step"] for r in log if "started_at_step" in r] == [0, 2]
    validation = [r for r in log if "val_l1" in r]
    assert [r["step"] for r in validation] == [2, 4] and all(r["val_l1"] > 0 for r in validation)
    resumed = torch.load(out / "checkpoint.pt", weights_only=True)
    saved = SmileVAE.load(out / "model").state_dict()
    assert resumed["step"] == 4 and resumed["decoder"].keys()
    for name, value in resumed["decoder"].items():  # the folder holds the resumed run's decoder, not step 2's
        assert torch.equal(value.half(), saved[name].half()), name
    assert not torch.equal(saved["decoder.2.weight"].half(), after["decoder.2.weight"].half())


def test_a_resumed_run_stops_when_its_latents_came_from_another_model(tiny_celeba, tmp_path):
    data = ["--data", str(tiny_celeba), "--cache-dir", str(tmp_path / "cache")]
    run = train_main([*data, "--out", str(tmp_path / "run"), "--max-steps", "1", *SMOKE_TRAIN])
    vectors_main(["--model", str(run), *data])
    out = tmp_path / "gan"
    decoder_gan_main(["--model", str(run), *data, "--out", str(out), "--steps", "1", *SMALL])
    other = tmp_path / "other"
    shutil.copytree(run, other)
    model = SmileVAE.load(other / "model")
    with torch.no_grad():
        model.decoder_input.weight.add_(0.01)  # other weights: their latents would be others
    model.save_pretrained_atomic(other / "model", fp16=True)
    with pytest.raises(SystemExit, match="was not encoded by the weights in"):
        decoder_gan_main(["--model", str(other), *data, "--out", str(out), "--steps", "2", "--resume", *SMALL])
