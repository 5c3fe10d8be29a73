"""The transfer on synthetic faces: only the face region changes, its mean colour stays put, and with
`follow_flow` the photo's own pixels move along the decoder's flow."""

import numpy as np
import pytest
import torch
from conftest import cartoon_face
from PIL import Image

from vae.align import AlignedFace, crop_to_frame
from vae.filters import gaussian_blur
from vae.settings import TransferSettings
from vae.transfer import LUMA, apply_changes, crop_changes, crop_landmarks, decoder_flow, face_region, moved, region_weights

RESIDUAL = TransferSettings()  # the code's default: the flattened residual alone (editor.json ships the flow)
FLOW = TransferSettings(follow_flow=True)


@pytest.fixture
def photo() -> np.ndarray:
    """A cartoon face in CelebA's frame, pasted off-centre into a larger noisy photo."""
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 255, (400, 500, 3), dtype=np.uint8)
    canvas[100:318, 200:378] = np.asarray(cartoon_face(False, rng))
    return canvas


def crop_to_photo() -> np.ndarray:
    """The face sits at (200, 100) in the photo: frame -> photo is a translation."""
    frame_to_photo = np.array([[1.0, 0, 200], [0, 1.0, 100], [0, 0, 1]])
    return AlignedFace(Image.new("RGB", (178, 218)), frame_to_photo, 1).frame_to_photo @ crop_to_frame((178, 218))


def smile_and_cast() -> tuple[torch.Tensor, torch.Tensor]:
    """decode(z) and an 'edit' that brightens the mouth (the smile) and tints the face unevenly (the drift)."""
    recon = torch.full((3, 128, 128), 0.5)
    edited = recon.clone()
    edited[:, 96:110, 48:80] += 0.3  # teeth
    ramp = torch.linspace(0.5, 1.5, 128)[None, :, None]  # the cast is stronger at the bottom of the face
    edited += torch.tensor([0.08, -0.05, 0.06])[:, None, None] * ramp
    return edited[None], recon


def test_pixels_outside_the_face_region_are_exactly_the_photo(photo):
    edited_face, recon = smile_and_cast()
    edited = apply_changes(photo, crop_to_photo(), crop_changes(edited_face, recon, RESIDUAL))[0]
    region = face_region(crop_to_photo(), (photo.shape[1], photo.shape[0]))
    assert np.array_equal(edited[~region], photo[~region])
    assert (edited[region] != photo[region]).any(1).mean() > 0.2  # and inside, the edit is there
    ys, xs = np.nonzero(region)
    assert 200 <= xs.min() and xs.max() < 378 and 100 <= ys.min() and ys.max() < 318  # inside the face's frame


@pytest.mark.parametrize("transfer", [RESIDUAL, FLOW], ids=["residual", "along the flow"])
def test_the_face_keeps_its_mean_colour_while_the_mouth_changes(photo, transfer):
    edited_face, recon = smile_and_cast()
    recon = recon + gaussian_blur(torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2)), 3.0)[0] - 0.5
    edited_face = edited_face + (recon - 0.5)  # the same texture under both: something for the flow to follow
    region = face_region(crop_to_photo(), (photo.shape[1], photo.shape[0]))
    flattened = apply_changes(photo, crop_to_photo(), crop_changes(edited_face, recon, transfer))[0].astype(float)
    plain = apply_changes(photo, crop_to_photo(), crop_changes(edited_face, recon, TransferSettings(flatten_sigma=0)))[0].astype(
        float
    )
    shift = np.abs((flattened - photo)[region].mean(0))
    assert shift.max() <= 3.0  # at most 3/255 per channel
    assert np.abs((plain - photo)[region].mean(0)).max() > 5  # the plain difference carries the cast along
    mouth = (slice(100 + 38 + 106, 100 + 38 + 120), slice(200 + 18 + 55, 200 + 18 + 85))  # crop rows 96-110 in the photo
    assert (flattened - photo)[mouth].mean() > 20  # the smile itself is kept


def test_a_zero_edit_changes_nothing(photo):
    recon = torch.rand(3, 128, 128)
    edited = apply_changes(photo, crop_to_photo(), crop_changes(recon[None].repeat(3, 1, 1, 1), recon, RESIDUAL))
    assert all(np.array_equal(e, photo) for e in edited)


def test_weights_vanish_outside_the_face_and_rise_over_the_mouth():
    weights = region_weights(TransferSettings(mouth_gain=0.5, lower_face=False), 128)
    assert weights[0, 0] == 0 and weights[127, 127] == 0 and weights[10, 10] == 0 and weights[0, 64] < 0.1
    assert weights[40, 64] == pytest.approx(1.0) and weights[100, 64] == pytest.approx(1.5)


def test_the_lower_face_variant_leaves_the_eyes_alone():
    weights = region_weights(TransferSettings(mouth_gain=0.0, lower_face=True), 128)
    assert weights[:70].abs().max() == 0  # CelebA's eyes sit at row ~66 of the aligned crop
    assert weights[103, 64] == pytest.approx(1.0)  # the mouth gets the whole edit


