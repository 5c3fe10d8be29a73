"""How a face moved between two video frames: a shift by phase correlation, then the similarity (shift, scale,
turn) that takes an earlier grey patch of the face onto this frame, and how much is left that no similarity
explains (the face changed: it turned, or its expression moved).

Patches are PATCH x PATCH grey images of a square `box` of frame pixels, box-averaged (so a camera's noise
and its sub-pixel sampling average out). Pixel coordinates follow `vae.align`: pixel j's centre is at j.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PATCH = 64  # side of the grey patch the tracker correlates
MARGIN = 16  # patch px around the box a fitted similarity may reach (a quarter of the patch)
FIT_BORDER = 2  # patch px at the template's edges the fit leaves out (their gradients are one-sided)
BLOCK = 8  # side of the blocks whose mean levels say whether a face changed

Box = tuple[int, int, int, int]


def grey_patch(frame: np.ndarray, box: Box, margin: int = 0) -> np.ndarray:
    """((PATCH + 2 margin)^2) float grey of the square `box` in `frame`, grown by `margin` patch px on each side
    (black past the frame's edges). The growth must be whole frame px, so that the grown patch's inner
    PATCH x PATCH is the plain one's pixels."""
    x0, y0, x1, y1 = box
    if x1 - x0 != y1 - y0 or (x1 - x0) * margin % PATCH:
        raise ValueError(f"A patch's box must be square, its side times {margin} a multiple of {PATCH}: {box}")
    grow = (x1 - x0) * margin // PATCH
    grown = (x0 - grow, y0 - grow, x1 + grow, y1 + grow)
    inside = (max(0, grown[0]), max(0, grown[1]), min(frame.shape[1], grown[2]), min(frame.shape[0], grown[3]))
    region = Image.fromarray(frame[inside[1] : inside[3], inside[0] : inside[2]]).convert("L")
    if inside != grown:
        padded = Image.new("L", (grown[2] - grown[0], grown[3] - grown[1]))
        padded.paste(region, (inside[0] - grown[0], inside[1] - grown[1]))
        region = padded
    side = PATCH + 2 * margin
    return np.asarray(region.resize((side, side), Image.Resampling.BOX), dtype=np.float32)


def _block_means(image: np.ndarray) -> np.ndarray:
    """(n / BLOCK, n / BLOCK): the means of an (n, n) image's BLOCK x BLOCK tiles."""
    return image.reshape(image.shape[0] // BLOCK, BLOCK, image.shape[1] // BLOCK, BLOCK).mean((1, 3))


def block_change(a: np.ndarray, b: np.ndarray) -> float:
    """The largest mean |a - b| over the tiles: a mouth that moves counts, noise averages out."""
    return float(_block_means(np.abs(a - b)).max())


def phase_correlation(reference: np.ndarray, moved: np.ndarray) -> tuple[float, float, float]:
    """(dx, dy, peak): the shift that takes `reference` to `moved` (same-shape grey patches), sub-pixel."""
    window = _HANN if reference.shape == _HANN.shape else np.outer(np.hanning(reference.shape[0]), np.hanning(reference.shape[1]))
    a = np.fft.rfft2((reference - reference.mean()) * window)
    b = np.fft.rfft2((moved - moved.mean()) * window)
    cross = b * np.conj(a)
    surface = np.fft.irfft2(cross / (np.abs(cross) + 1e-9), s=reference.shape)
    iy, ix = np.unravel_index(int(surface.argmax()), surface.shape)
    peak = float(surface[iy, ix])

    def refine(values: tuple[float, float, float]) -> float:
        left, centre, right = values
        denominator = left - 2 * centre + right
        return 0.0 if abs(denominator) < 1e-12 else 0.5 * (left - right) / denominator

    h, w = surface.shape
    dy = iy + refine((surface[(iy - 1) % h, ix], surface[iy, ix], surface[(iy + 1) % h, ix]))
    dx = ix + refine((surface[iy, (ix - 1) % w], surface[iy, ix], surface[iy, (ix + 1) % w]))
    dy = dy - h if dy > h / 2 else dy
    dx = dx - w if dx > w / 2 else dx
    return float(dx), float(dy), peak


def _similarity(a: float, b: float, tx: float, ty: float) -> np.ndarray:
    return np.array([[1 + a, -b, tx], [b, 1 + a, ty], [0, 0, 1.0]])


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`image` sampled at (x, y) pixel positions, bilinearly, clamped to its edges."""
    h, w = image.shape
    x, y = np.clip(x, 0, w - 1.001), np.clip(y, 0, h - 1.001)
    left, top = x.astype(np.intp), y.astype(np.intp)
    fx, fy = x - left, y - top
    upper = image[top, left] * (1 - fx) + image[top, left + 1] * fx
    lower = image[top + 1, left] * (1 - fx) + image[top + 1, left + 1] * fx
    return upper * (1 - fy) + lower * fy


_CENTRED = np.arange(PATCH) - (PATCH - 1) / 2
_U, _V = np.meshgrid(_CENTRED, _CENTRED)  # the patch's pixel positions, centred: a similarity turns and scales about the centre
_HANN = np.outer(np.hanning(PATCH), np.hanning(PATCH))
FACE_WIDTH = 1.3  # the face ellipse's half width, in eye distances (cheek to cheek)
FACE_HEIGHT = 1.6  # its half height, in eye-to-mouth distances (brows to chin), about the point between eyes and mouth


def face_weights(landmarks: np.ndarray, box: Box) -> np.ndarray:
    """(PATCH, PATCH) 1 inside the face's ellipse (from five landmarks in frame px, turned with the eyes' line), 0
    outside: the background around a face does not move with it, so neither the fit nor the check looks at it."""
    scale = (box[2] - box[0]) / PATCH
    points = (landmarks - [box[0], box[1]] + 0.5) / scale - 0.5 - (PATCH - 1) / 2  # centred patch px
    eyes, mouth = (points[0] + points[1]) / 2, (points[3] + points[4]) / 2
    across = points[1] - points[0]
    width = FACE_WIDTH * float(np.linalg.norm(across))
    height = FACE_HEIGHT * float(np.linalg.norm(mouth - eyes))
    cos, sin = across / max(1e-6, float(np.linalg.norm(across)))
    centre = (eyes + mouth) / 2
    u, v = _U - centre[0], _V - centre[1]
    return ((((cos * u + sin * v) / width) ** 2 + ((-sin * u + cos * v) / height) ** 2) <= 1).astype(np.float64)


@dataclass(frozen=True)
class Template:
    """A face's grey patch, made ready once for fitting the similarity that takes it onto later frames
    (inverse-compositional Lucas-Kanade, weighted to the face: its gradients and normal equations do not change)."""

    box: Box
    patch: np.ndarray  # (PATCH, PATCH)
    solve: np.ndarray  # (4, PATCH^2): weighted least squares from the pixels' errors to a step of (scale, turn, dx, dy)
    blocks: np.ndarray  # (PATCH / BLOCK,) * 2 bool: the tiles mostly on the face, which the check looks at

    @classmethod
    def of(cls, patch: np.ndarray, box: Box, landmarks: np.ndarray) -> Template:
        weights = face_weights(landmarks, box)
        weights[:FIT_BORDER], weights[-FIT_BORDER:], weights[:, :FIT_BORDER], weights[:, -FIT_BORDER:] = 0, 0, 0, 0
        gy, gx = np.gradient(patch.astype(np.float64))  # one-sided at the edges, which the weights leave out
        steepest = np.stack([gx * _U + gy * _V, gy * _U - gx * _V, gx, gy]).reshape(4, -1)
        weighted = steepest * weights.ravel()
        blocks = _block_means(face_weights(landmarks, box)) >= 0.5
        return cls(box, patch, np.linalg.solve(weighted @ steepest.T, weighted), blocks)


def _patch_to_frame(box: Box) -> np.ndarray:
    """3x3 from centred patch px to frame px."""
    x0, y0, x1, _ = box
    scale = (x1 - x0) / PATCH
    return np.array([[scale, 0, x0 + scale * PATCH / 2 - 0.5], [0, scale, y0 + scale * PATCH / 2 - 0.5], [0, 0, 1.0]])


@dataclass(frozen=True)
class Fit:
    """The similarity that takes the template's face onto a frame, and how well it does."""

    to_frame: np.ndarray  # 3x3 frame px -> frame px: where a point of the template's frame is in this one
    change: float  # the largest change of a face tile's mean level that the similarity leaves (8-bit levels)
    scale: float  # the face's size over the template's


def inner(grown: np.ndarray) -> np.ndarray:
    """The plain PATCH x PATCH patch inside a grown one (`grey_patch(..., MARGIN)`): the same pixels."""
    return grown[MARGIN:-MARGIN, MARGIN:-MARGIN]


def fit_similarity(
    template: Template, image: np.ndarray, frame_size: tuple[int, int], shift: tuple[float, float], iterations: int = 12
) -> Fit | None:
    """The similarity, from a first guess `shift` (patch px, e.g. phase correlation's), onto `image`: this frame's
    `grey_patch(frame, template.box, MARGIN)`, the frame (width, height) px. None when the fit did not settle, or
    the box it moved went past its grown copy or the frame's edges."""
    warp = _similarity(0.0, 0.0, *shift)
    offset = MARGIN + (PATCH - 1) / 2  # centred patch px -> the grown image's px

    def sample(warp: np.ndarray) -> np.ndarray:
        x = warp[0, 0] * _U + warp[0, 1] * _V + warp[0, 2] + offset
        return _bilinear(image, x, warp[1, 0] * _U + warp[1, 1] * _V + warp[1, 2] + offset)

    for _ in range(iterations):
        step = template.solve @ (sample(warp) - template.patch).ravel()
        warp = warp @ np.linalg.inv(_similarity(*step))
        if np.abs(step[2:]).max() < 0.01 and np.abs(step[:2]).max() < 1e-4:
            break
    else:
        return None
    corners = warp @ np.array([[-1, 1, -1, 1], [-1, -1, 1, 1], [2 / PATCH] * 4]) * (PATCH / 2)
    if np.abs(corners[:2]).max() > PATCH / 2 + MARGIN:
        return None  # the face went past the grown box
    to_frame = _patch_to_frame(template.box) @ warp @ np.linalg.inv(_patch_to_frame(template.box))
    x0, y0, x1, y1 = template.box
    x, y = to_frame[:2] @ np.array([[x0, x1, x0, x1], [y0, y0, y1, y1], [1, 1, 1, 1]])
    if x.min() < 0 or y.min() < 0 or x.max() > frame_size[0] or y.max() > frame_size[1]:
        return None  # partly out of the frame: align again
    change = float(np.abs(_block_means(sample(warp) - template.patch))[template.blocks].max())
    return Fit(to_frame, change, float(np.hypot(warp[0, 0], warp[1, 0])))
