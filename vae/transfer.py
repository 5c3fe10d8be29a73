"""The transfer: put the VAE's *edit* on the person's photo, never the VAE's face.

A 64-d VAE reconstructs the gist of a face (~21 dB), not the person. So the photo keeps every one of
its own pixels and only the change that the edit makes is added, mapped back through the alignment:

    photo + warp(weight * flatten(decode(z + a * step) - decode(z)))

- The decoder's own error cancels in the difference, so identity and detail stay the photo's.
- `flatten` subtracts a wide Gaussian blur of the difference and then its remaining mean colour: the
  smile direction also drifts skin tone and lighting (faces turn grey on the "less" side); a smile is
  shape (mouth, teeth, cheeks), so only that is kept and the face's mean colour does not move.
- `weight` is the face ellipse below the eyes (fading in between the eyes and the mouth), exactly zero
  outside it: every pixel outside that region comes back byte for byte, and the eyes and brows, what
  recognising a person rests on most, stay the photo's. (It can also be raised over the mouth and
  cheeks; on validation photos that flipped more smiles but cost the person, so the shipped gain is 0.)
- `follow_flow`: the decoder's change is mostly shape, lips and cheeks moving, so
  the photo's own pixels are moved along the optical flow from decode(z) to decode(z + a * step) (they
  stay as sharp as the photo), and only what the flow cannot explain (teeth appearing, shading) is added;
  with m = weight * flow in the crop and A the crop -> photo scale and rotation:

      photo(x + A warp(m)) + warp(weight * flatten(decode(z + a * step) - decode(z)(x + m)))

Which variant runs is a `TransferSettings` in the model's editor.json (written by `evaluation.photos`;
the shipped one follows the flow); the variants that lost are measured in docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .align import FRAME_POINTS, FRAME_SIZE, covered_box, crop_to_frame, warp
from .filters import gaussian_blur
from .preprocess import IMAGE_SIZE, to_pixels, to_tensor
from .settings import TransferSettings

FACE_FEATHER = 0.12  # the face ellipse fades out over this share of its radius
CHEEKS_FEATHER = 0.5
FLOW_WINDOW = 6.0  # sigma (crop px) of the window each pixel's flow is fitted over: wider than a lip
FLOW_DAMPING = 3e-4  # added to the fit's diagonal: where the decode has little texture, little flow
MAX_FLOW = 8.0  # crop px; a smile moves the mouth corners a few px, a runaway fit could move more
LUMA = (0.299, 0.587, 0.114)
LIPS_RADII = (0.6, 0.35)  # the lips and the mouth between them, in eye distances about CelebA's mouth point (crop px)
STRIP_PIXELS = 2**19  # image pixels an edit is applied to at once (a webcam's face box fits in one)
WHOLE_FACE = TransferSettings(mouth_gain=0.0, lower_face=False)  # the region an edit may touch at most


def _ellipse(size: int, centre: tuple[float, float], radii: tuple[float, float], feather: float) -> torch.Tensor:
    """size x size map: 1 inside the ellipse, fading to exactly 0 over `feather` of its radius."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    radius = torch.sqrt(((xs - centre[0]) / radii[0]) ** 2 + ((ys - centre[1]) / radii[1]) ** 2)
    return ((1 - radius) / feather).clamp(0, 1)


def crop_landmarks(size: int = IMAGE_SIZE) -> tuple[float, np.ndarray, float]:
    """(the eyes' row, the mouth centre (x, y), the eye distance) in pixels of the model's aligned crop."""
    frame_to_crop = np.linalg.inv(crop_to_frame(FRAME_SIZE, size))
    eye_y = float((frame_to_crop @ np.append(FRAME_POINTS[0], 1.0))[1])
    mouth = (frame_to_crop @ np.append(FRAME_POINTS[2], 1.0))[:2]
    return eye_y, mouth, float(frame_to_crop[0, 0] * (FRAME_POINTS[1, 0] - FRAME_POINTS[0, 0]))


