"""Write edit results to disk: single images, the strip as one picture, and the strip as a GIF."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image


def atomic_save(image: Image.Image, path: str | os.PathLike, **kwargs) -> Path:
    """Save through a temporary file in the same folder so readers never see half an image."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        image.save(tmp, **kwargs)
        os.chmod(tmp, 0o644)  # mkstemp makes the file 0600; a result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


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
