import math
import shutil

import pytest
import torch
from conftest import ROOT

from train.loss import vae_loss
from vae.model import SmileVAE
from vae.reconstruction import kl_divergence


@pytest.fixture(scope="module")
def model() -> SmileVAE:
    torch.manual_seed(0)
    return SmileVAE().eval()


def test_every_layer_has_the_recipe_shape(model):
    shapes = []
    x = torch.zeros(2, 3, 128, 128)
    hooks = [
        m.register_forward_hook(lambda m, i, o: shapes.append((type(m).__name__, tuple(o.shape))))
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert shapes == [
        ("Conv2d", (2, 64, 64, 64)),
        ("Conv2d", (2, 128, 32, 32)),
        ("Conv2d", (2, 256, 16, 16)),
        ("Linear", (2, 512)),
        ("Linear", (2, 64)),
        ("Linear", (2, 64)),
        ("Linear", (2, 256 * 16 * 16)),
        ("ConvTranspose2d", (2, 256, 32, 32)),
        ("ConvTranspose2d", (2, 128, 64, 64)),
        ("ConvTranspose2d", (2, 64, 128, 128)),
        ("Conv2d", (2, 3, 128, 128)),
    ]


def test_parameter_count_is_about_40_million(model):
    count = sum(p.numel() for p in model.parameters())
    assert 39e6 < count < 42e6


def test_encode_decode_forward_shapes_and_range(model):
    x = torch.rand(3, 3, 128, 128)
    with torch.no_grad():
        mean, logvar = model.encode(x)
        recon, m2, _ = model(x)
        out = model.decode(mean)
    assert mean.shape == logvar.shape == (3, 64)
    assert recon.shape == out.shape == x.shape
    assert 0 <= out.min() and out.max() <= 1
    assert torch.equal(mean, m2)  # encoding is deterministic; only z is sampled


def test_reparameterisation_has_the_posterior_statistics():
    torch.manual_seed(1)
    mean = torch.full((200_000, 2), 1.5)
    logvar = torch.log(torch.tensor([[0.25, 4.0]])).expand(200_000, 2)
    z = SmileVAE.reparameterize(mean, logvar)
    assert torch.allclose(z.mean(0), torch.tensor([1.5, 1.5]), atol=0.02)
    assert torch.allclose(z.std(0), torch.tensor([0.5, 2.0]), atol=0.02)


def test_loss_matches_a_hand_computed_case():
    recon = torch.zeros(2, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.5, 0.5], [0.0, 0.0]]]])
    mean = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(2.0), 0.0]])
    # SSE per image: 1 and 0.5; KL: 0.5*(1) = 0.5 and 0.5*(2 - 1 - ln 2) = 0.1534
    loss, mse, kl = vae_loss(recon, target, mean, logvar, beta=2.0)
    expected_kl = (0.5 + 0.5 * (1 - math.log(2.0))) / 2
    assert kl.item() == pytest.approx(expected_kl, abs=1e-6)
    assert mse.item() == pytest.approx(1.5 / 8)
    assert loss.item() == pytest.approx(0.75 + 2.0 * expected_kl, abs=1e-6)
    assert kl_divergence(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 0.0


def test_save_load_round_trip_is_bit_identical(model, tmp_path):
    model.save_pretrained_atomic(tmp_path / "m")
    loaded = SmileVAE.load(tmp_path / "m")
    assert not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert sorted(p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith(".")) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]


def test_a_weights_file_missing_entries_is_refused_not_left_random(tmp_path):
    from safetensors.torch import load_file, save_file

    from vae.editor import SmileEditor
    from vae.hub import ModelLoadError

    folder = tmp_path / "m"
    shutil.copytree(ROOT / "assets", folder, ignore=shutil.ignore_patterns("judge", "examples", "figures"))
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("decoder.")}, folder / "model.safetensors")
    with pytest.raises(ModelLoadError, match="(?s)could not be read.*Missing key.*decoder"):
        SmileEditor.from_pretrained(folder)


def test_fp16_storage_halves_the_file_and_loads_as_float32(model, tmp_path):
    model.save_pretrained_atomic(tmp_path / "full")
    model.save_pretrained_atomic(tmp_path / "half", fp16=True)
    full = (tmp_path / "full" / "model.safetensors").stat().st_size
    half = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert half < 0.51 * full and half > 75e6
    loaded = SmileVAE.load(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(loaded.encode(x)[0], model.encode(x)[0], atol=5e-3)


def test_saved_files_are_readable_by_everyone_with_a_real_model_card(model, tmp_path):
    from PIL import Image

    from vae.files import atomic_save

    (tmp_path / "hand").mkdir()
    (tmp_path / "hand" / "README.md").write_text("# my own card\n")
    for folder in (tmp_path / "model", tmp_path / "hand"):
        model.save_pretrained_atomic(folder, fp16=True)
        assert all(p.stat().st_mode & 0o777 == 0o644 for p in folder.iterdir())
    card = (tmp_path / "model" / "README.md").read_text()
    assert "More Information Needed" not in card and "python -m train.vectors" in card
    assert (tmp_path / "hand" / "README.md").read_text() == "# my own card\n"  # a hand-written card stays
    written = atomic_save(Image.new("RGB", (4, 4)), tmp_path / "edit.png")
    assert written.stat().st_mode & 0o777 == 0o644
