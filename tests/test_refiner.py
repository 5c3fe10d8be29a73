"""The mouth refiner: where it may draw, what it keeps exact, and how it loads (vae.refiner)."""

import dataclasses

import numpy as np
import pytest
import torch

from vae.editor import SmileEditor
from vae.preprocess import to_pixels
from vae.refiner import MouthRefiner, MouthWindow, refine_mouths, refiner_input
from vae.settings import EditorSettings, SettingsError, TransferSettings
from vae.transfer import face_region

ASSETS = "assets"


@pytest.fixture(scope="module")
def shipped() -> SmileEditor:
    return SmileEditor.from_pretrained(ASSETS)


@pytest.fixture(scope="module")
def prepared(shipped, astronaut_path):
    return shipped.prepare(astronaut_path)


def refining(editor: SmileEditor, refiner: MouthRefiner) -> SmileEditor:
    transfer = dataclasses.replace(editor.settings.transfer, refine_mouth=True)
    settings = editor.settings.replace(transfer=transfer)
    return SmileEditor(editor.model, editor.vectors, settings, editor.aligner, refiner, editor.renderer)


def test_the_window_sits_on_the_mouth_at_the_photo_scale_capped_at_twice_the_crop():
    small = MouthWindow.around(np.diag([1.5, 1.5, 1.0]))
    large = MouthWindow.around(np.diag([9.0, 9.0, 1.0]))
    assert small.scale == 1.5 and large.scale == 2.0
    assert all(side % 8 == 0 for side in small.size + large.size)
    weights = small.weights()[0]
    assert weights.max() == 1 and weights[0].max() == 0 and weights[-1].max() == 0 and weights[:, 0].max() == 0


def test_at_alpha_zero_the_input_is_the_photo_outside_the_mouth_and_its_decode_inside():
    photo, recon = torch.rand(1, 3, 40, 48), torch.rand(1, 3, 40, 48)
    weights = torch.zeros(1, 1, 40, 48)
    weights[..., 10:30, 12:36] = 1
    x = refiner_input(photo, recon, recon, weights, 1.0)
    assert x.shape == (1, 4, 40, 48)
    outside = (weights == 0).expand(1, 3, -1, -1)
    assert torch.equal(x[:, :3][outside], photo[outside])
    assert not torch.allclose(x[:, :3, 15, 20], photo[:, :, 15, 20])


def test_the_refiner_changes_nothing_where_its_weights_are_zero():
    refiner = MouthRefiner(width=8).eval()
    x = torch.cat([torch.rand(2, 3, 32, 40), torch.zeros(2, 1, 32, 40)], 1)
    x[:, 3, 8:24, 8:32] = 1
    with torch.inference_mode():
        y = refiner(x)
    assert y.shape == (2, 3, 32, 40)
    assert torch.equal(y[:, :, :8], x[:, :3, :8]) and not torch.equal(y[:, :, 8:24, 8:32], x[:, :3, 8:24, 8:32])


def test_a_refined_edit_keeps_its_shape_and_every_pixel_outside_the_face(shipped, prepared, tmp_path):
    torch.manual_seed(0)
    MouthRefiner(width=8).save(tmp_path)
    editor = refining(shipped, MouthRefiner.load(tmp_path))
    result = editor.edit(prepared, 3.0, frames=[-1.0, 0.0, 1.0])
    plain = shipped.edit(prepared, 3.0)
    region = face_region(prepared.crop_to_photo, (prepared.photo.shape[1], prepared.photo.shape[0]))
    for refined, residual_only in ((result.less, plain.less), (result.more, plain.more)):
        assert refined.shape == prepared.photo.shape and refined.dtype == np.uint8
        assert np.array_equal(refined[~region], prepared.photo[~region])
        assert not np.array_equal(refined, residual_only)  # the mouth was redrawn
    assert np.array_equal(result.frames[1], editor.decode_strengths(prepared, [0.0]).views([0.0])[0])
    assert np.array_equal(result.frames[1], prepared.face_view.cut(prepared.photo))  # strength 0 is the photo itself


def test_a_zero_strength_is_never_refined(prepared):
    refiner = MouthRefiner(width=8).eval()
    images = np.repeat(prepared.photo[None], 2, 0)
    decoded = prepared.recon[None].expand(2, -1, -1, -1)
    assert np.array_equal(refine_mouths(images, prepared.crop_to_photo, decoded, prepared.recon, [0.0, 0.0], refiner), images)


def test_asking_for_the_refiner_without_one_is_a_settings_error(shipped):
    settings = EditorSettings(default_attribute=shipped.settings.default_attribute, transfer=TransferSettings(refine_mouth=True))
    with pytest.raises(SettingsError, match="refiner"):
        SmileEditor(shipped.model, shipped.vectors, settings, shipped.aligner)
    with pytest.raises(SettingsError, match="refine_mouth"):
        TransferSettings(refine_mouth="yes")


def test_the_training_inputs_carry_the_edit_the_app_makes(shipped, prepared, astronaut_path):
    """Outside the mouth the refiner is trained on the transfer's own edited photo (pixels moved along the flow)."""
    from train.refiner import WINDOW, windows_of

    windows = windows_of(shipped, astronaut_path, 3.0)
    window = MouthWindow.around(prepared.crop_to_photo, size=WINDOW)
    edited = torch.from_numpy(shipped.decode_strengths(prepared, [-3.0, 3.0]).photos([-3.0, 3.0])).permute(0, 3, 1, 2) / 255
    expected = to_pixels(window.from_photo(edited.float()))
    outside = windows["weights"] == 0
    assert np.array_equal(windows["inputs"][1:][:, outside], expected[:, outside])
    assert not np.array_equal(windows["inputs"][1][outside], windows["photo"][outside])  # the edit is in them


def test_the_critic_is_scored_on_the_mouth_only():
    from train.gan import mouth_mean

    scores = torch.zeros(1, 1, 12, 12)
    scores[..., :6, :] = 5.0  # high scores above the mouth
    weights = torch.zeros(1, 1, 96, 96)
    weights[..., 48:, :] = 1.0  # the mouth: the lower half of the window
    assert mouth_mean(scores, weights) == 0
    assert mouth_mean(scores, 1 - weights) == 5
