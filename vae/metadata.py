"""Bound what an image file's metadata may cost before Pillow reads any of it.

Pillow reads some metadata whole, in Python, and in a way that costs far more than the file's size:
a GIF comment is joined 255 bytes at a time with `bytes +=` (quadratic: 8 MB of comment took 36 s),
a TIFF's strip table becomes a tuple of Python ints (2.4 million offsets: 5-8 s and 600 MB), a PNG's
compressed text chunks are inflated up to 64 MB before Pillow gives up, and a JPEG's markers, or a
progressive JPEG's scans, are walked one by one, an EXIF block's tags are each read as a copy of their
value (and values may overlap: 5,000 tags in a 66 KB JPEG cost 313 MB), and an RLE-compressed BMP is
decoded in Python. `check_metadata` walks the file's structure itself,
with a bounded number of steps, and refuses a file whose metadata is beyond what any photo carries,
so that what Pillow then reads is bounded too. Pixel data is not looked at: its cost follows the
image's size, which `vae.image_file.check_size` bounds from the header. (The server also test-decodes
every upload in a process of its own with a time and memory bound: web/server/sandbox.py.)
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from contextlib import contextmanager

MAX_GIF_COMMENT = 64 * 2**10  # bytes of GIF comment before the first picture
MAX_GIF_EXTENSIONS = 1 * 2**20  # bytes of all GIF extensions (comments, XMP, ...) before the first picture
MAX_GIF_EXTENSION_BLOCKS = 1000  # Pillow joins each comment to the last with `+=`: quadratic in their number
MAX_PNG_CHUNKS = 100_000  # an encoder writing 8 KB IDAT chunks needs ~3,200 for a 25 MB file
MAX_PNG_TEXT_CHUNKS = 64
MAX_PNG_TEXT_INFLATED = 1 * 2**20  # all text chunks together, once decompressed
MAX_EXIF_BYTES = 64 * 2**10  # what a JPEG's APP1 segment can hold; PNG and WebP may not carry more
MAX_PNG_ICC_PROFILES = 1  # iCCP: one is legal, each is inflated
MAX_TIFF_ENTRIES = 1000  # tags in the first IFD (a camera writes ~50)
MAX_TIFF_VALUES = 65_536  # values of one numeric tag: a 40 MP TIFF in 8 KB strips has ~15,000 strip offsets
MAX_TIFF_NUMBERS = 262_144  # numeric values of all tags of a directory (each becomes a Python int)
MAX_JPEG_MARKERS = 1000  # segments before the first scan (an ICC profile split in 64 KB pieces needs at most 255)
MAX_JPEG_SCANS = 100  # a progressive JPEG has ~10; each scan is another pass over the whole picture
MAX_JPEG_JUNK = 64  # fill or stray bytes between segments, which Pillow reads one at a time
MAX_RLE_BMP_PIXELS = 4_000_000  # Pillow decodes RLE BMPs in Python: 6 s for 36 MP of end-of-line codes
RAW_EXIF_KEYS = (b"Raw profile type exif", b"Raw profile type APP1")  # PNG text that Pillow reads as EXIF (hex)

TOO_MUCH = "The image's metadata is too large to read safely ({detail}): save the photo again without it, e.g. as a plain JPEG."
_TIFF_NUMERIC = {3: 2, 4: 4, 5: 8, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}  # type -> bytes
_TIFF_SIZES = {1: 1, 2: 1, 6: 1, 7: 1} | _TIFF_NUMERIC  # and BYTE, ASCII, SBYTE, UNDEFINED: read as bytes


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
            _check_ifd(view, 0, len(view), "TIFF")  # a real file holds every value once
        elif head[:3] == b"\xff\xd8\xff":
            _check_jpeg(view, data)
        elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            _check_webp(view)
        elif head[:2] == b"BM":
            _check_bmp(view)


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
    comment = extensions = blocks = 0
    while pos + 1 < len(view) and view[pos] == 0x21:  # extensions, up to the first picture (0x2C) or the end
        label, pos, blocks = view[pos + 1], pos + 2, blocks + 1
        if blocks > MAX_GIF_EXTENSION_BLOCKS:
            raise _refuse(f"over {MAX_GIF_EXTENSION_BLOCKS:,} GIF extension blocks")
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
    pos, chunks, texts, inflated, profiles = 8, 0, 0, 0, 0
    while pos + 8 <= len(view):
        length, kind = struct.unpack_from(">I4s", view, pos)
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise _refuse(f"over {MAX_PNG_CHUNKS:,} PNG chunks")
        body = slice(pos + 8, pos + 8 + length)
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            texts += 1
            if texts > MAX_PNG_TEXT_CHUNKS:
                raise _refuse(f"over {MAX_PNG_TEXT_CHUNKS} PNG text chunks")
            keyword, text = _png_text(kind, bytes(view[body]), MAX_PNG_TEXT_INFLATED - inflated + 1)
            inflated += len(text)
            if inflated > MAX_PNG_TEXT_INFLATED:
                raise _refuse(f"over {MAX_PNG_TEXT_INFLATED // 2**20} MB of PNG text")
            if keyword in RAW_EXIF_KEYS:  # Pillow's getexif() reads it: hex digits after three lines of header
                _check_exif(_raw_profile(text))
        elif kind == b"iCCP":
            profiles += 1
            if profiles > MAX_PNG_ICC_PROFILES:
                raise _refuse("more than one PNG colour profile")
        elif kind == b"eXIf":
            _check_exif(bytes(view[body]))
        elif kind == b"IEND":
            return
        pos += 12 + length


def _raw_profile(text: bytes) -> bytes:
    try:
        return bytes.fromhex("".join(text.decode("latin-1").split("\n")[3:]))
    except ValueError:
        return b""  # Pillow fails on it the same way, cheaply


def _png_text(kind: bytes, body: bytes, limit: int) -> tuple[bytes, bytes]:
    """(keyword, text) of a text chunk, its text inflated up to `limit` bytes (never more)."""
    key_end = body.find(b"\0")
    if key_end < 0:
        return b"", body
    keyword = body[:key_end]
    if kind == b"tEXt":
        return keyword, body[key_end + 1 :]
    if kind == b"zTXt":
        compressed = body[key_end + 2 :]
    else:  # iTXt: keyword, flag, method, language, translated keyword, then the text, compressed when flag is 1
        parts = body[key_end + 3 :].split(b"\0", 2)
        if len(parts) < 3:
            return keyword, body
        if key_end + 1 >= len(body) or body[key_end + 1] != 1:
            return keyword, parts[2]
        compressed = parts[2]
    try:
        return keyword, zlib.decompressobj().decompress(compressed, limit)
    except zlib.error:
        return keyword, body  # Pillow refuses it as corrupt


def _check_exif(block: bytes) -> None:
    """An EXIF block (a TIFF structure, maybe after "Exif" and two NULs): its first directory, bounded like a TIFF's
    but with all its tags' values together no larger than MAX_EXIF_BYTES (a real block holds them all)."""
    start = 6 if block[:6] == b"Exif\0\0" else 0
    if len(block) - start > MAX_EXIF_BYTES:
        raise _refuse(f"over {MAX_EXIF_BYTES // 1024} KB of EXIF")
    with memoryview(block) as view:
        _check_ifd(view, start, MAX_EXIF_BYTES, "EXIF")


