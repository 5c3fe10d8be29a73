"""The mouth refiner: turns the decoder's blurry mouth into a sharp one, at the photo's resolution.

The transfer (`vae.transfer`) can only add the decoder's change (or move the photo's pixels), which is as blurry as the
128-px decoder: "more" paints a white blob, "less" leaves a ghost of the teeth. The refiner works like
blind face restoration in miniature (GFPGAN, CodeFormer): in a window around the mouth, at the photo's
own scale, the photo's mouth is replaced by the decoded one (`refiner_input`: the decoder's detail on
the photo's own low-frequency colour and light), and a small U-Net draws the sharp mouth back. It was
trained (`python -m train.refiner`) on pairs that real photos give for free (the photo's own decode at
alpha = 0 as input, the photo as target) and, with a patch discriminator, on edited decodes, which have
no target. At edit time the decode is decode(z + alpha * step), so the smile it draws is the edit's.

Pixels outside the mouth ellipse (`mouth_weights`) are never touched by the refiner: there the
transfer's result stands, and outside the face region the photo comes back byte for byte.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .align import covered_box, warp
from .files import atomic_path, atomic_write_text
from .filters import gaussian_blur
from .transfer import crop_landmarks

REFINER_WEIGHTS = "refiner.safetensors"
REFINER_CONFIG = "refiner.json"
MOUTH_RADII = (0.7, 0.45)  # the replaced ellipse, in eye distances: the lips, teeth and mouth corners
MOUTH_FEATHER = 0.35
MAX_SCALE = 2.0  # the refiner works at most at 2 photo px per crop px (a 256-px face); bigger faces are refined downscaled
COLOUR_SIGMA = 8.0  # crop px: the photo's light and colour below this scale stay the photo's


def mouth_weights(window_to_crop: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(1, h, w) weight of the refined mouth in a window: 1 inside the ellipse, fading to exactly 0 at its edge."""
    _, mouth, eyes_apart = crop_landmarks()
    ys, xs = torch.meshgrid(torch.arange(size[1], dtype=torch.float64), torch.arange(size[0], dtype=torch.float64), indexing="ij")
    m = torch.from_numpy(window_to_crop)
    cx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    cy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    radius = torch.sqrt(
        ((cx - mouth[0]) / (MOUTH_RADII[0] * eyes_apart)) ** 2 + ((cy - mouth[1]) / (MOUTH_RADII[1] * eyes_apart)) ** 2
    )
    return ((1 - radius) / MOUTH_FEATHER).clamp(0, 1).float()[None]


@dataclass(frozen=True)
class MouthWindow:
    """Where the refiner works: `size` (w, h) pixels at `scale` window px per crop px, axis-aligned in the crop."""

    to_crop: np.ndarray  # 3x3 window px -> crop px
    to_photo: np.ndarray  # 3x3 window px -> photo px
    size: tuple[int, int]
    scale: float

    @classmethod
    def around(cls, crop_to_photo: np.ndarray, size: tuple[int, int] | None = None, margin: float = 1.15) -> MouthWindow:
        """The window over the mouth ellipse at the photo's scale (at most MAX_SCALE).

        `size` fixes the window's pixel size (training uses 96 x 96); by default it just holds the ellipse.
        """
        native = float(np.sqrt(abs(np.linalg.det(crop_to_photo[:2, :2]))))
        scale = min(native, MAX_SCALE)
        _, mouth, eyes_apart = crop_landmarks()
        if size is None:
            half = np.array(MOUTH_RADII) * eyes_apart * margin * scale
            size = (int(np.ceil(2 * half[0] / 8)) * 8, int(np.ceil(2 * half[1] / 8)) * 8)  # the U-Net halves three times
        to_crop = np.array(
            [[1 / scale, 0, mouth[0] - size[0] / (2 * scale)], [0, 1 / scale, mouth[1] - size[1] / (2 * scale)], [0, 0, 1.0]]
        )
        return cls(to_crop, crop_to_photo @ to_crop, size, scale)

    def from_photo(self, photo: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w): photos (N, 3, H, W) in [0, 1] sampled into the window."""
        return warp(photo, self.to_photo, self.size, mode="bilinear")

    def from_crop(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w): crop-space maps (N, C, 128, 128), e.g. decodes, sampled into the window."""
        return warp(maps, self.to_crop, self.size, mode="bilinear", clamp=False)

    def weights(self) -> torch.Tensor:
        return mouth_weights(self.to_crop, self.size)


