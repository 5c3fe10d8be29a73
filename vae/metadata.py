"""Bound what an image file's metadata may cost before Pillow reads any of it.

Pillow reads some metadata whole, in Python, and in a way that costs far more than the file's size:
a GIF comment is joined 255 bytes at a time with `bytes +=` (quadratic: 8 MB of comment took 36 s),
a TIFF's strip table becomes a tuple of Python ints (2.4 million offsets: 5-8 s and 600 MB), a PNG's
compressed text chunks are inflated up to 64 MB before Pillow gives up, and a JPEG's markers, or a
progressive JPEG's scans, are walked one by one. `check_metadata` walks the file's structure itself,
with a bounded number of steps, and refuses a file whose metadata is beyond what any photo carries,
so that what Pillow then reads is bounded too. Pixel data is not looked at: its cost follows the
image's size, which `vae.preprocess.check_size` bounds from the header.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from contextlib import contextmanager

MAX_GIF_COMMENT = 64 * 2**10  # bytes of GIF comment before the first picture
MAX_GIF_EXTENSIONS = 1 * 2**20  # bytes of all GIF extensions (comments, XMP, ...) before the first picture
MAX_PNG_CHUNKS = 100_000  # an encoder writing 8 KB IDAT chunks needs ~3,200 for a 25 MB file
MAX_PNG_TEXT_CHUNKS = 64
MAX_PNG_TEXT_INFLATED = 1 * 2**20  # all text chunks together, once decompressed
MAX_EXIF_BYTES = 64 * 2**10  # what a JPEG's APP1 segment can hold; PNG and WebP may not carry more
MAX_TIFF_ENTRIES = 1000  # tags in the first IFD (a camera writes ~50)
MAX_TIFF_VALUES = 65_536  # values of one numeric tag: a 40 MP TIFF in 8 KB strips has ~15,000 strip offsets
MAX_JPEG_MARKERS = 1000  # segments before the first scan (an ICC profile split in 64 KB pieces needs at most 255)
MAX_JPEG_SCANS = 100  # a progressive JPEG has ~10; each scan is another pass over the whole picture

TOO_MUCH = "The image's metadata is too large to read safely ({detail}): save the photo again without it, e.g. as a plain JPEG."
_TIFF_NUMERIC = {3: 2, 4: 4, 5: 8, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}  # type -> bytes


class MetadataError(ValueError):
    """A file whose metadata would cost too much to read; the message is meant for the person who sent it."""


def check_metadata(data: bytes | bytearray | mmap.mmap) -> None:
    """MetadataError when the metadata of the image file in `data` (bytes, or an mmap) is beyond the bounds above.

    Files that are not GIF, PNG, TIFF, JPEG or WebP, and structures cut short, are left to Pillow to judge.
    """
    with memoryview(data) as raw, raw.cast("B") as view:  # released before the caller's mmap closes
        head = bytes(view[:12])
        if head[:6] in (b"GIF87a", b"GIF89a"):
            _check_gif(view)
        elif head[:8] == b"\x89PNG\r\n\x1a\n":
            _check_png(view)
        elif head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            _check_tiff(view)
        elif head[:3] == b"\xff\xd8\xff":
            _check_jpeg(view, data)
        elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            _check_webp(view)


@contextmanager
def mapped(path: str | os.PathLike):
    """The file at `path` as a read-only mmap (bytes for an empty file), for `check_metadata` without a copy."""
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as view:
            yield view


def _refuse(detail: str) -> MetadataError:
    return MetadataError(TOO_MUCH.format(detail=detail))


def _check_gif(view: memoryview) -> None:
    flags = view[10] if len(view) > 10 else 0
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    comment = extensions = 0
    while pos + 1 < len(view) and view[pos] == 0x21:  # extensions, up to the first picture (0x2C) or the end
        label, pos = view[pos + 1], pos + 2
        while pos < len(view) and view[pos]:  # sub-blocks of up to 255 bytes, ended by a zero length
            size = view[pos]
            pos += 1 + size
            extensions += size
            comment += size if label == 0xFE else 0
            if comment > MAX_GIF_COMMENT:
                raise _refuse(f"a GIF comment of over {MAX_GIF_COMMENT // 1024} KB")
            if extensions > MAX_GIF_EXTENSIONS:
                raise _refuse(f"over {MAX_GIF_EXTENSIONS // 2**20} MB of GIF extensions")
        pos += 1


def _check_png(view: memoryview) -> None:
    pos, chunks, texts, inflated = 8, 0, 0, 0
    while pos + 8 <= len(view):
        length, kind = struct.unpack_from(">I4s", view, pos)
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise _refuse(f"over {MAX_PNG_CHUNKS:,} PNG chunks")
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            texts += 1
            if texts > MAX_PNG_TEXT_CHUNKS:
                raise _refuse(f"over {MAX_PNG_TEXT_CHUNKS} PNG text chunks")
            inflated += _png_text_size(kind, bytes(view[pos + 8 : pos + 8 + length]), MAX_PNG_TEXT_INFLATED - inflated + 1)
            if inflated > MAX_PNG_TEXT_INFLATED:
                raise _refuse(f"over {MAX_PNG_TEXT_INFLATED // 2**20} MB of PNG text")
        elif kind == b"eXIf" and length > MAX_EXIF_BYTES:
            raise _refuse(f"over {MAX_EXIF_BYTES // 1024} KB of EXIF")
        elif kind == b"IEND":
            return
        pos += 12 + length


def _png_text_size(kind: bytes, body: bytes, limit: int) -> int:
    """The size of a text chunk once inflated, counted up to `limit` (never inflating more than that)."""
    key_end = body.find(b"\0")
    if key_end < 0:
        return len(body)
    if kind == b"tEXt":
        return len(body)
    if kind == b"zTXt":
        compressed = body[key_end + 2 :]
    else:  # iTXt: keyword, flag, method, language, translated keyword, then the text, compressed when flag is 1
        if key_end + 1 >= len(body) or body[key_end + 1] != 1:
            return len(body)
        rest = body[key_end + 3 :]
        parts = rest.split(b"\0", 2)
        if len(parts) < 3:
            return len(body)
        compressed = parts[2]
    inflater = zlib.decompressobj()
    try:
        return len(inflater.decompress(compressed, limit))
    except zlib.error:
        return len(body)  # Pillow refuses it as corrupt


def _check_tiff(view: memoryview) -> None:
    order = "<" if bytes(view[:2]) == b"II" else ">"
    big = view[2 if order == "<" else 3] == 43  # BigTIFF: 8-byte offsets and counts
    try:
        if big:
            (ifd,) = struct.unpack_from(order + "Q", view, 8)
            (entries,) = struct.unpack_from(order + "Q", view, ifd)
            entry, first, layout = 20, ifd + 8, order + "HHQ"
        else:
            (ifd,) = struct.unpack_from(order + "I", view, 4)
            (entries,) = struct.unpack_from(order + "H", view, ifd)
            entry, first, layout = 12, ifd + 2, order + "HHI"
        if entries > MAX_TIFF_ENTRIES:
            raise _refuse(f"{entries:,} TIFF tags in one directory")
        for k in range(entries):
            tag, kind, count = struct.unpack_from(layout, view, first + k * entry)
            if kind in _TIFF_NUMERIC and count > MAX_TIFF_VALUES:
                raise _refuse(f"{count:,} values in TIFF tag {tag}")
    except struct.error:
        return  # cut short: Pillow refuses it as corrupt


def _check_jpeg(view: memoryview, data: bytes | bytearray | mmap.mmap) -> None:
    pos, markers = 2, 0
    while pos + 4 <= len(view) and view[pos] == 0xFF:
        marker = view[pos + 1]
        if marker == 0xFF:  # fill bytes
            pos += 1
            continue
        markers += 1
        if markers > MAX_JPEG_MARKERS:
            raise _refuse(f"over {MAX_JPEG_MARKERS:,} JPEG segments before the picture")
        if marker == 0xDA:  # the first scan: the entropy-coded data follows
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", view, pos + 2)
        pos += 2 + length
    scans, at = 0, data.find(b"\xff\xda")  # 0xFF in scan data is stuffed as FF00: FFDA starts a scan
    while at >= 0:
        scans += 1
        if scans > MAX_JPEG_SCANS:
            raise _refuse(f"over {MAX_JPEG_SCANS} progressive JPEG scans")
        at = data.find(b"\xff\xda", at + 2)


def _check_webp(view: memoryview) -> None:
    pos = 12
    while pos + 8 <= len(view):
        kind, length = struct.unpack_from("<4sI", view, pos)
        if kind == b"EXIF" and length > MAX_EXIF_BYTES:
            raise _refuse(f"over {MAX_EXIF_BYTES // 1024} KB of EXIF")
        pos += 8 + length + (length & 1)