def _check_ifd(view: memoryview, base: int, value_bytes: int, what: str) -> None:
    """The first directory of the TIFF structure at `base`: at most MAX_TIFF_ENTRIES tags, MAX_TIFF_VALUES numbers
    in one tag and MAX_TIFF_NUMBERS in all, and `value_bytes` of values in all (Pillow copies each tag's value,
    and values may overlap: that sum, not the file's size, is what reading them costs)."""
    order = "<" if bytes(view[base : base + 2]) == b"II" else ">"
    if bytes(view[base : base + 2]) not in (b"II", b"MM"):
        return
    try:
        (magic,) = struct.unpack_from(order + "H", view, base + 2)
        if magic == 43:  # BigTIFF: 8-byte offsets and counts
            (ifd,) = struct.unpack_from(order + "Q", view, base + 8)
            (entries,) = struct.unpack_from(order + "Q", view, base + ifd)
            entry, first, layout = 20, base + ifd + 8, order + "HHQ"
        else:
            (ifd,) = struct.unpack_from(order + "I", view, base + 4)
            (entries,) = struct.unpack_from(order + "H", view, base + ifd)
            entry, first, layout = 12, base + ifd + 2, order + "HHI"
        if entries > MAX_TIFF_ENTRIES:
            raise _refuse(f"{entries:,} {what} tags in one directory")
        numbers = total = 0
        for k in range(entries):
            tag, kind, count = struct.unpack_from(layout, view, first + k * entry)
            if kind in _TIFF_NUMERIC:
                numbers += count
                if count > MAX_TIFF_VALUES:
                    raise _refuse(f"{count:,} values in {what} tag {tag}")
                if numbers > MAX_TIFF_NUMBERS:
                    raise _refuse(f"over {MAX_TIFF_NUMBERS:,} {what} values")
            total += count * _TIFF_SIZES.get(kind, 0)
            if total > value_bytes:
                raise _refuse(f"{what} tags whose values add up to over {value_bytes // 1024:,} KB")
    except struct.error:
        return  # cut short: Pillow refuses it as corrupt


def _check_jpeg(view: memoryview, data: bytes | bytearray | mmap.mmap) -> None:
    pos, markers, junk = 2, 0, 0
    while pos + 4 <= len(view):
        if view[pos] != 0xFF or view[pos + 1] in (0x00, 0xFF):  # fill or stray bytes, which Pillow reads one by one
            junk, pos = junk + 1, pos + 1
            if junk > MAX_JPEG_JUNK:
                raise _refuse(f"over {MAX_JPEG_JUNK} stray bytes between JPEG segments")
            continue
        marker = view[pos + 1]
        markers += 1
        if markers > MAX_JPEG_MARKERS:
            raise _refuse(f"over {MAX_JPEG_MARKERS:,} JPEG segments before the picture")
        if marker == 0xDA:  # the first scan: the entropy-coded data follows
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", view, pos + 2)
        segment = bytes(view[pos + 4 : pos + 2 + length]) if marker in (0xE1, 0xE2) else b""
        if segment.startswith(b"Exif\0\0"):
            _check_exif(segment)
        elif segment.startswith(b"MPF\0"):  # a phone's multi-picture index, read as a TIFF directory
            _check_exif(segment[4:])
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
        if kind == b"EXIF":
            _check_exif(bytes(view[pos + 8 : pos + 8 + min(length, MAX_EXIF_BYTES + 1)]))
        pos += 8 + length + (length & 1)


def _check_bmp(view: memoryview) -> None:
    try:
        width, height, _, _, compression = struct.unpack_from("<iiHHI", view, 18)
    except struct.error:
        return
    if compression in (1, 2) and abs(width) * abs(height) > MAX_RLE_BMP_PIXELS:
        raise _refuse(f"an RLE-compressed BMP of over {MAX_RLE_BMP_PIXELS // 1_000_000} megapixels, which is decoded slowly")