def region_weights(transfer: TransferSettings, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Per-pixel weight of the edit in the model's crop; zero outside the inscribed face ellipse.

    The crop is aligned, so the eyes and the mouth sit where CelebA puts them: the raised region is
    centred on CelebA's mouth point and spans the lower face between the cheeks (`mouth_gain`); `lower_face` fades the
    edit in from below the eyes (a quarter of the way to the mouth) to above the mouth, leaving eyes and
    brows, what recognising a person rests on most, as they are.
    """
    eye_y, mouth, eyes_apart = crop_landmarks(size)
    half = (size - 1) / 2
    face = _ellipse(size, (half, half), (half - 0.5, half - 0.5), FACE_FEATHER)  # zero on the crop's border
    cheeks = _ellipse(size, (float(mouth[0]), float(mouth[1]) - 3), (1.0 * eyes_apart, 0.7 * eyes_apart), CHEEKS_FEATHER)
    weights = face * (1 + transfer.mouth_gain * cheeks)
    if transfer.lower_face:
        top, bottom = eye_y + 0.25 * (mouth[1] - eye_y), eye_y + 0.6 * (mouth[1] - eye_y)
        rows = torch.arange(size, dtype=torch.float32)[:, None]
        weights = weights * ((rows - top) / (bottom - top)).clamp(0, 1)
    return weights


@dataclass(frozen=True)
class CropChange:
    """What K edits do to the photo, in the model's crop: its pixels moved by `motion`, then `colour` added.

    Both are exactly zero wherever the region weight is zero, so those pixels of the photo stay as they are.
    """

    colour: torch.Tensor  # (K, 3, S, S) added, in [0, 1] units
    motion: torch.Tensor | None = None  # (K, 2, S, S) crop px (dx, dy): a pixel takes the photo's at x + motion

    def __len__(self) -> int:
        return len(self.colour)

    def pick(self, indices: Sequence[int]) -> CropChange:
        indices = list(indices)
        return CropChange(self.colour[indices], None if self.motion is None else self.motion[indices])


def decoder_flow(edited: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """(K, 2, S, S) crop px (dx, dy): where each pixel of the K decoded edits lies in decode(z).

    One damped Lucas-Kanade step on luma, batched in torch (about 2.5 ms an edit; skimage's pyramid took
    95 ms). The decoder's change is part motion, part new brightness (teeth): a wide window and damping
    keep the brightness from being explained as large motion, and what the flow leaves is added as colour
    (`crop_changes`). Visual checks of 3 levels x 3 steps and of smaller windows: lips and jaws warped by
    6-14 px. Two equal images give exactly zero flow.
    """
    luma = torch.tensor(LUMA).view(1, 3, 1, 1)
    target = (edited.float() * luma).sum(1, keepdim=True)
    source = (recon.float()[None] * luma).sum(1, keepdim=True)
    padded = F.pad(source, (1, 1, 1, 1), mode="replicate")
    gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    error = source - target
    xx, xy, yy = gaussian_blur(torch.cat([gx * gx, gx * gy, gy * gy], 1), FLOW_WINDOW)[0] + torch.tensor(
        [FLOW_DAMPING, 0, FLOW_DAMPING]
    ).view(3, 1, 1)
    xe, ye = gaussian_blur(torch.cat([gx * error, gy * error], 1), FLOW_WINDOW).unbind(1)
    det = xx * yy - xy * xy
    flow = -torch.stack([yy * xe - xy * ye, xx * ye - xy * xe], 1) / det
    return flow.clamp(-MAX_FLOW, MAX_FLOW)


def moved(images: torch.Tensor, motion: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """(K, C, H, W): each pixel x of `images` (1 or K, C, H, W) taken from x + motion (px), borders repeated."""
    k, _, height, width = motion.shape
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
    grid = torch.stack([(xs + motion[:, 0]) * 2 / (width - 1) - 1, (ys + motion[:, 1]) * 2 / (height - 1) - 1], dim=-1)
    return F.grid_sample(images.float().expand(k, -1, -1, -1), grid, mode=mode, padding_mode="border", align_corners=True)


def _moved_where(images: torch.Tensor, motion: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """`moved`, but exactly `images` wherever the motion is zero (resampling in place is off by ~3e-6)."""
    still = (motion == 0).all(1, keepdim=True)
    return torch.where(still, images.float(), moved(images, motion, mode))


def crop_changes(edited: torch.Tensor, recon: torch.Tensor, transfer: TransferSettings) -> CropChange:
    """What to do to the photo, in crop space, from K decoded edits (K, 3, S, S) and decode(z) (3, S, S).

    `flatten_sigma=0` keeps the plain difference (the prototype's variant, kept for the evaluation's
    comparison); `follow_flow` moves the photo along the decoder's flow and keeps only what it leaves,
    and then the colour also takes back the mean colour the moved pixels carry (measured on decode(z)),
    so the face's mean colour stays put either way. `residual_gain` scales what is added beyond the moved
    pixels (0: the photo's own pixels, moved, keep their colours: no painted shading at the cheeks and jaw).
    """
    weights = region_weights(transfer, edited.shape[-1])
    motion = decoder_flow(edited, recon) * weights if transfer.follow_flow else None
    base = recon.float()[None] if motion is None else _moved_where(recon.float()[None], motion)
    diff = (edited.float() - base) * transfer.residual_gain
    if transfer.flatten_sigma:
        diff = diff - gaussian_blur(diff, transfer.flatten_sigma)
        carried = 0 if motion is None else (base - recon.float()).sum((-2, -1), keepdim=True)  # what moving shifts
        diff = diff - ((diff * weights).sum((-2, -1), keepdim=True) + carried) / weights.sum()
    colour = diff * weights
    return CropChange(colour if not transfer.shade_limit else _shade_limited(colour, transfer.shade_limit), motion)


def _shade_limited(colour: torch.Tensor, levels: float) -> torch.Tensor:
    """`colour` (K, 3, S, S) with its darkening outside the lips held to `levels` (8-bit): each pixel's change
    scaled down until its luminance falls by no more. The blurry decode's shading at the cheeks and the jaw
    lays dark patches on a photo; the mouth opening (teeth, the dark inside) keeps all of it."""
    _, mouth, eyes_apart = crop_landmarks(colour.shape[-1])
    lips = _ellipse(
        colour.shape[-1], (float(mouth[0]), float(mouth[1])), (LIPS_RADII[0] * eyes_apart, LIPS_RADII[1] * eyes_apart), 0.5
    )
    luma = (colour * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    floor = -levels / 255
    scale = torch.where(luma < floor, floor / luma.clamp(max=-1e-6), torch.ones_like(luma))
    return colour * (lips + (1 - lips) * scale)


def moved_points(change: CropChange, points: np.ndarray) -> np.ndarray:
    """(K, P, 2) crop px: where the K edits' motion takes the photo's content at `points` (P, 2) crop px.

    A pixel x takes the photo's at x + motion(x), so what sat at p lands near p - motion(p); without motion
    the points stay.
    """
    if change.motion is None:
        return np.repeat(points[None], len(change), axis=0)
    size = change.motion.shape[-1]
    grid = torch.from_numpy((points * 2 + 1) / size - 1).float()[None, None].expand(len(change), -1, -1, -1)
    motion = F.grid_sample(change.motion.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return points[None] - motion[:, :, 0].movedim(1, 2).double().numpy()


def _warp_into_box(maps: torch.Tensor, crop_to_image: np.ndarray, image_size: tuple[int, int]):
    """Crop-space maps (K, C, S, S) resampled onto the image box they cover: (box, (K, C, h, w)), or None."""
    x0, y0, x1, y1 = box = covered_box(crop_to_image, (maps.shape[-1], maps.shape[-2]), image_size)
    if x1 <= x0 or y1 <= y0:
        return None
    return box, _warp_onto(maps, crop_to_image, box)


def _warp_onto(maps: torch.Tensor, crop_to_image: np.ndarray, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Crop-space maps (K, C, S, S) resampled onto the image pixels of `box` (x0, y0, x1, y1): (K, C, h, w)."""
    x0, y0, x1, y1 = box
    box_to_crop = np.linalg.inv(crop_to_image) @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]])
    return warp(maps, box_to_crop, (x1 - x0, y1 - y0), padding="zeros", mode="bilinear", clamp=False)


