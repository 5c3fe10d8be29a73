"""Face alignment into CelebA's framing, and the maps between the photo, the frame and the model's crop.

CelebA's own rule (from the dataset author's code): a non-reflective similarity transform maps the
left eye, the right eye and the mouth centre (mean of the mouth corners) to fixed points of a
178x218 frame, 1-based: (70.745, 112), (108.237, 112), (89.432, 153.514); bicubic, border
replicated. Landmarks come from facenet-pytorch's MTCNN, whose weights ship inside its wheel.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .preprocess import CROP_FRACTION, IMAGE_SIZE, pil_to_tensor, to_image

if TYPE_CHECKING:
    from facenet_pytorch import MTCNN

FRAME_SIZE = (178, 218)  # width, height of CelebA's aligned images
FRAME_POINTS = np.array([[70.745, 112.0], [108.237, 112.0], [89.432, 153.514]]) - 1.0  # 0-based pixel centres
DETECT_SIDES = (1024,)  # detection runs on downscaled copies of large photos, tried in this order until a face is found
DETECT_MIN_SIDE = 20  # MTCNN's smallest face (its min_face_size); an image thinner than a search's smallest face has none
PYRAMID_FACTOR = 0.709  # MTCNN's step between the scales of its image pyramid
# A first, coarse search: MTCNN's own pyramid less its three finest levels (each level costs about twice the next,
# so those three are most of its time). Where the largest face it finds is well above its smallest, that face's
# landmarks are the full search's to within float rounding (under 1e-4 eye distances on pasted CelebA-HQ faces:
# `python -m bench.detection`); a smaller face, or none, is searched for again with the whole pyramid.
COARSE_MIN_FACE = DETECT_MIN_SIDE / PYRAMID_FACTOR**3  # ~56 px
COARSE_TRUSTED_SIDE = 1.5 * COARSE_MIN_FACE  # ~84 px: the largest face's box side from which the coarse search is kept
NO_FACES = (np.zeros((0, 4)), np.zeros((0, 5, 2)))  # a search's boxes and landmarks when it finds nothing


@dataclass
class AlignedFace:
    """A face warped into the CelebA frame, and how to get back to the photo."""

    frame: Image.Image  # 178x218 RGB, ready for the usual centre crop
    frame_to_photo: np.ndarray  # 3x3: frame pixel -> photo pixel
    faces_found: int  # 0 means no face: `frame` is then the plain photo and the matrix the identity; with a large
    # largest face, the coarse search's count (faces of ~56 px or more in the detection copy; FaceAligner.landmarks)
    landmarks: np.ndarray | None = None  # (5, 2) MTCNN's points in photo px (eyes, nose, mouth corners), when found

    @property
    def found(self) -> bool:
        return self.faces_found > 0


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation (no reflection) taking src to dst; 3x3."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / src_c.var(0).sum()
    matrix = np.eye(3)
    matrix[:2, :2] = scale * rotation
    matrix[:2, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def warp(
    images: torch.Tensor,
    out_to_src: np.ndarray,
    out_size: tuple[int, int],
    padding: str = "border",
    mode: str = "bicubic",
    clamp: bool = True,
) -> torch.Tensor:
    """Sample (C, H, W) or (N, C, H, W) images at `out_to_src` @ (x, y, 1) for every output pixel centre."""
    width, height = out_size
    src_h, src_w = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    m = torch.from_numpy(out_to_src)
    sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    grid = torch.stack([(2 * sx + 1) / src_w - 1, (2 * sy + 1) / src_h - 1], dim=-1).float()[None]
    batch = images.float() if images.dim() == 4 else images.float()[None]
    out = F.grid_sample(batch, grid.expand(len(batch), -1, -1, -1), mode=mode, padding_mode=padding, align_corners=False)
    out = out.clamp(0, 1) if clamp else out
    return out if images.dim() == 4 else out[0]


def align_to_frame(photo: Image.Image, landmarks: np.ndarray) -> AlignedFace:
    """Warp `photo` so that MTCNN's five landmarks (eyes, nose, mouth corners) sit on CelebA's points."""
    left_eye, right_eye, mouth = landmarks[0], landmarks[1], (landmarks[3] + landmarks[4]) / 2
    photo_to_frame = similarity_transform(np.stack([left_eye, right_eye, mouth]), FRAME_POINTS)
    frame_to_photo = np.linalg.inv(photo_to_frame)
    frame = to_image(warp(pil_to_tensor(photo), frame_to_photo, FRAME_SIZE))
    return AlignedFace(frame, frame_to_photo, faces_found=1, landmarks=np.asarray(landmarks, float))


def crop_to_frame(frame_size: tuple[int, int], size: int = IMAGE_SIZE, fraction: float = CROP_FRACTION) -> np.ndarray:
    """3x3 from pixels of the model's size x size centre crop to pixels of the frame it was cut from."""
    side = max(1, round(min(frame_size) * fraction))
    left, top = (frame_size[0] - side) // 2, (frame_size[1] - side) // 2
    scale = side / size
    return np.array([[scale, 0, left + 0.5 * scale - 0.5], [0, scale, top + 0.5 * scale - 0.5], [0, 0, 1.0]])


