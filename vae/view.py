"""The face region of a photo as the strip, the GIF and the app's live view show it.

A box around the model's crop (with some margin), at the photo's own resolution up to `max_side`:
large enough to see the smile, small enough to send many frames of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .align import covered_box
from .preprocess import IMAGE_SIZE

VIEW_MAX_SIDE = 512
VIEW_MARGIN = 1.6  # the view shows this many times the model's crop around the face


@dataclass(frozen=True)
class FaceView:
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in photo pixels
    size: tuple[int, int]  # (width, height) of the view, at most max_side

    @classmethod
    def around(
        cls, crop_to_photo: np.ndarray, photo_size: tuple[int, int], margin: float = VIEW_MARGIN, max_side: int = VIEW_MAX_SIDE
    ) -> FaceView:
        """The view of the face whose model crop maps to the photo by `crop_to_photo`; photo_size = (width, height)."""
        width, height = photo_size
        x0, y0, x1, y1 = covered_box(crop_to_photo, (IMAGE_SIZE, IMAGE_SIZE), (10**9, 10**9))
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, margin * max(x1 - x0, y1 - y0) / 2
        box = max(0, round(cx - half)), max(0, round(cy - half)), min(width, round(cx + half)), min(height, round(cy + half))
        scale = max(1.0, max(box[2] - box[0], box[3] - box[1]) / max_side)
        return cls(box, (max(1, round((box[2] - box[0]) / scale)), max(1, round((box[3] - box[1]) / scale))))

    @property
    def to_photo(self) -> np.ndarray:
        """3x3 from view pixels to photo pixels, pixel centres matched as the resize maps them."""
        left, top, right, bottom = self.box
        sx, sy = (right - left) / self.size[0], (bottom - top) / self.size[1]
        return np.array([[sx, 0, left + 0.5 * sx - 0.5], [0, sy, top + 0.5 * sy - 0.5], [0, 0, 1.0]])

    def cut(self, photo: np.ndarray) -> np.ndarray:
        """This view of `photo` (H, W, 3) uint8: (h, w, 3) uint8."""
        left, top, right, bottom = self.box
        region = Image.fromarray(photo[top:bottom, left:right])
        return np.asarray(region if self.size == region.size else region.resize(self.size, Image.Resampling.LANCZOS))
