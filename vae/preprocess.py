"""Turn anything a user or a dataset hands us into the model's input: RGB, 128x128, float in [0, 1].

One function (`preprocess`) serves training, vectors, the app and the CLI, so the model always sees
the same framing. The crop is a centred square whose side is 80% of the image's shorter side: on
CelebA's 178x218 aligned faces that is 142x142 around the face, cutting most background and hair
while keeping chin and brows (the recipe's choice).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .image_file import ImageInput, load_image

IMAGE_SIZE = 128
CROP_FRACTION = 0.8


def center_crop(image: Image.Image, fraction: float = CROP_FRACTION) -> Image.Image:
    """The centred square whose side is `fraction` of the shorter side."""
    side = max(1, round(min(image.size) * fraction))
    left = (image.width - side) // 2
    top = (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def crop_and_resize(image: Image.Image, size: int = IMAGE_SIZE, fraction: float = CROP_FRACTION) -> np.ndarray:
    """Centre crop + antialiased resize to an HxWx3 uint8 array (what the training cache stores)."""
    square = center_crop(image, fraction)
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """HxWx3 (or NxHxWx3) uint8 -> 3xHxW (or Nx3xHxW) float32 in [0, 1]. The one way in for pixels."""
    tensor = torch.from_numpy(np.array(pixels, dtype=np.uint8)).float().div_(255.0)
    return tensor.movedim(-1, -3)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> 3xHxW float32 in [0, 1]."""
    return to_tensor(np.asarray(image, dtype=np.uint8))


def to_pixels(tensor: torch.Tensor) -> np.ndarray:
    """3xHxW (or Nx3xHxW) float in [0, 1] -> HxWx3 (or NxHxWx3) uint8, rounded. The one way out."""
    return tensor.detach().float().clamp(0, 1).mul(255).round().byte().movedim(-3, -1).cpu().numpy()


def to_image(tensor: torch.Tensor) -> Image.Image:
    """3xHxW float in [0, 1] -> PIL RGB image."""
    return Image.fromarray(to_pixels(tensor), "RGB")


def preprocess(source: ImageInput, size: int = IMAGE_SIZE, fraction: float = CROP_FRACTION) -> torch.Tensor:
    """Any image input -> 3x`size`x`size` float32 tensor in [0, 1], centre-cropped to `fraction`."""
    return to_tensor(crop_and_resize(load_image(source), size, fraction))
