import io

import numpy as np
import pytest
import torch
from PIL import Image

from vae.image_file import ImageError, load_image
from vae.preprocess import center_crop, preprocess


def gradient(size=(200, 120)) -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None, None].repeat(w, 1)
    return Image.fromarray(np.concatenate([x, y, 255 - x], axis=2), "RGB")


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "F"])
def test_every_mode_becomes_a_128px_rgb_tensor(mode, tmp_path):
    image = (
        gradient().convert(mode)
        if mode not in ("I;16", "F")
        else Image.fromarray(
            (np.linspace(0, 65535 if mode == "I;16" else 1, 200 * 120).reshape(120, 200)).astype(
                np.uint16 if mode == "I;16" else np.float32
            )
        )
    )
    suffix = ".tiff" if mode in ("CMYK", "I;16", "F") else ".png"
    path = tmp_path / f"img{suffix}"
    image.save(path)
    x = preprocess(path)
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.05  # real content survived the conversion


def test_accepts_path_bytes_pil_and_arrays(tmp_path):
    image = gradient()
    path = tmp_path / "a.png"
    image.save(path)
    ref = preprocess(path)
    assert torch.equal(preprocess(path.read_bytes()), ref)
    assert torch.equal(preprocess(image), ref)
    assert torch.equal(preprocess(np.asarray(image)), ref)
    assert torch.allclose(preprocess(np.asarray(image) / 255.0), ref)


def test_exif_orientation_is_applied(tmp_path):
    upright = gradient((200, 120))
    stored = upright.transpose(Image.Transpose.ROTATE_270)  # what a phone writes: pixels sideways + a tag
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 degrees counter-clockwise to view"
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    loaded = load_image(tmp_path / "phone.jpg")
    assert loaded.size == upright.size
    assert np.abs(np.asarray(loaded, float) - np.asarray(upright, float)).mean() < 4


def test_center_crop_is_80_percent_of_the_shorter_side():
    crop = center_crop(Image.new("RGB", (178, 218)))
    assert crop.size == (142, 142)


def test_crop_is_centred():
    image = Image.new("RGB", (100, 200), "black")
    image.paste((255, 0, 0), (10, 60, 90, 140))  # exactly the centred 80x80 square
    x = preprocess(image)
    assert x[0].min() > 0.95 and x[1].max() < 0.05


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not an image"),
    ],
)
def test_bad_bytes_get_a_clear_message(payload, message):
    with pytest.raises(ImageError, match=message):
        preprocess(payload)


def test_truncated_file_is_reported(tmp_path):
    buffer = io.BytesIO()
    gradient((400, 400)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[:2000])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        preprocess(tmp_path / "cut.jpg")


def test_huge_image_is_refused_before_decoding(tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, "PNG")  # 81 Mpx, tiny file: a decompression bomb
    with pytest.raises(ImageError, match="too large"):
        preprocess(buffer.getvalue())


def test_missing_file_and_bad_array_shape():
    with pytest.raises(ImageError, match="No such file"):
        preprocess("/nonexistent/face.jpg")
    with pytest.raises(ImageError, match="HxW"):
        preprocess(np.zeros((4, 4, 5), np.uint8))


# Only the formats the README names are opened, recognised from the bytes. Pillow would run an EPS
# through Ghostscript (a program, with no time limit); the other refused formats are old decoders no
# photo needs.
LOOPING_EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 1 1000 {pop} for\n"
REFUSED_FORMATS = [
    ("EPS", "RGB"),
    ("TGA", "RGB"),
    ("PCX", "RGB"),
    ("ICO", "RGB"),
    ("SGI", "RGB"),
    ("IM", "RGB"),
    ("PPM", "RGB"),
    ("XBM", "1"),
]


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def no_ghostscript(monkeypatch):
    """Fail the test if anything reaches Ghostscript, installed or not."""
    from PIL import EpsImagePlugin

    def refuse(*args, **kwargs):
        raise AssertionError("Ghostscript was called")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", refuse)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)