def refiner_input(
    photo: torch.Tensor, decoded: torch.Tensor, recon: torch.Tensor, weights: torch.Tensor, scale: float
) -> torch.Tensor:
    """(N, 4, h, w): the window with its mouth replaced by the decode, on the photo's own colour, and the weights.

    decoded - blur(recon) is what the decoder draws finer than COLOUR_SIGMA (lips, teeth, shadows), and
    blur(photo) is the photo's own light and skin, so the seam and the colour are the photo's.
    At alpha = 0 (decoded == recon) this is the training input; the target is then the photo itself.
    """
    sigma = COLOUR_SIGMA * scale
    replaced = gaussian_blur(photo, sigma) + decoded - gaussian_blur(recon, sigma)
    mixed = photo * (1 - weights) + replaced * weights
    return torch.cat([mixed, weights.expand(len(mixed), -1, -1, -1)], dim=1)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2, True), nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2, True)
    )


class MouthRefiner(nn.Module):
    """A small U-Net (three halvings): the window and its weights in, the refined window out.

    It predicts a change that is added only where the weights are not zero, so the window's edge and
    everything outside the mouth ellipse stay exactly what came in.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.width = width
        w = width
        self.down = nn.ModuleList([_block(4, w), _block(w, 2 * w), _block(2 * w, 4 * w), _block(4 * w, 4 * w)])
        self.up = nn.ModuleList([_block(8 * w, 2 * w), _block(4 * w, w), _block(2 * w, w)])
        self.out = nn.Conv2d(w, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image, weights = x[:, :3], x[:, 3:4]
        skips, h = [], x
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.avg_pool2d(h, 2))
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = block(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        return image + weights * self.out(h)

    def save(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        with atomic_path(folder / REFINER_WEIGHTS) as tmp:
            save_file({k: v.detach().half().contiguous() for k, v in self.state_dict().items()}, str(tmp))
        atomic_write_text(folder / REFINER_CONFIG, json.dumps({"width": self.width}, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> MouthRefiner | None:
        """The refiner of a model folder, or None when the folder has none."""
        folder = Path(folder)
        if not (folder / REFINER_WEIGHTS).exists():
            return None
        model = cls(**json.loads((folder / REFINER_CONFIG).read_text()))
        model.load_state_dict({k: v.float() for k, v in load_file(str(folder / REFINER_WEIGHTS)).items()})
        return model.eval()


REFINE_RAMP = 1.0  # |alpha| over which the refined mouth fades in: at 0 the photo is the photo itself


def refine_mouths(
    images: np.ndarray,
    crop_to_image: np.ndarray,
    decoded: torch.Tensor,
    recon: torch.Tensor,
    strengths: list[float],
    refiner: MouthRefiner,
) -> np.ndarray:
    """(K, H, W, 3) uint8: the mouths of K edited images (already carrying the transfer) redrawn sharp
    from the K decodes; only pixels under the mouth ellipse change, and none at all where a strength is 0."""
    ramps = torch.tensor([min(1.0, abs(s) / REFINE_RAMP) for s in strengths])
    if not ramps.any():
        return images
    window = MouthWindow.around(crop_to_image)
    height, width = images.shape[1:3]
    x0, y0, x1, y1 = covered_box(window.to_photo, window.size, (width, height))
    if x1 <= x0 or y1 <= y0:
        return images
    tensor = torch.from_numpy(np.ascontiguousarray(images[:, y0:y1, x0:x1])).permute(0, 3, 1, 2).float() / 255
    box_to_photo = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]])
    in_box = MouthWindow(window.to_crop, np.linalg.inv(box_to_photo) @ window.to_photo, window.size, window.scale)
    weights = window.weights()[None]
    inputs = refiner_input(
        in_box.from_photo(tensor), window.from_crop(decoded.float()), window.from_crop(recon.float()[None]), weights, window.scale
    )
    with torch.inference_mode():
        refined = refiner(inputs).clamp(0, 1)
    box_to_window = np.linalg.inv(in_box.to_photo)
    back = warp(
        torch.cat([refined, weights.expand(len(refined), -1, -1, -1)], 1),
        box_to_window,
        (x1 - x0, y1 - y0),
        padding="zeros",
        mode="bilinear",
        clamp=False,
    )
    blend = back[:, 3:4] * ramps.view(-1, 1, 1, 1)
    mixed = ((tensor * (1 - blend) + back[:, :3] * blend) * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    out = images.copy()
    touched = (blend[:, 0] > 0).numpy()[..., None]
    out[:, y0:y1, x0:x1] = np.where(touched, mixed, images[:, y0:y1, x0:x1])
    return out
