"""Metadata that Pillow would read at a cost far beyond the file's size is refused first, quickly; the
metadata photos really carry (EXIF, ICC, a few text chunks, a comment) passes; pictures too large to
convert at once are converted a band of rows at a time, with the same result."""

import io
import time

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from bench.hostile_files import (
    comment_gif,
    empty_comments_gif,
    overlapping_exif_jpeg,
    rle_bmp,
    strip_table_tiff,
    text_bomb_png,
)
from vae.image_file import ImageError, load_image
from vae.metadata import MetadataError, check_metadata


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def progressive_with_scans(scans: int) -> bytes:
    """A baseline JPEG with extra (empty) start-of-scan markers appended: what the scan count sees."""
    jpeg = encoded(Image.new("RGB", (64, 64), (9, 99, 199)), "JPEG", progressive=True)
    return jpeg[:-2] + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" * scans + jpeg[-2:]


def raw_exif_png() -> bytes:
    """A PNG whose compressed text chunk holds, as hex, an EXIF of overlapping tags: Pillow's getexif() reads it."""
    exif = overlapping_exif_jpeg(tags=900, claimed=60_000)
    block = exif[exif.index(b"Exif") : exif.index(b"Exif") + 64_000]
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", "\nexif\n" + str(len(block)) + "\n" + block.hex(), zip=True)
    return encoded(Image.new("RGB", (8, 8)), "PNG", pnginfo=info)


@pytest.mark.parametrize(
    "data, named",
    [
        (comment_gif(1), "GIF comment"),
        (text_bomb_png(chunks=3), "PNG text"),
        (text_bomb_png(chunks=70, inflated=10), "PNG text chunks"),
        (strip_table_tiff(100_000), "TIFF tag 273"),
        (progressive_with_scans(150), "progressive JPEG scans"),
        (overlapping_exif_jpeg(), "EXIF tags whose values add up"),
        (empty_comments_gif(), "GIF extension blocks"),
        (rle_bmp(), "RLE-compressed BMP"),
        (
            encoded(Image.new("RGB", (8, 8)), "JPEG")[:2] + b"\xff" * 500 + encoded(Image.new("RGB", (8, 8)), "JPEG")[2:],
            "stray bytes",
        ),
        (raw_exif_png(), "EXIF"),
    ],
    ids=[
        "gif comment",
        "png text inflated",
        "png text chunks",
        "tiff strip table",
        "jpeg scans",
        "overlapping exif values",
        "gif empty comments",
        "rle bmp",
        "jpeg fill bytes",
        "png raw exif profile",
    ],
)
def test_costly_metadata_is_refused_in_milliseconds_with_a_message(data, named):
    started = time.perf_counter()
    with pytest.raises(MetadataError, match=named) as refused:
        check_metadata(data)
    assert time.perf_counter() - started < 0.1
    assert "save the photo again without it" in str(refused.value)
    with pytest.raises(ImageError, match="metadata is too large"):  # the library's loader refuses it the same way
        load_image(data)


def test_what_photos_really_carry_passes():
    face = Image.new("RGB", (64, 64), (200, 150, 120))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera maker"
    info = PngImagePlugin.PngInfo()
    for k in range(5):
        info.add_text(f"k{k}", "a few words " * 50, zip=k % 2 == 0)
    icc = bytes(200_000)  # a large ICC profile, split over several JPEG segments
    files = [
        encoded(face, "JPEG", exif=exif, icc_profile=icc),
        encoded(face, "JPEG", progressive=True),
        encoded(face, "PNG", pnginfo=info, exif=exif),
        encoded(face.convert("P"), "GIF", comment=b"made with care " * 100),
        encoded(face, "TIFF", compression="tiff_lzw"),
        encoded(face, "WEBP", exif=exif),
        encoded(face, "BMP"),
    ]
    for data in files:
        check_metadata(data)
        assert load_image(data).size in ((64, 64),)


@pytest.mark.parametrize("mode", ["P", "RGBA", "I;16", "L"])
def test_converting_a_band_at_a_time_gives_the_whole_image_resize(mode):
    rng = np.random.default_rng(1)
    base = Image.fromarray(rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)).resize((1500, 900), Image.Resampling.BILINEAR)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 200)
    elif mode == "RGBA":
        image = base.convert("RGBA")
        image.putalpha(Image.linear_gradient("L").resize(image.size))
    else:
        image = base.convert(mode)
    banded = np.asarray(load_image(encoded(image, "PNG"), max_side=600), dtype=int)
    whole = load_image(encoded(image, "PNG")).resize((600, 360), Image.Resampling.LANCZOS)
    assert banded.shape == (360, 600, 3)
    assert np.abs(banded - np.asarray(whole, dtype=int)).max() <= 1
