import shutil

import numpy as np
import pytest
from conftest import ATTR_NAMES, write_celeba

from celeba.cache import build_cache, load_cache, open_cache
from celeba.reader import DatasetError, load_index
from celeba.split import make_split


def test_reads_the_official_layout(tiny_celeba):
    index = load_index([tiny_celeba])
    assert len(index) == 48 and len(index.attr_names) == 40
    assert index.attribute("Smiling").sum() == 24
    assert set(np.unique(index.attrs)) == {-1, 1}
    assert (index.partition == 0).sum() == 39 and (index.partition == 2).sum() == 9


def test_several_roots_and_same_photo_grouping(tmp_path):
    a = write_celeba(tmp_path / "celeba-a", 10)
    b = write_celeba(tmp_path / "hq-b", 10, seed=1, partition=False)
    (b / "same_photo_in_celeba_folders.txt").write_text("000003.jpg 000007.jpg celeba-a\n")
    index = load_index([a, b])
    assert len(index) == 20 and len(set(index.keys)) == 20
    assert index.groups[index.keys.index("hq-b/000003.jpg")] == "celeba-a/000007.jpg"
    for seed in range(10):
        split = make_split(index, validation_fraction=0.25, test_fraction=0.25, seed=seed)
        side = {key: part for part in ("train", "validation", "test") for key in getattr(split, part)}
        assert side["hq-b/000003.jpg"] == side["celeba-a/000007.jpg"]


def test_missing_files_and_mismatches_are_named(tmp_path):
    with pytest.raises(DatasetError, match="list_attr_celeba.txt"):
        load_index([tmp_path])
    root = write_celeba(tmp_path / "d", 6)
    (root / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DatasetError, match="000002.jpg"):
        load_index([root])
    shutil.copy(root / "img_align_celeba" / "000001.jpg", root / "img_align_celeba" / "999999.jpg")
    (root / "img_align_celeba" / "000002.jpg").write_bytes((root / "img_align_celeba" / "000001.jpg").read_bytes())
    with pytest.raises(DatasetError, match="999999.jpg"):
        load_index([root])
    with pytest.raises(DatasetError, match="--data"):
        load_index([])


def test_cache_is_built_once_and_reused(tiny_celeba, tmp_path):
    index = load_index([tiny_celeba])
    cache = build_cache(index, tmp_path, workers=1)
    assert cache.images.shape == (48, 128, 128, 3) and cache.images.dtype == np.uint8
    assert cache.info["aligned"] == 0  # 178x218 images are CelebA-framed already
    mtime = (cache.path / "images.npy").stat().st_mtime_ns
    again = build_cache(index, tmp_path, workers=1)
    assert again.path == cache.path and (again.path / "images.npy").stat().st_mtime_ns == mtime
    reopened = load_cache(cache.path)
    assert np.array_equal(reopened.images[:4], cache.images[:4]) and reopened.keys == index.keys


def test_a_failed_cache_build_leaves_no_temporary_files(tmp_path):
    root = write_celeba(tmp_path / "broken", 8)
    (root / "img_align_celeba" / "000003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(Exception, match="not an image"):
        build_cache(load_index([root]), tmp_path / "cache", workers=1)
    assert list((tmp_path / "cache").iterdir()) == []


def test_real_celeba_folders(shared_data):
    roots = [shared_data / n for n in ("celeba-subset", "celeba-small", "celebahq-256")]
    index = load_index(roots)
    assert len(index) == 21_723
    assert index.attribute("Smiling").sum() == 10_409
    assert sum(bool(i) for i in index.identities) == 6_031 + 9_692  # both CelebA folders say who is who
    twins = [(k, g) for k, g in zip(index.keys, index.groups) if g != k]
    assert len(twins) == 358


def test_a_flipped_label_or_new_identity_file_is_other_data_even_with_a_warm_cache(tmp_path):
    root = write_celeba(tmp_path / "celeba", 12)
    cache = open_cache([str(root)], None, tmp_path / "cache", workers=1)
    split = make_split(cache, validation_fraction=0.25, test_fraction=0.25)
    attr_file = root / "list_attr_celeba.txt"
    lines = attr_file.read_text().splitlines()
    name, *values = lines[2].split()
    values[ATTR_NAMES.index("Smiling")] = "1" if values[ATTR_NAMES.index("Smiling")] == "-1" else "-1"
    attr_file.write_text("\n".join([*lines[:2], " ".join([name, *values]), *lines[3:]]) + "\n")
    relabelled = open_cache([str(root)], None, tmp_path / "cache", workers=1)
    assert relabelled.path != cache.path  # the old cache's labels are not reused
    with pytest.raises(SystemExit, match="labels .*differ"):
        split.rows(relabelled)  # what vectors, judge and evaluation do first
    (root / "identity_CelebA.txt").write_text("".join(f"{i + 1:06d}.jpg {i % 3}\n" for i in range(12)))
    assert open_cache([str(root)], None, tmp_path / "cache", workers=1).path not in (cache.path, relabelled.path)


def test_data_errors_in_a_command_are_one_line_messages(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    (tmp_path / "celeba" / "img_align_celeba").mkdir(parents=True)
    for command in (["celeba.split", "--out", str(tmp_path / "out")], ["train", "--out", str(tmp_path / "run")]):
        done = subprocess.run(
            [sys.executable, "-m", *command, "--data", str(tmp_path / "celeba")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "list_attr_celeba.txt" in done.stderr


def test_subset_links_images_and_keeps_their_annotation_rows(tiny_celeba, tmp_path):
    from celeba.subset import main as subset_main

    names = subset_main(["--data", str(tiny_celeba), "--out", str(tmp_path / "small"), "--count", "10", "--seed", "1"])
    full, small = load_index([tiny_celeba]), load_index([tmp_path / "small"])
    assert len(small) == 10 and [k.split("/")[1] for k in small.keys] == names
    rows = [full.keys.index(f"{tiny_celeba.name}/{n}") for n in names]
    assert np.array_equal(small.attrs, full.attrs[rows]) and np.array_equal(small.partition, full.partition[rows])
    assert all(p.is_symlink() for p in small.paths)
    with pytest.raises(SystemExit, match="not empty"):
        subset_main(["--data", str(tiny_celeba), "--out", str(tmp_path / "small"), "--count", "10"])
