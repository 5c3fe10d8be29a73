"""The server-side guards of the web package and the editor's settings check, on real files."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from vae.editor import SmileEditor
from vae.hub import ModelLoadError
from vae.preprocess import ImageError
from vae.settings import EditorSettings, SettingsError, TransferSettings
from web.guards import read_upload
from web.photos import PreparedCache
from web.results import ResultFiles


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
    class Photo:  # a stand-in for vae.editor.Prepared: the cache only reads its size
        def __init__(self, data: bytes) -> None:
            self.nbytes = len(data)

    cache = PreparedCache(lambda data, align: Photo(data), size=10, max_bytes=250)
    key, first, cached = cache.get(b"a" * 100, True)
    assert not cached and cache.get(b"a" * 100, True) == (key, first, True)
    assert not cache.get(b"a" * 100, False)[2]  # another alignment setting is another entry
    cache.get(b"b" * 100, True)  # 300 bytes kept > 250: the oldest goes
    assert cache.find(key) is None and len(cache.items) == 2


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"default_strength": "high"}', "default_strength must be a finite number"),
        ('{"default_strength": 9, "max_strength": 4}', "default_strength must be between 0 and 4"),
        ('{"strip_steps": 2.5}', "strip_steps must be a whole number"),
        ('{"transfer": {"mouth_gain": -1}}', "transfer.mouth_gain must be between"),
        ('{"transfer": {"lower_face": "yes"}}', "transfer.lower_face must be true or false"),
        ('{"colour": 1}', "unknown setting"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_a_bad_editor_json_stops_loading_with_a_message_naming_it(tmp_path, content, message):
    (tmp_path / "editor.json").write_text(content)
    with pytest.raises(SettingsError, match=message) as raised:
        EditorSettings.load(tmp_path)
    assert "editor.json" in str(raised.value)


def test_settings_are_checked_however_they_are_built(tmp_path):
    with pytest.raises(SettingsError, match="default_strength"):
        EditorSettings(default_strength=float("nan"))
    with pytest.raises(SettingsError, match="max_strength"):
        EditorSettings().replace(max_strength=0)
    settings = EditorSettings(default_attribute="Smiling", default_strength=3.0, transfer=TransferSettings(mouth_gain=0.5))
    settings.save(tmp_path)
    assert EditorSettings.load(tmp_path) == settings  # what evaluation writes is what the app reads
    assert EditorSettings.load(tmp_path / "nowhere") == EditorSettings()  # no editor.json: the defaults


def test_the_editor_refuses_a_default_attribute_it_has_no_vector_for(editor):
    with pytest.raises(SettingsError, match="not one of the model's vectors"):
        SmileEditor(editor.model, editor.vectors, EditorSettings(default_attribute="Nope"), editor.aligner)


def test_a_model_folder_whose_editor_json_names_a_missing_vector_does_not_load(tmp_path):
    for name in ("config.json", "model.safetensors", "attribute_vectors.npz"):
        os.symlink(ROOT / "assets" / name, tmp_path / name)
    (tmp_path / "editor.json").write_text('{"default_attribute": "Nope"}')
    with pytest.raises(ModelLoadError, match="not one of the model's vectors"):
        SmileEditor.from_pretrained(tmp_path)


@pytest.fixture(scope="module")
def editor() -> SmileEditor:
    return SmileEditor.from_pretrained(ROOT / "assets")


def test_the_shipped_settings_are_valid(editor):
    settings = json.loads((ROOT / "assets" / "editor.json").read_text())
    assert editor.settings.default_attribute == settings["default_attribute"] in editor.attributes
    assert editor.settings == EditorSettings.load(ROOT / "assets")


def test_strengths_must_be_finite_and_in_range(editor):
    assert editor.settings.max_strength == 4.0
    assert editor.check_strength(2) == 2.0 and editor.check_strength(-4.0, signed=True) == -4.0
    for bad in (float("nan"), float("inf"), "2", None, True):
        with pytest.raises(ValueError, match="finite number"):
            editor.check_strength(bad)
    for bad in (-0.5, 4.5):
        with pytest.raises(ValueError, match="out of range"):
            editor.check_strength(bad)
