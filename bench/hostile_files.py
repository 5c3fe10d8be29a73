"""Files a hostile visitor uploads to make the server work: small on the wire, costly to read or decode.

Used by the hostile tests and by `python -m bench.soak --hostile`. Every one is made here from nothing
(no photo of anyone), so they can be written anywhere.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, PngImagePlugin


def comment_gif(megabytes: float, side: int = 64) -> bytes:
    """A small GIF whose comment is one long run of 255-byte pieces (Pillow joins them with `bytes +=`)."""
    picture = io.BytesIO()
    Image.new("P", (side, side)).save(picture, "GIF")
    gif = picture.getvalue()
    first_picture = gif.index(b"\x2c", 13 + 6)  # after the header and the two-colour palette
    pieces = int(megabytes * 2**20) // 256
    return gif[:first_picture] + b"\x21\xfe" + (b"\xff" + b"c" * 255) * pieces + b"\x00" + gif[first_picture:]


def text_bomb_png(chunks: int = 66, inflated: int = 2**20, seed: int = 0) -> bytes:
    """A 64x64 PNG with `chunks` compressed text chunks, each `inflated` bytes once decompressed (~1 KB each sent)."""
    info = PngImagePlugin.PngInfo()
    for k in range(chunks):
        info.add_text(f"k{k}", "a" * inflated, zip=True)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (seed % 256, 120, 140)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def strip_table_tiff(strips: int = 2_400_000) -> bytes:
    """A 1-pixel-wide greyscale TIFF stored one row a strip: a table of `strips` offsets and as many counts."""

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        return struct.pack("<HHII", tag, kind, count, value)

    offsets_at, counts_at = 1024, 1024 + 4 * strips
    pixels_at = counts_at + 4 * strips
    tags = [
        entry(256, 4, 1, 1),  # width
        entry(257, 4, 1, strips),  # height
        entry(258, 3, 1, 8),
        entry(259, 3, 1, 1),
        entry(262, 3, 1, 1),
        entry(273, 4, strips, offsets_at),  # strip offsets
        entry(277, 3, 1, 1),
        entry(278, 4, 1, 1),  # rows per strip
        entry(279, 4, strips, counts_at),  # strip byte counts
    ]
    head = b"II*\x00" + struct.pack("<IH", 8, len(tags)) + b"".join(tags) + b"\0\0\0\0"
    offsets = np.arange(pixels_at, pixels_at + strips, dtype="<u4").tobytes()
    return head.ljust(offsets_at, b"\0") + offsets + np.ones(strips, "<u4").tobytes() + b"\x80" * strips


def flat_gif(size: tuple[int, int] = (6400, 6250), shade: int = 0) -> bytes:
    """A one-colour palette GIF of `size` (40 megapixels by default): ~30 KB sent, the whole picture to decode."""
    buffer = io.BytesIO()
    image = Image.new("P", size, shade % 256)
    image.putpalette([value for k in range(256) for value in (k, 255 - k, 128)])
    image.save(buffer, "GIF")
    return buffer.getvalue()


def tiny_pngs(count: int, seed: int = 0) -> list[bytes]:
    """`count` different valid 32x32 PNGs: a flood of files, each passing the header check."""
    rng = np.random.default_rng(seed)
    files = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
        files.append(buffer.getvalue())
    return files


def overlapping_exif_jpeg(tags: int = 900, claimed: int = 60_000) -> bytes:
    """A small JPEG whose EXIF has `tags` tags each claiming the same `claimed` bytes (Pillow copies each)."""
    entries = b"".join(struct.pack("<HHII", 0x9000 + k, 7, claimed, 8) for k in range(tags))
    tiff = b"II*\x00" + struct.pack("<IH", 8, tags) + entries + b"\0\0\0\0"
    segment = b"Exif\0\0" + tiff.ljust(min(65_000, len(tiff) + 1024), b"\0")
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 90, 90)).save(jpeg, "JPEG")
    data = jpeg.getvalue()
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + data[2:]


def empty_comments_gif(count: int = 20_000) -> bytes:
    """A small GIF with `count` empty comment extensions (Pillow joins them with `+=`)."""
    gif = comment_gif(0)
    first_picture = gif.index(b"\x2c", 13 + 6)
    return gif[:first_picture] + b"\x21\xfe\x00" * count + gif[first_picture:]


def rle_bmp(side: int = 6000) -> bytes:
    """A side x side RLE8 BMP whose every row is an end-of-line code (Pillow pads each row in Python)."""
    rows = b"\x00\x00" * side + b"\x00\x01"
    palette = b"".join(bytes((k, k, k, 0)) for k in range(256))
    header = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(rows), 2835, 2835, 256, 0)
    offset = 14 + len(header) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + header + palette + rows
