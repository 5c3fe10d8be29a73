import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from vae.align import COARSE_MIN_FACE, FRAME_POINTS, FRAME_SIZE, FaceAligner, similarity_transform


def test_similarity_transform_recovers_a_known_one():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = np.array([[10.0, 20.0], [50.0, 25.0], [30.0, 70.0]])
    matrix = similarity_transform(src, src @ rotation.T + shift)
    assert np.allclose(matrix[:2, :2], rotation) and np.allclose(matrix[:2, 2], shift)


def test_never_reflects():
    src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mirrored = src * [-1, 1]
    assert np.linalg.det(similarity_transform(src, mirrored)[:2, :2]) > 0


@pytest.fixture(scope="module")
def aligner():
    return FaceAligner()


def test_astronaut_lands_on_celebas_landmarks(aligner, astronaut_path):
    photo = Image.open(astronaut_path).convert("RGB")
    aligned = aligner.align(photo)
    assert aligned.found and aligned.frame.size == FRAME_SIZE
    points = aligner.landmarks(aligned.frame)[0]
    found = np.stack([points[0], points[1], (points[3] + points[4]) / 2])
    assert np.abs(found - FRAME_POINTS).max() < 4  # within a few pixels of CelebA's rule


def test_rotated_photo_is_aligned_upright(aligner, astronaut_path):
    photo = Image.open(astronaut_path).convert("RGB").rotate(25, expand=True, fillcolor=(128, 128, 128))
    aligned = aligner.align(photo)
    points = aligner.landmarks(aligned.frame)[0]
    assert abs(points[0][1] - points[1][1]) < 4  # eyes level again


def test_no_face_is_reported(aligner):
    aligned = aligner.align(Image.new("RGB", (240, 200), (80, 120, 200)))
    assert not aligned.found and aligned.faces_found == 0


def test_a_strip_too_thin_for_any_face_has_none(aligner):
    assert aligner.landmarks(Image.new("RGB", (640, 16), (80, 120, 200))) == []  # MTCNN itself would fail on it
    assert not aligner.align(Image.new("RGB", (16, 900), (80, 120, 200))).found


def test_several_faces_edit_the_largest_and_say_so(astronaut_path):
    from vae.editor import SmileEditor

    face = Image.open(astronaut_path).convert("RGB")
    group = Image.new("RGB", (512 + 384, 512), (128, 128, 128))
    group.paste(face, (0, 0))
    group.paste(face.resize((384, 384)), (512, 64))  # a face box of ~66 px: above the coarse search's smallest
    editor = SmileEditor.from_pretrained(ROOT / "assets")
    prepared = editor.prepare(group)
    assert prepared.aligned.faces_found == 2 and "2 faces found" in prepared.notes[0]
    eye_x = (prepared.aligned.frame_to_photo @ np.array([FRAME_POINTS[0][0], FRAME_POINTS[0][1], 1.0]))[0]
    assert eye_x < 512  # the large face on the left, not the small one


def test_a_face_too_small_for_the_first_detection_side_is_found_on_the_next(astronaut_path):
    photo = Image.new("RGB", (2048, 1536), (128, 128, 128))
    photo.paste(Image.open(astronaut_path).convert("RGB").resize((160, 160)), (1400, 900))  # a face box of ~28 px
    assert FaceAligner(detect_sides=(320,)).landmarks(photo) == []  # ~10 px at that side: below MTCNN's smallest
    (found,) = FaceAligner(detect_sides=(320, 1024)).landmarks(photo)
    (alone,) = FaceAligner(detect_sides=(1024,)).landmarks(photo)
    assert np.allclose(found, alone) and (1400 < found[:, 0]).all() and (900 < found[:, 1]).all()  # in photo px


def test_a_large_face_gets_the_whole_pyramids_landmarks_from_the_coarse_search(astronaut_path):
    photo = Image.open(astronaut_path).convert("RGB").resize((1024, 1024))  # a face box of ~175 px
    aligner = FaceAligner()
    (coarse,) = aligner.landmarks(photo)
    assert (aligner.coarse_kept, aligner.whole_searches) == (1, 0)
    (whole,) = FaceAligner(coarse_first=False).landmarks(photo)
    assert np.abs(coarse - whole).max() < 0.01  # px: float rounding at most


def test_a_face_below_the_coarse_searchs_trusted_size_is_searched_again_with_the_whole_pyramid(astronaut_path):
    photo = Image.open(astronaut_path).convert("RGB").resize((384, 384))  # a face box of ~66 px
    aligner = FaceAligner()
    (found,) = aligner.landmarks(photo)
    assert (aligner.coarse_kept, aligner.whole_searches) == (0, 1)
    assert np.array_equal(found, FaceAligner(coarse_first=False).landmarks(photo)[0])


@pytest.mark.parametrize("size", [(40, 40), (2048, 50), (128, 32)])
def test_an_image_thinner_than_the_coarse_searchs_smallest_face_has_none_and_no_error(size):
    assert min(size) / (1 if max(size) <= 1024 else max(size) / 1024) < COARSE_MIN_FACE
    aligner = FaceAligner()
    assert aligner.landmarks(Image.new("RGB", size, (80, 120, 200))) == []
    assert not aligner.align(Image.new("RGB", size, (80, 120, 200))).found


def test_small_faces_beside_a_large_one_are_not_searched_for(astronaut_path):
    face = Image.open(astronaut_path).convert("RGB")
    group = Image.new("RGB", (1024 + 256, 1024), (128, 128, 128))
    group.paste(face.resize((1024, 1024)), (0, 0))
    group.paste(face.resize((160, 160)), (1060, 400))  # a face box of ~28 px, below the coarse search's smallest
    assert len(FaceAligner(coarse_first=False).landmarks(group)) == 2
    (largest,) = FaceAligner().landmarks(group)  # the large face alone: the coarse search was enough
    assert largest[:, 0].max() < 1024
