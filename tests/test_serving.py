"""The server-side guards in vae.serving and the model settings check, on real files."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from vae.editor import ModelLoadError, SmileEditor, read_settings
from vae.preprocess import ImageError
from vae.serving import PreparedCache, ResultFiles, read_upload


@pytest.fixture
def uploads(tmp_path) -> Path:
    root = tmp_path / "uploads"
    (root / "abc").mkdir(parents=True)
    (root / "abc" / "photo.png").write_bytes(b"x" * 100)
    return root


def test_an_uploaded_file_is_read(uploads):
    assert read_upload(str(uploads / "abc" / "photo.png"), uploads) == b"x" * 100


@pytest.mark.parametrize("target", ["/etc/passwd", "/dev/zero", "../outside.png", ""])
def test_paths_outside_the_upload_folder_are_refused_before_opening(uploads, target):
    with pytest.raises(ImageError, match="Only files uploaded|Upload a photo"):
        read_upload(target if not target.startswith("..") else str(uploads / target), uploads)


def test_links_pipes_folders_and_large_files_are_refused(uploads):
    (uploads / "abc" / "link.png").symlink_to("/etc/passwd")
    (uploads / "abc" / "inside.png").symlink_to(uploads / "abc" / "photo.png")  # even a link that stays inside
    os.mkfifo(uploads / "abc" / "pipe.png")
    for link in ("link.png", "inside.png"):
        with pytest.raises(ImageError, match="Only files uploaded"):
            read_upload(str(uploads / "abc" / link), uploads)
    with pytest.raises(ImageError, match="not a regular file"):
        read_upload(str(uploads / "abc" / "pipe.png"), uploads)  # returns at once: opened non-blocking
    with pytest.raises(ImageError, match="not a regular file"):
        read_upload(str(uploads / "abc"), uploads)
    with pytest.raises(ImageError, match="too large"):
        read_upload(str(uploads / "abc" / "photo.png"), uploads, max_bytes=99)
    with pytest.raises(ImageError, match="no longer available"):
        read_upload(str(uploads / "abc" / "gone.png"), uploads)


def test_results_get_fresh_names_and_old_ones_are_removed(tmp_path):
    results = ResultFiles(tmp_path / "results", keep=3)
    pixels = np.zeros((8, 8, 3), np.uint8)
    paths = [results.image(pixels, "less") for _ in range(5)]
    assert len(set(paths)) == 5  # the same content never shares a file
    assert [Path(p).exists() for p in paths] == [False, False, True, True, True]
    assert np.array_equal(np.asarray(Image.open(paths[-1])), pixels)


def test_the_prepared_cache_reuses_by_content_and_bounds_its_bytes():
    class Photo:
        def __init__(self, data: bytes) -> None:
            self.photo = np.zeros(len(data), np.uint8)

    cache = PreparedCache(lambda data, align: Photo(data), size=10, max_bytes=250)
    key, first, cached = cache.get(b"a" * 100, True)
    assert not cached and cache.get(b"a" * 100, True) == (key, first, True)
    assert not cache.get(b"a" * 100, False)[2]  # another alignment setting is another entry
    cache.get(b"b" * 100, True)  # 300 bytes kept > 250: the oldest goes
    assert cache.find(key) is None and len(cache.items) == 2


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a valid JSON object"),
    ('{"default_attribute": "Nope"}', "is not one of the model's vectors"),
    ('{"default_strength": "high"}', "finite numbers"),
    ('{"default_strength": 9, "max_strength": 4}', "default_strength <= max_strength"),
    ("[1, 2]", "not a valid JSON object"),
])
def test_a_bad_editor_json_stops_loading_with_a_message_naming_it(tmp_path, content, message):
    path = tmp_path / "editor.json"
    path.write_text(content)
    with pytest.raises(ModelLoadError, match=message):
        read_settings(path, ["Smiling"])


@pytest.fixture(scope="module")
def editor() -> SmileEditor:
    return SmileEditor.from_pretrained(ROOT / "assets")


def test_the_shipped_settings_are_valid(editor):
    settings = json.loads((ROOT / "assets" / "editor.json").read_text())
    assert editor.settings["default_attribute"] == settings["default_attribute"] in editor.attributes


def test_strengths_must_be_finite_and_in_range(editor):
    assert editor.settings["max_strength"] == 4.0
    assert editor.check_strength(2) == 2.0 and editor.check_strength(-4.0, signed=True) == -4.0
    for bad in (float("nan"), float("inf"), "2", None, True):
        with pytest.raises(ValueError, match="finite number"):
            editor.check_strength(bad)
    for bad in (-0.5, 4.5):
        with pytest.raises(ValueError, match="out of range"):
            editor.check_strength(bad)
