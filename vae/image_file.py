"""Read any image file a person hands us, safely: upright RGB at the working size, or a clear ImageError.

Only six formats are opened, told from the bytes; metadata that would cost Pillow far more than the
file's size is refused first (`vae.metadata`); the pixel count is checked from the header before
decoding; large pictures are decoded at the working size where the format allows and converted a band of
rows at a time. Numpy and Pillow only (no torch), so a sandboxed process can test-decode uploads cheaply.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import resource
import sys
from pathlib import Path
from typing import Union

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from .metadata import MetadataError, check_metadata, mapped

MAX_PIXELS = 40_000_000  # a 40-megapixel photo is fine; beyond that we refuse (decompression bombs)
# The only formats we open, recognised by their bytes (never by the file name). Everything else that
# Pillow could read is refused: EPS is run by Ghostscript as a program, and TGA, PCX, ICO, SGI, IM,
# PPM, XBM ... are old, rarely used decoders that no photo needs. Pillow names a JPEG that carries
# several pictures (a phone's MPO) "MPO"; it is opened by the JPEG plugin and so is accepted too.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP or TIFF"
# Pillow decodes a WebP whole, through libwebp's animation decoder, which keeps two full RGBA canvases
# besides the picture: ~15 bytes a pixel (618 MB for 40 MP, where a PNG takes 196 MB and a JPEG, decoded
# at a reduced scale, 61 MB; bench.decode measures them). Its bound keeps one decode under ~250 MB.
FORMAT_MAX_PIXELS = {"WEBP": 16_000_000}
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # EXIF orientation -> the transpose that shows the image upright

ImageInput = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray]


NOT_AN_IMAGE = f"The file is not an image we can read: the accepted formats are {FORMAT_NAMES}."
TOO_LARGE_TO_DECODE = "The image is too large to decode safely."


class ImageError(ValueError):
    """An input image we cannot use; the message is meant for the person who supplied it."""


def load_image(
    source: ImageInput, max_pixels: int = MAX_PIXELS, max_side: int | None = None, min_side: int | None = None
) -> Image.Image:
    """Open a path, bytes, PIL image or array as an upright RGB PIL image.

    Applies the EXIF orientation (phones store portraits sideways) and converts every mode
    (L, LA, P, RGBA, CMYK, I;16, F ...) to RGB; transparency is composited onto white. Files must be
    one of FORMATS.

    `max_side` is the working size: a larger image comes back scaled down (LANCZOS) so that its longer
    side is `max_side`, and is decoded that way from the start where the format allows (a JPEG is
    decoded at 1/2, 1/4 or 1/8 scale), so peak memory follows the working size and not the file's.
    `min_side` refuses, from the header and before decoding, an image whose shorter side would be
    under `min_side` pixels at the working size (a 32x5000 strip is 13 px wide once scaled to 2048).
    """
    if isinstance(source, np.ndarray):
        image = _array_to_rgb(source)
        check_size(image.size, max_pixels, max_side, min_side)
        return _working_rgb(image, max_side)
    if isinstance(source, Image.Image):
        image = source
        check_size(image.size, max_pixels, max_side, min_side)
    else:
        image = _open(source, max_pixels, max_side, min_side)
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        rgb = _working_rgb(image, max_side)  # scaled down before any full-size copy: no second copy of a 40 MP picture
        if orientation in _ORIENTATION:
            rgb = rgb.transpose(_ORIENTATION[orientation])
        return rgb.copy() if rgb is source else rgb  # never the caller's own image object
    except (OSError, SyntaxError) as err:  # PIL reports truncated data lazily, at decode time
        raise ImageError(f"The image file is truncated or corrupt ({err}).") from err
    except MemoryError as err:
        raise ImageError(TOO_LARGE_TO_DECODE) from err
    except Exception as err:  # whatever else a crafted file makes Pillow raise (a KeyError from a TIFF tag ...)
        raise ImageError(f"The image file could not be read ({type(err).__name__}).") from err


def working_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """(width, height) once the longer side is scaled down to `max_side` (unchanged when it already fits)."""
    width, height = size
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_size(
    size: tuple[int, int], max_pixels: int, max_side: int | None = None, min_side: int | None = None, fmt: str | None = None
) -> None:
    """ImageError naming the bound when an image of `size` (width, height), in format `fmt`, is too large or too small."""
    width, height = size
    limit = min(max_pixels, FORMAT_MAX_PIXELS.get(fmt or "", max_pixels))
    if width * height > limit:
        kind = f" for a {fmt.title()}" if limit < max_pixels and fmt else ""
        raise ImageError(f"Image is too large ({width}x{height}); the limit is {limit // 1_000_000} megapixels{kind}.")
    if min_side is not None:
        scaled = working_size(size, max_side)
        if min(scaled) < min_side:
            extra = "" if scaled == (width, height) else f" once its longer side is scaled down to {max_side} px"
            raise ImageError(f"The image is too small ({width}x{height}): it needs at least {min_side} px on each side{extra}.")


def _working_rgb(image: Image.Image, max_side: int | None, band_rows: int = 128) -> Image.Image:
    """The image in RGB at the working size, converted and scaled down a band of rows at a time.

    Converting a whole 40 MP picture first (a palette GIF to RGB, RGBA onto white, 16-bit to 8) would
    make a second full-size copy: 120-320 MB more. Each band of output rows is made from the source rows
    its LANCZOS filter reaches (a margin of the filter's support), so the result is the whole-image
    resize, while only one band is ever converted.
    """
    size = working_size(image.size, max_side)
    levels = image.getextrema() if image.mode in _WIDE_MODES else None  # one scale for every band
    if size == image.size:
        return _to_rgb(image, levels)
    width, height = image.size
    scale = height / size[1]
    margin = math.ceil(3 * scale) + 2  # LANCZOS reaches 3 output pixels' worth of source rows on each side
    out = Image.new("RGB", size)
    for first in range(0, size[1], band_rows):
        last = min(size[1], first + band_rows)
        top, bottom = max(0, math.floor(first * scale) - margin), min(height, math.ceil(last * scale) + margin)
        band = _to_rgb(image.crop((0, top, width, bottom)), levels)
        box = (0, first * scale - top, width, last * scale - top)
        out.paste(band.resize((size[0], last - first), Image.Resampling.LANCZOS, box=box), (0, first))
    return out


def _open(
    source: str | os.PathLike | bytes | bytearray, max_pixels: int, max_side: int | None = None, min_side: int | None = None
) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("The file is empty.")
        stream: io.BytesIO | Path = io.BytesIO(bytes(source))
        label = "the uploaded data"
    else:
        stream = Path(source)
        label = stream.name
        if not stream.is_file():
            raise ImageError(f"No such file: {stream}")
        if stream.stat().st_size == 0:
            raise ImageError(f"The file {label} is empty.")
    try:
        if isinstance(stream, Path):
            with mapped(stream) as data:
                check_metadata(data)
        else:
            check_metadata(source)
    except MetadataError as err:
        raise ImageError(str(err)) from err
    try:
        with Image.open(stream, formats=FORMATS) as image:  # the format is recognised from the bytes
            check_size(image.size, max_pixels, max_side, min_side, image.format)  # from the header, before decoding
            if max_side is not None and image.format in ("JPEG", "MPO"):
                image.draft(None, _draft_size(image.size, max_side))  # decode at 1/2 .. 1/8 scale, still >= working size
            image.load()
            return image
    except ImageError:
        raise
    except UnidentifiedImageError as err:
        raise ImageError(f"{label} is not an image we can read: the accepted formats are {FORMAT_NAMES}.") from err
    except Image.DecompressionBombError as err:
        raise ImageError(f"{label} is too large to decode safely.") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{label} is truncated or corrupt ({err}).") from err
    except MemoryError as err:
        raise ImageError(TOO_LARGE_TO_DECODE) from err
    except Exception as err:  # whatever else a crafted file makes Pillow raise
        raise ImageError(f"{label} could not be read ({type(err).__name__}).") from err


def check_file(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> tuple[str, tuple[int, int]]:
    """(format, (width, height)) of the image file at `path`, read from its header after its metadata's cost
    is bounded; ImageError, with the message for the person, when it is no image we would decode."""
    try:
        with mapped(path) as data:
            check_metadata(data)
        with Image.open(path, formats=FORMATS) as image:  # reads the header, decodes nothing
            check_size(image.size, max_pixels, fmt=image.format)
            return image.format, image.size
    except MetadataError as err:
        raise ImageError(str(err)) from err
    except Image.DecompressionBombError as err:  # Pillow's own check, in open, for a header claiming over 179 MP
        raise ImageError(f"Image is too large; the limit is {max_pixels // 1_000_000} megapixels.") from err


def inspect_file(path: str | os.PathLike, max_side: int | None = None, min_side: int | None = None) -> tuple[str | None, int]:
    """(why the file at `path` is no photo we would edit, or None; its pixel count from the header): its metadata
    and header checked, then decoded at the working size as an edit will decode it."""
    try:
        if os.path.getsize(path) == 0:
            return "The file is empty.", 0
        _, (width, height) = check_file(path)
        load_image(path, max_side=max_side, min_side=min_side)
        return None, width * height
    except ImageError as err:
        return str(err), 0
    except MemoryError:
        return TOO_LARGE_TO_DECODE, 0
    except Exception:  # UnidentifiedImageError, OSError, and whatever else a crafted header raises
        return NOT_AN_IMAGE, 0


def serve(memory_bytes: int) -> None:
    """`inspect_file` for each JSON request read from stdin ({"path", "max_side", "min_side"}), answered as one
    JSON line ({"refusal", "pixels"}) after a first line {"ready": true}, with at most `memory_bytes` more memory than this process holds now:
    the server's sandbox (web/server/sandbox.py) runs this in processes of their own and kills one that runs too long."""
    status = Path("/proc/self/status")
    if status.exists():
        in_use = int(status.read_text().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (in_use + memory_bytes, in_use + memory_bytes))
    sys.stdout.write(json.dumps({"ready": True}) + "\n")  # imports done: what follows is timed per file
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        refusal, pixels = inspect_file(request["path"], request.get("max_side"), request.get("min_side"))
        sys.stdout.write(json.dumps({"refusal": refusal, "pixels": pixels}) + "\n")
        sys.stdout.flush()


def _draft_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The smallest size a JPEG may be decoded at and still be scaled down, not up, to the working size."""
    scale = min(1.0, max_side / max(size))
    return max(1, math.ceil(size[0] * scale)), max(1, math.ceil(size[1] * scale))


_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # 16-bit, 32-bit and float greyscale


def _to_rgb(image: Image.Image, levels: tuple[float, float] | None = None) -> Image.Image:
    """RGB in 8 bits; greyscale wider than 8 bits is scaled from `levels` (its own range when None) to 0-255."""
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_MODES:
        # scale the real range to 8 bits instead of clipping at 255
        values = np.asarray(image, dtype=np.float64)
        lo, hi = levels or (float(values.min()), float(values.max()))
        scaled = np.zeros_like(values) if hi <= lo else (values - lo) / (hi - lo) * 255.0
        return Image.fromarray(scaled.clip(0, 255).round().astype(np.uint8), "L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK (Pillow inverts Adobe CMYK correctly), YCbCr, LAB, HSV


def _array_to_rgb(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"An image array must be HxW, HxWx3 or HxWx4, not {array.shape}.")
    if array.size == 0:
        raise ImageError("The image array is empty.")
    if array.dtype != np.uint8:
        values = array.astype(np.float64)
        if np.issubdtype(array.dtype, np.floating) and values.max() <= 1.0:
            values = values * 255.0
        elif array.dtype == np.uint16:
            values = values / 257.0
        array = np.clip(values.round(), 0, 255).astype(np.uint8)
    return _to_rgb(Image.fromarray(array))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m vae.image_file", description=serve.__doc__)
    parser.add_argument("--serve", action="store_true", required=True)
    parser.add_argument("--memory-mb", type=int, default=512)
    serve(parser.parse_args().memory_mb * 2**20)
