"""The mouth-interior renderer: refills the region between the lips at the photo's scale.

The VAE decides *what* the mouth does (how far it opens, where teeth show); its 128-px decode cannot draw
it sharply. The renderer is a small U-Net that, in a fixed-size patch around the mouth, gets

- the photo with a hole over the inner lips (an ellipse from MTCNN's two mouth corners, feathered),
- a hint: a VAE decode warped into the patch (at training time the photo's own reconstruction, at edit
  time decode(z + alpha * step), so the opening it asks for is the edit's),
- the hole itself,

and paints the hole. Everything outside the hole is the photo's own pixels, exactly:
out = hole * net + (1 - hole) * photo. It is trained by `python -m train.renderer` on real photos
(self-supervised: the hidden mouth is the target); training only uses a frozen ImageNet network for its
feature loss and critic, nothing of that is needed here.

Geometry: the patch is PATCH_SIZE (w, h) pixels, upright along the eye line, EYE_PX patch px per eye
distance, centred on the midpoint of the mouth corners.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .align import covered_box, map_points, warp
from .files import atomic_path, atomic_write_text
from .preprocess import to_pixels, to_tensor
from .runtime import inference_precisions
from .transfer import CropChange, moved_points

RENDERER_WEIGHTS = "renderer.safetensors"
RENDERER_CONFIG = "renderer.json"
PATCH_SIZE = (96, 64)  # (w, h) patch px; the U-Net halves three times, so both divide by 8
EYE_PX = 48.0  # patch px per eye distance: CelebA-HQ 256 faces (~68 px) are sampled down, CelebA's (~37 px) up
HOLE_RADII = (0.55, 0.2)  # semi-axes of the hole along and across the mouth-corner line, in corner distances
HOLE_FEATHER = 0.3  # the hole fades to exactly 0 over this share of its radius


def patch_to_photo(landmarks: np.ndarray, size: tuple[int, int] = PATCH_SIZE, eye_px: float = EYE_PX) -> np.ndarray:
    """3x3 from patch px to photo px for MTCNN's five points (eyes, nose, mouth corners): upright along the
    eye line, `eye_px` patch px per eye distance, the mouth corners' midpoint at the patch's centre."""
    left_eye, right_eye = landmarks[0], landmarks[1]
    mouth = (landmarks[3] + landmarks[4]) / 2
    across = right_eye - left_eye
    scale = float(np.hypot(*across)) / eye_px  # photo px per patch px
    c, s = across / np.hypot(*across) * scale
    rotate = np.array([[c, -s], [s, c]])
    centre = np.array([(size[0] - 1) / 2, (size[1] - 1) / 2])
    m = np.eye(3)
    m[:2, :2] = rotate
    m[:2, 2] = mouth - rotate @ centre
    return m


def to_patch(points: np.ndarray, patch_to_image: np.ndarray) -> np.ndarray:
    """(..., 2) image px -> patch px."""
    return map_points(np.linalg.inv(patch_to_image), points)


def hole_mask(
    corners: torch.Tensor,
    size: tuple[int, int] = PATCH_SIZE,
    radii: tuple[float, float] | torch.Tensor = HOLE_RADII,
    shift: torch.Tensor | None = None,
    feather: float = HOLE_FEATHER,
) -> torch.Tensor:
    """(N, 1, h, w): 1 over the inner lips, fading to exactly 0 at the ellipse's edge.

    corners: (N, 2, 2) the two mouth corners (x, y) in patch px. The ellipse is centred on their midpoint
    (plus `shift`, (N, 2) patch px), its axes along and across their line, its semi-axes `radii` ((2,) or
    (N, 2)) times their distance.
    """
    corners = corners.double()
    n = len(corners)
    centre = corners.mean(1) + (0 if shift is None else shift.double())
    along = corners[:, 1] - corners[:, 0]
    distance = along.norm(dim=1).clamp_min(1e-6)
    unit = along / distance[:, None]
    radii = torch.as_tensor(radii, dtype=torch.float64).expand(n, 2) * distance[:, None]
    ys, xs = torch.meshgrid(torch.arange(size[1], dtype=torch.float64), torch.arange(size[0], dtype=torch.float64), indexing="ij")
    dx = xs[None] - centre[:, 0, None, None]
    dy = ys[None] - centre[:, 1, None, None]
    u = dx * unit[:, 0, None, None] + dy * unit[:, 1, None, None]
    v = -dx * unit[:, 1, None, None] + dy * unit[:, 0, None, None]
    radius = torch.sqrt((u / radii[:, 0, None, None]) ** 2 + (v / radii[:, 1, None, None]) ** 2)
    return ((1 - radius) / feather).clamp(0, 1).float()[:, None]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2, True), nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2, True)
    )


@dataclass(frozen=True)
class RendererConfig:
    width: int = 20  # 0.76 M parameters
    patch_size: tuple[int, int] = PATCH_SIZE
    eye_px: float = EYE_PX
    hole_radii: tuple[float, float] = HOLE_RADII
    hole_feather: float = HOLE_FEATHER


class MouthRenderer(nn.Module):
    """A U-Net (three halvings, bilinear upsampling + conv, no transposed convs): the holed photo, the hint and
    the hole in, the patch with its hole painted out; pixels where the hole is 0 are the photo's exactly."""

    def __init__(self, config: RendererConfig | None = None) -> None:
        super().__init__()
        self.config = config or RendererConfig()
        w = self.config.width
        self.down = nn.ModuleList([_block(7, w), _block(w, 2 * w), _block(2 * w, 4 * w), _block(4 * w, 8 * w)])
        self.up = nn.ModuleList([_block(12 * w, 4 * w), _block(6 * w, 2 * w), _block(3 * w, w)])
        self.out = nn.Conv2d(w, 3, 3, padding=1)

    def paint(self, photo: torch.Tensor, hint: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w): what the net draws over the whole patch (only its hole is used)."""
        skips, h = [], torch.cat([photo * (1 - hole), hint, hole], dim=1)
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.avg_pool2d(h, 2))
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = block(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], dim=1))
        return self.out(h)

    def forward(self, photo: torch.Tensor, hint: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """photo, hint (N, 3, h, w) in [0, 1] and hole (N, 1, h, w) -> hole * painted + (1 - hole) * photo."""
        painted = self.paint(photo, hint, hole).to(photo.dtype)
        return hole * painted + (1 - hole) * photo

    def save(self, folder: str | os.PathLike, extra: dict | None = None) -> None:
        """renderer.safetensors (fp32) and renderer.json (its config, plus `extra`, e.g. the training step)."""
        folder = Path(folder)
        with atomic_path(folder / RENDERER_WEIGHTS) as tmp:
            save_file({k: v.detach().float().contiguous() for k, v in self.state_dict().items()}, str(tmp))
        atomic_write_text(folder / RENDERER_CONFIG, json.dumps(asdict(self.config) | (extra or {}), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> MouthRenderer | None:
        """The renderer of a folder, or None when it has none; a weights file missing or adding a tensor is refused."""
        folder = Path(folder)
        if not (folder / RENDERER_WEIGHTS).exists():
            return None
        body = json.loads((folder / RENDERER_CONFIG).read_text())
        fields = RendererConfig.__dataclass_fields__
        config = RendererConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in body.items() if k in fields})
        model = cls(config)
        model.load_state_dict(load_file(str(folder / RENDERER_WEIGHTS)), strict=True)
        return model.eval()


def cut_patch(images: torch.Tensor, patch_to_image: np.ndarray, size: tuple[int, int] = PATCH_SIZE) -> torch.Tensor:
    """(N, C, h, w): images (N, C, H, W) in [0, 1] sampled into the patch (bicubic: the photo's own detail)."""
    return warp(images, patch_to_image, size, mode="bicubic")


@dataclass(frozen=True)
class PaintedMouths:
    """K mouths the renderer painted, sampled back onto the image pixels of `box`: what `put_mouths` blends in. It
    can be put on the next frame of a video again while the face has not moved (the mirror's still face), or
    `moved` with a face that only moved (sampled back again from the renderer's own patch, not repainted)."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in image px
    painted: torch.Tensor  # (K, 3, y1 - y0, x1 - x0)
    weight: torch.Tensor  # (K, 1, y1 - y0, x1 - x0): the hole, exactly 0 where nothing is painted
    patch: torch.Tensor  # (K, 3, h, w): the renderer's painting in its patch
    hole: torch.Tensor  # (K, 1, h, w)
    patch_to_image: np.ndarray  # 3x3
    image_size: tuple[int, int]  # width, height

    @classmethod
    def sampled_back(
        cls, patch: torch.Tensor, hole: torch.Tensor, patch_to_image: np.ndarray, image_size: tuple[int, int]
    ) -> PaintedMouths | None:
        """The patch's painting on the image pixels it covers (bicubic; the hole bilinear); None when it covers none."""
        x0, y0, x1, y1 = covered_box(patch_to_image, (patch.shape[-1], patch.shape[-2]), image_size, margin=2)
        if x1 <= x0 or y1 <= y0:
            return None
        box_to_patch = np.linalg.inv(patch_to_image) @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]])
        size = (x1 - x0, y1 - y0)
        return cls(
            (x0, y0, x1, y1),
            warp(patch, box_to_patch, size, padding="zeros", mode="bicubic"),
            warp(hole, box_to_patch, size, padding="zeros", mode="bilinear"),
            patch,
            hole,
            patch_to_image,
            image_size,
        )

    def moved(self, image_to_image: np.ndarray) -> PaintedMouths | None:
        """The same mouths on a face that moved by the 3x3 `image_to_image` (a similarity, image px -> image px)."""
        return PaintedMouths.sampled_back(self.patch, self.hole, image_to_image @ self.patch_to_image, self.image_size)


