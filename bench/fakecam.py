"""A fake webcam for Chromium (`--use-file-for-fake-video-capture=clip.y4m`): the shipped astronaut, moving a little.

Each frame carries its number in a column of black/white 16x16 blocks at the left edge, where the edit
never writes (pixels outside the face are unchanged), so a reader of the shown frame can tell which
captured frame it is (`read_stamp`). Written with numpy only; never a dataset image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "assets" / "examples" / "astronaut.jpg"
WIDTH, HEIGHT = 640, 480
STAMP_BITS = 12  # frame numbers 0..4095
STAMP_BLOCK = 16  # px; the stamp is the column x < 16, y < 16 * (STAMP_BITS + 2)


def stamp(frame: np.ndarray, number: int) -> None:
    """Write `number` into the left column in place: a white start block, a black one, then the bits (MSB first)."""
    bits = [1, 0] + [(number >> (STAMP_BITS - 1 - i)) & 1 for i in range(STAMP_BITS)]
    for i, bit in enumerate(bits):
        frame[i * STAMP_BLOCK : (i + 1) * STAMP_BLOCK, :STAMP_BLOCK] = 240 if bit else 16


def read_stamp(frame: np.ndarray, mirrored: bool = False) -> int | None:
    """The number `stamp` wrote (None if the column does not hold one); `mirrored` reads the right edge."""
    column = frame[:, -STAMP_BLOCK:][:, ::-1] if mirrored else frame[:, :STAMP_BLOCK]
    means = [
        float(column[i * STAMP_BLOCK + 4 : (i + 1) * STAMP_BLOCK - 4, 4 : STAMP_BLOCK - 4].mean()) for i in range(STAMP_BITS + 2)
    ]
    if not (means[0] > 160 and means[1] < 90):
        return None
    return sum((1 << (STAMP_BITS - 1 - i)) for i, m in enumerate(means[2:]) if m > 128)


HEAD = (176, 92, 54, 68)  # the astronaut's head in the 400-px picture: centre x, y and half axes of an ellipse
SCENE = (200, 250, 512, 512)  # a busy part of the 512-px picture with no face (the suit, the flag): the still scene


def astronaut_frames(
    count: int,
    still_from: int | None = None,
    noise: float = 2.0,
    seed: int = 0,
    zoom: float = 0.0,
    subpixel: bool = False,
    over_scene: bool = False,
):
    """(HEIGHT, WIDTH, 3) uint8 frames: the astronaut (400 px) on grey, swaying a few px, then still from
    `still_from` (with sensor-like noise of `noise` levels, so a still face is not a frozen image). With
    `zoom` the face also grows and shrinks by up to that share while it moves (it comes closer and goes
    back). With `subpixel` it sways by quarter pixels, as a camera's sensor sees a slow move (drawn at 4x and
    averaged down, so every frame is equally sharp), instead of by whole pixels. With `over_scene` only the
    head moves (cut out with a soft edge), over a still, busy scene (the suit and the flag, mirrored and larger),
    as a webcam sees a person in a room: the face's box then holds background that does not move with it."""
    source = Image.open(ASTRONAUT).convert("RGB")
    scale = 4 if subpixel else 1
    rng = np.random.default_rng(seed)
    still_from = count if still_from is None else still_from
    scene = None
    if over_scene:
        scene = source.crop(SCENE).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        scene = scene.resize((WIDTH * scale, HEIGHT * scale), Image.Resampling.BICUBIC)
    faces: dict[int, tuple[Image.Image, Image.Image | None]] = {}
    for k in range(count):
        moving = k < still_from
        dx, dy = (6 * np.sin(k / 6), 3 * np.sin(k / 9)) if moving else (0.0, 0.0)
        side = round(400 * (1 + zoom * np.sin(k / 4))) if moving and zoom else 400
        if side not in faces:
            face = source.resize((side * scale, side * scale), Image.Resampling.LANCZOS)
            faces[side] = (face, _head_mask(face.width) if over_scene else None)
        face, mask = faces[side]
        canvas = scene.copy() if scene is not None else Image.new("RGB", (WIDTH * scale, HEIGHT * scale), (90, 90, 90))
        left, top = round(scale * (320 + dx) - face.width / 2), round(scale * (240 + dy) - face.height / 2)
        canvas.paste(face, (left, top), mask)
        frame = np.asarray(canvas if scale == 1 else canvas.resize((WIDTH, HEIGHT), Image.Resampling.BOX), dtype=np.int16)
        if noise:
            frame = frame + rng.normal(0, noise, frame.shape).round().astype(np.int16)
        frame = np.clip(frame, 0, 255).astype(np.uint8)
        stamp(frame, k)
        yield frame


def _head_mask(side: int) -> Image.Image:
    """(side, side) L mask of the astronaut's head (`HEAD`, scaled from the 400-px picture), its edge feathered."""
    scale = side / 400
    y, x = np.mgrid[0:side, 0:side] + 0.5
    cx, cy, ax, ay = (v * scale for v in HEAD)
    radius = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return Image.fromarray((np.clip((1.15 - radius) / 0.15, 0, 1) * 255).astype(np.uint8))


def write_y4m(path: Path, frames, fps: int = 30) -> Path:
    """Frames (H, W, 3) uint8 RGB as a 4:2:0 Y4M (full-range BT.601, what Chromium's fake camera reads)."""
    with open(path, "wb") as out:
        header = None
        for frame in frames:
            if header is None:
                header = f"YUV4MPEG2 W{frame.shape[1]} H{frame.shape[0]} F{fps}:1 Ip A1:1 C420jpeg XYSCSS=420JPEG\n"
                out.write(header.encode())
            rgb = frame.astype(np.float32)
            y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
            cb = 128 - 0.168736 * rgb[..., 0] - 0.331264 * rgb[..., 1] + 0.5 * rgb[..., 2]
            cr = 128 + 0.5 * rgb[..., 0] - 0.418688 * rgb[..., 1] - 0.081312 * rgb[..., 2]
            sub = lambda c: c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean((1, 3))  # noqa: E731
            out.write(b"FRAME\n")
            for plane in (y, sub(cb), sub(cr)):
                out.write(np.clip(plane.round(), 0, 255).astype(np.uint8).tobytes())
    return path
