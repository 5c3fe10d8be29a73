import io

import numpy as np
import pytest
import torch
from PIL import Image

from vae.preprocess import ImageError, center_crop, load_image, preprocess


def gradient(size=(200, 120)) -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None, None].repeat(w, 1)
    return Image.fromarray(np.concatenate([x, y, 255 - x], axis=2), "RGB")


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "F"])
def test_every_mode_becomes_a_128px_rgb_tensor(mode, tmp_path):
    image = gradient().convert(mode) if mode not in ("I;16", "F") else Image.fromarray(
        (np.linspace(0, 65535 if mode == "I;16" else 1, 200 * 120).reshape(120, 200)).astype(np.uint16 if mode == "I;16" else np.float32))
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


@pytest.mark.parametrize("payload, message", [
    (b"", "empty"),
    (b"this is not an image at all", "not an image"),
])
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