def shifted_texture(down: float) -> tuple[torch.Tensor, torch.Tensor]:
    """decode(z) with lip-sized texture, and an 'edit' that is the same face moved `down` crop px (pure shape)."""
    recon = gaussian_blur(torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1)), 2.0)[0]
    recon = (recon - recon.mean()) * 8 + 0.5
    motion = torch.zeros(1, 2, 128, 128)
    motion[:, 1] = -down  # each pixel takes what lay `down` px above it
    return moved(recon[None], motion), recon


def test_the_flow_finds_where_the_decoded_edit_moved_the_face():
    edited, recon = shifted_texture(1.0)
    flow = decoder_flow(edited, recon)[0]
    inner = (slice(20, 108), slice(20, 108))
    assert flow[1][inner].median() == pytest.approx(-1.0, abs=0.2)
    assert flow[0][inner].abs().median() < 0.2
    assert decoder_flow(recon[None], recon).abs().max() == 0  # nothing moved: no flow at all


def test_following_the_flow_moves_the_photo_and_leaves_little_to_add(photo):
    edited, recon = shifted_texture(1.0)
    with_flow, plain = crop_changes(edited, recon, FLOW), crop_changes(edited, recon, RESIDUAL)
    assert with_flow.colour.abs().mean() < 0.3 * plain.colour.abs().mean()  # the flow explains most of the change
    out = apply_changes(photo, crop_to_photo(), with_flow)[0].astype(float)
    (scale, _, x0), (_, _, y0) = crop_to_photo()[:2]  # image px per crop px, and where the crop starts
    rows, cols = slice(round(y0 + 96 * scale), round(y0 + 112 * scale)), slice(round(x0 + 40 * scale), round(x0 + 90 * scale))
    above = slice(rows.start - round(scale), rows.stop - round(scale))  # the mouth, 1 crop px higher
    moved_error = np.abs(out[rows, cols] - photo[above, cols]).mean()
    assert moved_error < 0.5 * np.abs(out[rows, cols] - photo[rows, cols]).mean()  # the photo's own pixels, moved down
    region = face_region(crop_to_photo(), (photo.shape[1], photo.shape[0]))
    assert np.array_equal(out[~region], photo[~region])


def test_following_the_flow_on_a_zero_edit_changes_nothing(photo):
    recon = torch.rand(3, 128, 128)
    change = crop_changes(recon[None].repeat(2, 1, 1, 1), recon, FLOW)
    assert change.motion.abs().max() == 0 and change.colour.abs().max() == 0  # exactly, not after rounding
    edited = apply_changes(photo, crop_to_photo(), change)
    assert all(np.array_equal(e, photo) for e in edited)


def test_the_residual_gain_scales_what_the_flow_leaves_and_keeps_the_motion():
    edited, recon = smile_and_cast()
    full = crop_changes(edited, recon, FLOW)
    half = crop_changes(edited, recon, TransferSettings(follow_flow=True, residual_gain=0.5))
    none = crop_changes(edited, recon, TransferSettings(follow_flow=True, residual_gain=0.0))
    assert torch.equal(full.motion, half.motion) and torch.equal(full.motion, none.motion)
    weights = region_weights(FLOW, 128)

    def structure(change) -> float:
        """How much the colour change varies beyond a constant over the region (the mean colour given back)."""
        constant = (change.colour * weights).sum((-2, -1), keepdim=True) / (weights * weights).sum()
        return float((change.colour - constant * weights).abs().mean())

    assert structure(half) == pytest.approx(0.5 * structure(full), rel=0.05)
    assert structure(none) < 1e-3 * structure(full)  # only the moved pixels' mean colour is given back


def test_a_shade_limit_holds_the_darkening_outside_the_lips_and_keeps_the_mouth():
    recon = torch.full((3, 128, 128), 0.5)
    edited = recon.clone()
    _, mouth, _ = crop_landmarks()
    mx, my = round(mouth[0]), round(mouth[1])
    edited[:, my - 2 : my + 2, mx - 8 : mx + 8] -= 0.3  # the mouth opens: dark
    edited[:, my + 4 : my + 10, mx - 30 : mx - 20] -= 0.3  # a dark patch at the jaw
    edited[:, my + 4 : my + 10, mx + 20 : mx + 30] += 0.2  # a light one at the other side
    free, held = crop_changes(edited[None], recon, RESIDUAL), crop_changes(edited[None], recon, TransferSettings(shade_limit=8))

    def luma(change, rows: slice, cols: slice) -> torch.Tensor:
        return (change.colour[0, :, rows, cols] * torch.tensor(LUMA).view(3, 1, 1)).sum(0) * 255

    jaw, light, lips = (
        (slice(my + 6, my + 8), slice(mx - 27, mx - 23)),
        (slice(my + 6, my + 8), slice(mx + 23, mx + 27)),
        (slice(my - 1, my + 1), slice(mx - 3, mx + 3)),
    )
    assert luma(free, *jaw).min() < -20 and luma(held, *jaw).min() >= -8.01  # held to the limit
    assert torch.equal(luma(held, *light), luma(free, *light)) and luma(free, *light).min() > 10  # lightening is left
    assert torch.allclose(luma(held, *lips), luma(free, *lips)) and luma(free, *lips).max() < -20  # the mouth keeps its dark