def apply_changes(image: np.ndarray, crop_to_image: np.ndarray, change: CropChange) -> np.ndarray:
    """K edited copies (K, H, W, 3) uint8 of `image` (H, W, 3) uint8; `crop_to_image` maps crop px -> image px.

    Only the box under the crop is touched, and inside it only where the warped change is not zero. The
    box is done a band of rows at a time (STRIP_PIXELS each): a whole 2048-px face's float maps, sources
    and sampling grids took 670 MB at once; each pixel's result does not depend on the banding.
    """
    out = np.repeat(image[None], len(change), axis=0)
    maps = change.colour if change.motion is None else torch.cat([change.colour, change.motion], 1)
    x0, y0, x1, y1 = covered_box(crop_to_image, (maps.shape[-1], maps.shape[-2]), (image.shape[1], image.shape[0]))
    rows = max(16, STRIP_PIXELS // max(1, x1 - x0))
    for top in range(y0, y1, rows):
        _apply_in_box(out, image, crop_to_image, maps, change.motion is not None, (x0, top, x1, min(y1, top + rows)))
    return out


def _apply_in_box(
    out: np.ndarray, image: np.ndarray, crop_to_image: np.ndarray, maps: torch.Tensor, moves: bool, box: tuple[int, ...]
) -> None:
    """`apply_changes` over the image pixels of `box`, written into `out`."""
    x0, y0, x1, y1 = box
    maps = _warp_onto(maps, crop_to_image, box)
    added = maps[:, :3]
    touched = (added != 0).any(1)
    if not moves:
        base = to_tensor(image[y0:y1, x0:x1])[None]
    else:
        motion = torch.einsum("ij,kjhw->kihw", torch.from_numpy(crop_to_image[:2, :2]).float(), maps[:, 3:])  # image px
        margin = int(np.ceil(float(motion.abs().max()))) + 2  # the moved pixels come from at most this far outside
        sx0, sy0 = max(x0 - margin, 0), max(y0 - margin, 0)
        source = to_tensor(image[sy0 : min(y1 + margin, image.shape[0]), sx0 : min(x1 + margin, image.shape[1])])[None]
        padded = F.pad(motion, (x0 - sx0, source.shape[-1] - (x1 - sx0), y0 - sy0, source.shape[-2] - (y1 - sy0)))
        base = _moved_where(source, padded, mode="bicubic")[..., y0 - sy0 : y1 - sy0, x0 - sx0 : x1 - sx0]
        touched |= (motion != 0).any(1)
    edited = to_pixels(base + added)
    out[:, y0:y1, x0:x1] = np.where(touched[..., None].numpy(), edited, out[:, y0:y1, x0:x1])


def face_region(crop_to_image: np.ndarray, image_size: tuple[int, int], crop_size: int = IMAGE_SIZE) -> np.ndarray:
    """(H, W) bool: the face region, the pixels an edit may change (where the whole warped face ellipse is not zero)."""
    width, height = image_size
    mask = np.zeros((height, width), dtype=bool)
    warped = _warp_into_box(region_weights(WHOLE_FACE, crop_size)[None, None], crop_to_image, image_size)
    if warped is not None:
        (x0, y0, x1, y1), weights = warped
        mask[y0:y1, x0:x1] = (weights[0, 0] > 0).numpy()
    return mask