class FaceAligner:
    """MTCNN landmarks + CelebA's similarity rule. Loads MTCNN on first use (a few MB, offline)."""

    def __init__(self, device: str = "cpu", detect_sides: tuple[int, ...] = DETECT_SIDES, coarse_first: bool = True) -> None:
        self.device = device
        self.detect_sides = detect_sides
        self.coarse_first = coarse_first
        self._detectors: dict[float, MTCNN] = {}  # MTCNN per smallest face size (they share nothing but the weights file)
        self._lock = threading.Lock()  # a server's first requests may race to build the detectors
        self.coarse_kept = 0  # searches answered by the coarse search alone, and by the whole pyramid: what benchmarks count
        self.whole_searches = 0

    def _detector(self, min_face: float) -> MTCNN:
        with self._lock:
            if min_face not in self._detectors:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from facenet_pytorch import MTCNN
                self._detectors[min_face] = MTCNN(
                    min_face_size=min_face, factor=PYRAMID_FACTOR, keep_all=True, device=self.device, post_process=False
                )
        return self._detectors[min_face]

    def warm_up(self) -> None:
        """Build both detectors and run them once (a grey image: no face, so the whole pyramid runs after the
        coarse search), so a server's first upload is not the slow one."""
        self.landmarks(Image.new("RGB", (160, 160), (128, 128, 128)))

    def landmarks(self, photo: Image.Image, coarse_first: bool | None = None) -> list[np.ndarray]:
        """Five landmarks per detected face, largest face first, in photo pixel coordinates: from the first of
        `detect_sides` (the photo's longer side scaled down to it) that finds a face. Coarse first (this
        aligner's `coarse_first` unless said here), a photo whose largest face is large is searched once,
        coarsely (see COARSE_MIN_FACE): small faces beside it are then not counted."""
        coarse = self.coarse_first if coarse_first is None else coarse_first
        for side in self.detect_sides:
            scale = min(1.0, side / max(photo.size))
            faces = self._landmarks_at(photo, scale, coarse)
            if faces or scale == 1.0:  # a larger side would see the same pixels
                return faces
        return []

    def _landmarks_at(self, photo: Image.Image, scale: float, coarse_first: bool) -> list[np.ndarray]:
        small = (
            photo
            if scale == 1.0
            else photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BILINEAR)
        )
        coarse_boxes, coarse_points = self._detect(small, COARSE_MIN_FACE) if coarse_first else NO_FACES
        if len(coarse_boxes) and min(coarse_boxes[0, 2:] - coarse_boxes[0, :2]) >= COARSE_TRUSTED_SIDE:
            self.coarse_kept += 1
            return [face / scale for face in coarse_points]
        self.whole_searches += 1
        _, points = self._detect(small, DETECT_MIN_SIDE)
        if not len(points):  # the whole pyramid's batches differ: never lose a face the coarse search saw
            points = coarse_points
        return [face / scale for face in points]

    def _detect(self, image: Image.Image, min_face: float) -> tuple[np.ndarray, np.ndarray]:
        """MTCNN's boxes (n, 4) and landmarks (n, 5, 2), largest box first, in `image` px; none in an image
        thinner than `min_face` (MTCNN's pyramid would have no level, and it would fail)."""
        if min(image.size) < min_face:
            return NO_FACES
        with torch.inference_mode():
            boxes, _, points = self._detector(min_face).detect(image, landmarks=True)
        if boxes is None:
            return NO_FACES
        boxes = np.asarray(np.asarray(boxes).tolist(), float)
        points = np.asarray(np.asarray(points).tolist(), float)  # numpy 2: MTCNN may hand back object arrays
        areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
        order = np.argsort(-areas)
        return boxes[order], points[order]

    def align(self, photo: Image.Image) -> AlignedFace:
        """The largest face in the CelebA frame; with no face, the photo itself and found=False."""
        faces = self.landmarks(photo)
        if not faces:
            return AlignedFace(photo, np.eye(3), faces_found=0)
        aligned = align_to_frame(photo, faces[0])
        aligned.faces_found = len(faces)
        return aligned


def map_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., 2) through a 3x3 affine map (photo, frame, crop or patch px to another of them)."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def covered_box(
    to_image: np.ndarray, source_size: tuple[int, int], image_size: tuple[int, int], margin: int = 0
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the pixels of an image that a width x height source mapped by `to_image` covers
    (plus `margin` px each side), clipped to the image."""
    (w, h), (width, height) = source_size, image_size
    corners = to_image @ np.array([[0, w, 0, w], [0, 0, h, h], [1, 1, 1, 1]], dtype=float)
    x0, y0 = np.floor(corners[:2].min(1)).astype(int) - margin
    x1, y1 = np.ceil(corners[:2].max(1)).astype(int) + margin
    return max(0, int(x0)), max(0, int(y0)), min(width, int(x1)), min(height, int(y1))
