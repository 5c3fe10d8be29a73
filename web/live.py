"""The live slider's frames: every strength from -max to +max, sent to the page once, as JPEG data URIs."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence

import numpy as np
from PIL import Image

LIVE_STEP = 0.5  # the live slider's frames are this far apart in strength


def live_strengths(max_strength: float) -> list[float]:
    """-max ... +max in LIVE_STEP steps (0 is the photo itself)."""
    steps = round(max_strength / LIVE_STEP)
    return [round(i * LIVE_STEP, 6) for i in range(-steps, steps + 1)]


def frames_json(strengths: Sequence[float], frames: np.ndarray, complete: bool = True) -> str:
    """The page's value for the live view: {"strengths": [...], "frames": [data URIs], "complete": bool}; a
    first look with only a few strengths is not complete, and the rest follows."""
    uris = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, "JPEG", quality=90)
        uris.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    return json.dumps({"strengths": list(strengths), "frames": uris, "complete": complete})