def paint_mouths(
    images: np.ndarray,
    landmarks: np.ndarray,
    crop_to_image: np.ndarray,
    decodes: torch.Tensor,
    renderer: MouthRenderer,
    change: CropChange | None = None,
) -> PaintedMouths | None:
    """The renderer's painting of the inside of the lips of K edited images (K, H, W, 3) uint8, each hinted by its
    decode; None when the mouth lies outside the image.

    landmarks: MTCNN's five points in image px (of the unedited face); decodes (K, 3, S, S) the VAE's edited faces
    in the model's crop, `crop_to_image` its 3x3 to image px; `change`: the K edits' transfer, whose motion moved
    the mouth corners (the hole follows them). The patch is cut from `images` (the edit's lips already moved; a
    large face is first sampled down with antialiasing), painted at the renderer's scale and sampled back (bicubic).
    """
    cfg = renderer.config
    height, width = images.shape[1:3]
    to_image = patch_to_photo(landmarks, cfg.patch_size, cfg.eye_px)
    corners = np.repeat(landmarks[None, 3:5], len(images), axis=0)
    if change is not None:
        in_crop = map_points(np.linalg.inv(crop_to_image), landmarks[3:5])
        corners = map_points(crop_to_image, moved_points(change, in_crop))
    hole = hole_mask(
        torch.from_numpy(to_patch(corners, to_image)),
        cfg.patch_size,
        cfg.hole_radii,
        feather=cfg.hole_feather,
    )
    x0, y0, x1, y1 = covered_box(to_image, cfg.patch_size, (width, height), margin=2)
    if x1 <= x0 or y1 <= y0:
        return None
    box = to_tensor(images[:, y0:y1, x0:x1])
    patch_to_box = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]]) @ to_image
    patch = warp(_sampled_down(box, patch_to_box), _down_map(box, patch_to_box), cfg.patch_size, mode="bicubic")
    patch = patch.contiguous(memory_format=torch.channels_last)
    hint = warp(decodes, np.linalg.inv(crop_to_image) @ to_image, cfg.patch_size, mode="bilinear")
    with torch.inference_mode(), _trained_precision():
        painted = renderer.paint(patch, hint, hole).float()
    return PaintedMouths.sampled_back(painted, hole, to_image, (width, height))


