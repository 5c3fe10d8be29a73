"""The strip and its GIF: an edit's frames from least to most smile, side by side or as a loop."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from .files import atomic_save


def strip_image(frames: list[Image.Image]) -> Image.Image:
    """Frames side by side, left (least) to right (most)."""
    width, height = frames[0].size
    strip = Image.new("RGB", (width * len(frames), height))
    for i, frame in enumerate(frames):
        strip.paste(frame, (i * width, 0))
    return strip


def save_gif(frames: list[Image.Image], path: str | os.PathLike, frame_ms: int = 120, max_side: int = 320) -> Path:
    """An endlessly looping GIF that sweeps the strip forth and back (less -> more -> less), at most `max_side`."""
    scale = min(1.0, max_side / max(frames[0].size))
    size = (max(1, round(frames[0].width * scale)), max(1, round(frames[0].height * scale)))
    small = [f if f.size == size else f.resize(size, Image.Resampling.LANCZOS) for f in frames]
    sweep = small + small[-2:0:-1]
    return atomic_save(sweep[0], path, format="GIF", save_all=True, append_images=sweep[1:], duration=frame_ms, loop=0)