@pytest.mark.parametrize(
    "fmt, mode", [("JPEG", "RGB"), ("PNG", "RGB"), ("WEBP", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB"), ("MPO", "RGB")]
)
def test_the_readme_formats_are_accepted(fmt, mode):
    extra = {"save_all": True, "append_images": [gradient()]} if fmt == "MPO" else {}
    image = load_image(encoded(gradient().convert(mode), fmt, **extra))
    assert image.size == (200, 120) and image.mode == "RGB"


@pytest.mark.parametrize("fmt, mode", REFUSED_FORMATS)
def test_other_formats_are_refused_naming_the_accepted_ones(fmt, mode, tmp_path, no_ghostscript):
    data = encoded(gradient().convert(mode), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would open it
    for source in (data, tmp_path / "photo.png", tmp_path / "photo.jpg"):  # the name never decides the format
        if not isinstance(source, bytes):
            source.write_bytes(data)
        with pytest.raises(
            ImageError, match="not an image we can read: the accepted formats are JPEG, PNG, WebP, GIF, BMP or TIFF"
        ):
            load_image(source)


def test_an_eps_program_is_never_run(tmp_path, no_ghostscript):
    import time

    (tmp_path / "face.jpg").write_bytes(LOOPING_EPS)
    start = time.perf_counter()
    for source in (LOOPING_EPS, tmp_path / "face.jpg"):
        with pytest.raises(ImageError, match="accepted formats are JPEG, PNG"):
            preprocess(source)
    assert time.perf_counter() - start < 1.0


def test_the_format_comes_from_the_bytes_not_the_name(tmp_path):
    (tmp_path / "really_a_png.jpg").write_bytes(encoded(gradient(), "PNG"))
    (tmp_path / "really_a_jpeg.gif").write_bytes(encoded(gradient(), "JPEG"))
    assert load_image(tmp_path / "really_a_png.jpg").size == (200, 120)
    assert load_image(tmp_path / "really_a_jpeg.gif").size == (200, 120)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(monkeypatch):
    from PIL import JpegImagePlugin

    decoded = []
    original = JpegImagePlugin.JpegImageFile.load

    def load(self):
        decoded.append(self.size)  # the size the decoder produces, after draft()
        return original(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", load)
    data = encoded(gradient((6000, 4000)), "JPEG", quality=70)
    image = load_image(data, max_side=1000)
    assert image.size == (1000, 667)
    assert decoded[0] == (1500, 1000)  # 1/4 scale: still larger than the working size, never smaller
    full = np.asarray(load_image(data).resize((1000, 667), Image.Resampling.LANCZOS), float)
    assert np.abs(np.asarray(image, float) - full).mean() < 2  # the same picture


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "I;16", "L", "1", "CMYK"])
def test_a_large_image_comes_back_at_the_working_size(mode):
    image = (
        gradient((3000, 1000)).convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.linspace(0, 65535, 3000 * 1000).reshape(1000, 3000).astype(np.uint16))
    )
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    loaded = load_image(encoded(image, fmt), max_side=600)
    assert loaded.size == (600, 200) and loaded.mode == "RGB"
    assert np.asarray(loaded, float).std() > 20  # real content survived
    assert load_image(encoded(gradient((500, 300)), "PNG"), max_side=600).size == (500, 300)  # small ones untouched


def test_exif_orientation_is_applied_at_the_working_size(tmp_path):
    upright = gradient((2400, 1200))
    exif = Image.Exif()
    exif[0x0112] = 8
    data = encoded(upright.transpose(Image.Transpose.ROTATE_270), "JPEG", exif=exif, quality=95)
    loaded = load_image(data, max_side=600)
    assert loaded.size == (600, 300)
    expected = np.asarray(upright.resize((600, 300), Image.Resampling.LANCZOS), float)
    assert np.abs(np.asarray(loaded, float) - expected).mean() < 4


@pytest.mark.parametrize("size", [(32, 5000), (5000, 32), (20, 20), (31, 1000)])
def test_too_small_at_the_working_size_is_refused_before_decoding(size, monkeypatch):
    data = encoded(Image.new("RGB", size), "PNG")
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded"))
    from PIL import PngImagePlugin

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(ImageError, match=rf"too small \({size[0]}x{size[1]}\)"):
        load_image(data, max_side=2048, min_side=32)


def test_a_narrow_image_that_stays_wide_enough_is_accepted():
    assert load_image(encoded(Image.new("RGB", (64, 4000)), "PNG"), max_side=2048, min_side=32).size == (33, 2048)
    assert load_image(np.zeros((40, 40, 3), np.uint8), max_side=2048, min_side=32).size == (40, 40)
    with pytest.raises(ImageError, match="too small"):
        load_image(np.zeros((40, 4000, 3), np.uint8), max_side=2048, min_side=32)


def test_a_pil_image_is_never_returned_as_the_same_object():
    image = gradient()
    assert load_image(image) is not image


PEAK_SCRIPT = """
import resource, sys
from vae.image_file import load_image
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = load_image(data, max_side=2048)
print(image.size[0], image.size[1], (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


@pytest.mark.parametrize("mode", ["I;16", "RGB"])
def test_peak_memory_of_a_40_megapixel_png_follows_the_working_size(mode, tmp_path):
    """A 16-bit 40 MP PNG once took +1 GB to decode (float64 copies at full size); at the working size the
    full-size decode (80 MB for 16-bit, 160 MB for RGB, which Pillow keeps in 4 bytes a pixel) is the peak."""
    import subprocess
    import sys

    from conftest import ROOT

    path = tmp_path / "huge.png"
    Image.new(mode, (7300, 5470), 40000 if mode == "I;16" else (90, 140, 220)).save(path)
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    width, height, peak_mb = out.stdout.split()
    assert (int(width), int(height)) == (2048, 1535)
    assert float(peak_mb) < (150 if mode == "I;16" else 260), out.stdout