def _trained_precision():
    """bf16 autocast where the CPU computes bf16 natively, as the renderer was trained (3x faster on the AMX Xeon:
    17 patches in 23 instead of 72 ms); fp32 elsewhere (emulated bf16 is 10-100x slower)."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if "bf16" in inference_precisions() else contextlib.nullcontext()


def put_mouths(images: np.ndarray, mouths: PaintedMouths | None, amounts: Sequence[float] | None = None) -> np.ndarray:
    """The K images with their painted mouths blended in, each by its amount in [0, 1] (default 1); pixels the hole
    does not reach are returned exactly as given."""
    if mouths is None:
        return images
    x0, y0, x1, y1 = mouths.box
    weight = mouths.weight
    if amounts is not None:
        weight = weight * torch.tensor(list(amounts), dtype=weight.dtype).view(-1, 1, 1, 1)
    out = images.copy()
    inside = (weight > 0).squeeze(1).numpy()
    mixed = to_pixels(to_tensor(images[:, y0:y1, x0:x1]) * (1 - weight) + mouths.painted * weight)
    out[:, y0:y1, x0:x1] = np.where(inside[..., None], mixed, images[:, y0:y1, x0:x1])
    return out


ANTIALIAS_FROM = 2.0  # image px per patch px from which the patch is cut from an antialiased copy (training saw up to ~1.5)


def _down_factor(patch_to_box: np.ndarray) -> int:
    """Whole factor a box is sampled down by before its patch is cut, so that the cut samples it at 1 to 2 px a
    patch px, as in training; 1 for faces up to twice the patch's scale (CelebA-HQ's 256-px faces are about 1.4)."""
    scale = float(np.sqrt(abs(np.linalg.det(patch_to_box[:2, :2]))))  # image px per patch px
    return int(scale) if scale >= ANTIALIAS_FROM else 1


def _sampled_down(box: torch.Tensor, patch_to_box: np.ndarray) -> torch.Tensor:
    factor = _down_factor(patch_to_box)
    if factor == 1:
        return box
    size = (max(1, round(box.shape[-2] / factor)), max(1, round(box.shape[-1] / factor)))
    return F.interpolate(box, size=size, mode="bilinear", antialias=True, align_corners=False)


def _down_map(box: torch.Tensor, patch_to_box: np.ndarray) -> np.ndarray:
    """`patch_to_box` onto the sampled-down box of `_sampled_down` (pixel centres kept)."""
    factor = _down_factor(patch_to_box)
    if factor == 1:
        return patch_to_box
    height, width = box.shape[-2:]
    sy, sx = max(1, round(height / factor)) / height, max(1, round(width / factor)) / width
    to_small = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    return to_small @ patch_to_box
