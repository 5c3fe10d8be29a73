"""The mirror's per-frame pipeline (vae.mirror) on the real model and MTCNN, with a clip made from the astronaut."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image, ImageDraw

from bench.fakecam import astronaut_frames
from vae.editor import SmileEditor
from vae.mirror import NO_FACE_NOTE, Mirror, MirrorModel
from vae.motion import MARGIN, Template, fit_similarity, grey_patch, inner, phase_correlation
from vae.refiner import MouthRefiner
from vae.transfer import face_region

STRENGTH = 3.0


@pytest.fixture(scope="module")
def editor():
    return SmileEditor.from_pretrained(ROOT / "assets")


@pytest.fixture(scope="module")
def model(editor):
    model = MirrorModel(editor, precision="auto", repeats=2)
    assert model.ready.wait(120)
    return model


@pytest.fixture(scope="module")
def astronaut(astronaut_path):
    return Image.open(astronaut_path).convert("RGB").resize((400, 400), Image.Resampling.LANCZOS)


def video_frame(astronaut: Image.Image, dx: int = 0, dy: int = 0) -> np.ndarray:
    """640x480: the astronaut on grey, moved by (dx, dy) pixels (the clip's synthetic motion)."""
    canvas = Image.new("RGB", (640, 480), (90, 90, 90))
    canvas.paste(astronaut, (120 + dx, 40 + dy))
    return np.asarray(canvas)


def clip(astronaut: Image.Image, count: int) -> list[np.ndarray]:
    """A little head motion (a few px, sideways and down), then still."""
    moves = [(round(5 * np.sin(k / 4)), round(2 * np.sin(k / 7))) for k in range(count // 2)]
    return [video_frame(astronaut, *m) for m in moves] + [video_frame(astronaut)] * (count - len(moves))


def test_phase_correlation_finds_a_shift():
    rng = np.random.default_rng(0)
    image = np.asarray(Image.fromarray(rng.integers(0, 255, (96, 96), dtype=np.uint8)).resize((96, 96)), dtype=np.float32)
    reference, moved = image[10:74, 10:74], image[7:71, 12:76]  # content moves 3 down, 2 left
    dx, dy, peak = phase_correlation(reference, moved)
    assert abs(dx - -2) < 0.3 and abs(dy - 3) < 0.3 and peak > 0.3


def test_a_similarity_fit_finds_how_far_a_face_moved_grew_and_turned(astronaut):
    def frame(scale: float, turn: float, dx: float, dy: float) -> np.ndarray:
        """The video frame with the face `scale` times larger and turned by `turn` radians about the picture's
        centre, then moved by (dx, dy); drawn at 4x and averaged down, as a camera's sensor sees it."""
        rotation = scale * np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        inverse = np.linalg.inv(rotation)  # 4x frame px -> 4x picture px, for PIL
        offset = 800 - inverse @ (4 * np.array([320 + dx, 240 + dy]))
        drawn = astronaut.resize((1600, 1600), Image.Resampling.BICUBIC).transform(
            (2560, 1920),
            Image.Transform.AFFINE,
            (*inverse[0], offset[0], *inverse[1], offset[1]),
            Image.Resampling.BICUBIC,
            fillcolor=(90, 90, 90),
        )
        return np.asarray(drawn.resize((640, 480), Image.Resampling.BOX))

    box = (232, 88, 360, 216)  # around the face
    landmarks = np.array([[159.7, 79.8], [193.2, 81.5], [175.7, 101.5], [158.2, 109.6], [192.1, 111.0]]) + [120, 40]  # MTCNN's
    first = frame(1.0, 0.0, 0.0, 0.0)
    template = Template.of(grey_patch(first, box), box, landmarks)
    for scale, turn, dx, dy in [(1.0, 0.0, 1.25, -0.75), (1.05, 0.0, -2.5, 1.0), (0.96, 0.04, 3.0, 2.25)]:
        moved = frame(scale, turn, dx, dy)
        grown = grey_patch(moved, box, MARGIN)
        fit = fit_similarity(template, grown, (640, 480), phase_correlation(template.patch, inner(grown))[:2])
        assert fit is not None and abs(fit.scale - scale) < 0.003 and fit.change < 3
        rotation = scale * np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        point = np.array([300.0, 150.0])  # a point of the face, moved as the face was
        truth = rotation @ (point - [319.5, 239.5]) + [319.5 + dx, 239.5 + dy]  # about the picture's centre (pixel centres)
        assert np.abs(fit.to_frame[:2, :2] @ point + fit.to_frame[:2, 2] - truth).max() < 0.05
    opened = frame(1.0, 0.0, 1.0, 0.0).copy()
    opened[180:192, 280:320] = 30  # the same move, and a dark mouth opened where no similarity puts it
    grown = grey_patch(opened, box, MARGIN)
    fit = fit_similarity(template, grown, (640, 480), phase_correlation(template.patch, inner(grown))[:2])
    assert fit is not None and fit.change > 10  # it settles, and says how much it cannot explain


def test_the_detector_runs_on_few_frames_while_tracking(editor, model, astronaut):
    mirror = Mirror(editor, model)
    frames = clip(astronaut, 40)
    results = [mirror.edit(frame, STRENGTH) for frame in frames]
    assert mirror.frames == 40
    assert mirror.detections <= 3, mirror.detections  # the first frame, then tracking (and a periodic check)
    assert all(r.face and r.note is None for r in results)
    assert all((r.image != f).any() for r, f in zip(results, frames))  # every frame is edited
    assert mirror.encodes < 40  # still frames reuse the latent
    assert not results[-1].encoded and not results[-1].decoded  # the still tail reuses everything


def test_detecting_every_frame_is_the_baseline(editor, model, astronaut):
    mirror = Mirror(editor, model, track=False)
    for frame in clip(astronaut, 4):
        mirror.edit(frame, STRENGTH)
    assert mirror.detections == 4


def test_no_face_passes_the_frame_through_with_a_note(editor, model):
    frame = np.random.default_rng(1).integers(80, 120, (480, 640, 3), dtype=np.uint8)
    mirror = Mirror(editor, model)
    results = [mirror.edit(frame, STRENGTH) for _ in range(3)]
    for result in results:
        assert np.array_equal(result.image, frame) and result.image is not frame
        assert result.note == NO_FACE_NOTE and not result.face
    assert mirror.detections == 1  # with no face it looks again only every few frames


def test_pixels_outside_the_face_region_are_unchanged(editor, model, astronaut):
    mirror = Mirror(editor, model)
    for frame in clip(astronaut, 12):
        result = mirror.edit(frame, -STRENGTH)
        region = face_region(mirror.crop_to_frame, (640, 480))
        changed = (result.image != frame).any(axis=2)
        assert changed.any() and not (changed & ~region).any()


def test_strength_zero_gives_the_frame_back(editor, model, astronaut):
    mirror = Mirror(editor, model)
    for frame in clip(astronaut, 6):
        result = mirror.edit(frame, 0.0)
        assert np.array_equal(result.image, frame) and result.face


def test_a_new_strength_takes_effect_on_the_next_frame(editor, model, astronaut):
    mirror = Mirror(editor, model)
    frame = video_frame(astronaut)
    more = mirror.edit(frame, STRENGTH)
    less = mirror.edit(frame, -STRENGTH)
    assert less.decoded and not less.encoded  # the same latent, decoded at the new strength at once
    assert np.abs(less.image.astype(int) - more.image).max() > 20
    again = mirror.edit(frame, STRENGTH)
    assert np.array_equal(again.image, more.image)
    with pytest.raises(ValueError):
        mirror.edit(frame, 99.0)


def test_the_first_frame_is_edited_like_a_photo(editor, astronaut):
    """Same alignment, encoding, transfer and strength scale as `SmileEditor.edit` (fp32, full-size detection)."""
    frame = video_frame(astronaut)
    mirror = Mirror(editor, MirrorModel(editor, precision="fp32"), detect_side=640)
    shown = mirror.edit(frame, STRENGTH).image
    photo = editor.edit(frame, STRENGTH).more
    diff = np.abs(shown.astype(int) - photo)
    assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())


def test_with_the_mouth_refiner_the_mirror_draws_the_photo_views_mouth(editor, astronaut, tmp_path):
    """`transfer.refine_mouth` reaches the webcam too: the first frame matches the photo edit with the refiner."""
    torch.manual_seed(0)
    MouthRefiner(width=8).save(tmp_path)
    transfer = dataclasses.replace(editor.settings.transfer, refine_mouth=True)
    settings = editor.settings.replace(transfer=transfer)
    refining = SmileEditor(editor.model, editor.vectors, settings, editor.aligner, MouthRefiner.load(tmp_path), editor.renderer)
    frame = video_frame(astronaut)
    mirror = Mirror(refining, MirrorModel(refining, precision="fp32"), detect_side=640)
    shown = mirror.edit(frame, STRENGTH).image
    photo, plain = refining.edit(frame, STRENGTH).more, editor.edit(frame, STRENGTH).more
    assert np.abs(shown.astype(int) - photo).max() <= 2
    assert np.abs(shown.astype(int) - plain).max() > 2  # the refined mouth, not the residual alone
    region = face_region(mirror.crop_to_frame, (640, 480))
    assert np.array_equal(shown[~region], frame[~region])


def test_bf16_is_timed_only_where_this_cpu_computes_it_natively(model):
    from vae.runtime import cpu_has_native_bf16

    timed_bf16 = any(key.endswith("bf16") for key in model.timings_ms)
    assert timed_bf16 == cpu_has_native_bf16()  # emulated bf16 took ~20 s of an AVX2 machine's start
    assert (model.bf16 is not None) == ("bf16" in model.precision.values())


@pytest.mark.parametrize("which", ["more", "both"])
def test_the_renderer_paints_the_mirror_s_mouth_on_the_sides_it_is_set_for(editor, model, astronaut, which):
    def with_renderer(which: str) -> SmileEditor:
        return editor.with_settings(
            editor.settings.replace(transfer=dataclasses.replace(editor.settings.transfer, render_mouth=which))
        )

    frame = video_frame(astronaut)
    for strength in (STRENGTH, -STRENGTH):
        mirror = Mirror(with_renderer(which), model)
        plain, painted = Mirror(with_renderer("off"), model).edit(frame, strength), mirror.edit(frame, strength)
        changed = (painted.image != plain.image).any(axis=2)
        assert changed.any() == (strength > 0 or which == "both")
        region = face_region(mirror.crop_to_frame, (640, 480))
        assert not (changed & ~region).any() and not ((painted.image != frame).any(axis=2) & ~region).any()


def test_a_still_or_sliding_face_keeps_its_painted_mouth_and_a_new_strength_paints_again(editor, model, astronaut):
    mirror = Mirror(editor, model)
    assert editor.settings.transfer.render_mouth != "off"  # the shipped transfer paints the mouth
    frame = video_frame(astronaut)
    first = mirror.edit(frame, STRENGTH).image
    painted = mirror._track.painted
    assert np.array_equal(mirror.edit(frame.copy(), STRENGTH).image, first) and mirror._track.painted is painted
    moved = mirror.edit(video_frame(astronaut, 3, 1), STRENGTH)  # the face slid: its painting goes with it, not painted again
    assert not moved.encoded and mirror._track.painted is painted and mirror.slides == 1
    x0, y0, x1, y1 = painted.mouths.box
    assert painted.shown.box == (x0 + 3, y0 + 1, x1 + 3, y1 + 1)
    diff = np.abs(moved.image[y0 + 1 : y1 + 1, x0 + 3 : x1 + 3].astype(int) - first[y0:y1, x0:x1])
    assert diff.max() <= 4 and diff.mean() < 0.2  # the same mouth, sampled back a few hundredths of a px apart
    mirror.edit(frame, -STRENGTH)
    assert mirror._track.painted is not painted


def zoomed(astronaut: Image.Image, scale: float, dx: int = 0, narrower: float = 1.0) -> np.ndarray:
    """The video frame with the face `scale` times its size (it came closer), centred where it was, moved by dx;
    `narrower` squeezes its width too (as a head turning away does: no similarity explains it)."""
    width, height = round(astronaut.width * scale * narrower), round(astronaut.height * scale)
    canvas = Image.new("RGB", (640, 480), (90, 90, 90))
    canvas.paste(astronaut.resize((width, height), Image.Resampling.LANCZOS), (320 - width // 2 + dx, 240 - height // 2))
    return np.asarray(canvas)


def tilted(astronaut: Image.Image, degrees: float) -> np.ndarray:
    """The video frame with the face turned by `degrees` (anticlockwise) about the picture's centre."""
    canvas = Image.new("RGB", (640, 480), (90, 90, 90))
    canvas.paste(astronaut.rotate(degrees, Image.Resampling.BICUBIC, fillcolor=(90, 90, 90)), (120, 40))
    return np.asarray(canvas)


def slid(astronaut: Image.Image, dx: float, dy: float, mouth: tuple[np.ndarray, int] | None = None) -> np.ndarray:
    """The video frame with the face moved by (dx, dy), quarter pixels too, as a camera's sensor sees it (drawn
    at 4x and averaged down, so every frame is equally sharp); `mouth` = (corners in frame px before the move,
    opening in px) draws a dark mouth opening that far."""
    canvas = Image.new("RGB", (640 * 4, 480 * 4), (90, 90, 90))
    canvas.paste(astronaut.resize((1600, 1600), Image.Resampling.BICUBIC), (480 + round(4 * dx), 160 + round(4 * dy)))
    if mouth is not None:
        (left, right), opening = 4 * mouth[0] + [4 * dx, 4 * dy], 4 * mouth[1]
        ImageDraw.Draw(canvas).ellipse([left[0], left[1] - opening / 2, right[0], right[1] + opening / 2], fill=(40, 20, 20))
    return np.asarray(canvas.resize((640, 480), Image.Resampling.BOX))


def assert_same_edit_moved(kept: np.ndarray, encoded: np.ndarray, frame: np.ndarray, region: np.ndarray) -> None:
    """A kept (slid) edit: nothing outside the face changed, and it is the edit that encoding this frame gives."""
    assert not ((kept != frame).any(axis=2) & ~region).any()
    edit = np.abs(kept.astype(int) - frame)[region].mean()
    assert edit > 1.0 and np.abs(kept.astype(int) - encoded)[region].mean() < 0.1 * edit


def test_a_face_that_only_moves_keeps_its_edit_and_one_that_changes_is_encoded_again(editor, model, astronaut):
    for frames in (
        [slid(astronaut, dx, dy) for dx, dy in [(0, 0), (3, 1), (6, 2), (9, 2), (11, 3)]],  # whole pixels
        [slid(astronaut, dx, dy) for dx, dy in [(0, 0), (1.25, 0.5), (3.0, 1.25), (4.75, 1.5), (6.25, 2.5)]],  # quarter pixels
        [zoomed(astronaut, scale, dx=2 * k) for k, scale in enumerate([1.0, 1.02, 1.04, 1.06, 1.08])],  # it comes closer
        [tilted(astronaut, degrees) for degrees in (0, 2, 4, 6, 8)],  # it leans its head
        list(astronaut_frames(5, noise=0, subpixel=True, over_scene=True)),  # only the head moves, over a busy, still scene
    ):
        mirror, fresh = Mirror(editor, model), Mirror(editor, model, slide_levels=0.0)  # fresh: every move encoded again
        for frame in frames:
            kept, encoded = mirror.edit(frame, STRENGTH), fresh.edit(frame, STRENGTH).image
            if not (kept.encoded or kept.detected):
                assert not kept.decoded
                assert_same_edit_moved(kept.image, encoded, frame, face_region(mirror.crop_to_frame, (640, 480)))
        assert mirror.slides == len(frames) - 1 and mirror.encodes == 1 and mirror.detections == 1
        assert fresh.slides == 0  # aligned every move again (a crop that comes out the same keeps its latent)

    leaning = Mirror(editor, model)  # the landmarks of a kept face turn with it
    leaning.edit(tilted(astronaut, 0), STRENGTH)
    start = leaning._track.landmarks.copy()
    for degrees in (4, 8):
        leaning.edit(tilted(astronaut, degrees), STRENGTH)
    turn = np.radians(8)  # anticlockwise on the screen, whose y points down
    truth = (start - [319.5, 239.5]) @ np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]]).T + [319.5, 239.5]
    assert leaning.slides == 2 and np.abs(leaning._track.landmarks - truth).max() < 0.3

    corners = Mirror(editor, model)
    corners.edit(slid(astronaut, 0, 0), STRENGTH)
    mouth = corners._track.landmarks[3:5]
    opening = Mirror(editor, model)  # the mouth opens 2 px a frame while the face slides by whole pixels
    for k in range(5):
        opening.edit(slid(astronaut, 3 * k, k, (mouth, 2 * k) if k else None), STRENGTH)
    assert opening.slides == 0 and opening.encodes == 5
    turning = Mirror(editor, model)
    for k, narrower in enumerate([1.0, 0.92, 0.84, 0.76]):
        turning.edit(zoomed(astronaut, 1.0, dx=2 * k, narrower=narrower), STRENGTH)
    assert turning.slides == 0 and turning.encodes == 4  # a change no shift, growth or turn explains is encoded again
