"""The split is made once, travels as split.json and refuses data it was not made from."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, write_celeba

from celeba.reader import load_index
from celeba.split import PARTS, Split, make_split, random_parts, sample_rows, split_units
from celeba.split import main as split_main

ASSETS = ROOT / "assets"


def with_identities(root: Path, people: int) -> Path:
    """Give the folder's images identity_CelebA.txt rows: image i belongs to person i % people."""
    names = sorted(p.name for p in (root / "img_align_celeba").iterdir())
    (root / "identity_CelebA.txt").write_text("".join(f"{n} {i % people + 1}\n" for i, n in enumerate(names)))
    return root


def part_of(split: Split) -> dict[str, str]:
    return {key: part for part in PARTS for key in getattr(split, part)}


@pytest.fixture
def two_folders(tmp_path):
    a = with_identities(write_celeba(tmp_path / "celeba-a", 40), people=8)
    b = write_celeba(tmp_path / "hq-b", 20, seed=1, partition=False)
    (b / "same_photo_in_celeba_folders.txt").write_text("000003.jpg 000007.jpg celeba-a\n000004.jpg 000010.jpg celeba-a\n")
    return a, b


def test_person_split_keeps_each_person_and_each_photo_on_one_side(two_folders):
    index = load_index(list(two_folders))
    person = {k: i for k, i in zip(index.keys, index.identities)}
    for seed in range(5):
        side = part_of(make_split(index, by="person", validation_fraction=0.2, test_fraction=0.2, seed=seed))
        for who in set(filter(None, person.values())):
            assert len({side[k] for k, i in person.items() if i == who}) == 1
        # an HQ photo has no identity of its own but follows its CelebA twin's person
        assert side["hq-b/000003.jpg"] == side["celeba-a/000007.jpg"] == side["celeba-a/000015.jpg"]
    photo = make_split(index, by="photo", validation_fraction=0.2, test_fraction=0.2, seed=0)
    assert photo.unit == "photo" and sum(photo.counts().values()) == 60
    assert len({side for k, side in part_of(photo).items() if k.startswith("celeba-a/") and person[k] == "1"}) > 1


def test_held_out_part_equals_a_one_way_split_of_the_same_size():
    # this is what keeps the shipped model's old 80/20 train part exactly as it was
    units = [f"photo{i}" for i in range(1000)]
    three_way = random_parts(units, 0.1, 0.1, seed=0)
    one_way = random_parts(units, 0.0, 0.2, seed=0)
    assert np.array_equal(three_way > 0, one_way > 0)
    assert (three_way == 1).sum() == 100 and (three_way == 2).sum() == 100
    assert not np.array_equal(three_way, random_parts(units, 0.1, 0.1, seed=1))
    assert split_units(["g1", "g1", "g2"], ["7", "", ""], "person") == ["person 7", "person 7", "g2"]


def test_split_json_round_trip_and_any_folder_order(two_folders, tmp_path):
    a, b = two_folders
    split = make_split(load_index([a, b]), seed=3)
    path = split.save(tmp_path / "model")
    assert set(json.loads(path.read_text())) == {"train", "validation", "test", "fingerprint", "unit"}
    loaded = Split.load(tmp_path / "model")
    assert loaded == split
    reordered = load_index([b, a])  # another --data order: same images per part, other row numbers
    rows = loaded.rows(reordered)
    for part, part_rows in zip(PARTS, rows):
        assert sorted(reordered.keys[r] for r in part_rows) == getattr(split, part)


def test_other_data_stop_with_a_message_that_says_why(two_folders, tmp_path):
    a, b = two_folders
    split = make_split(load_index([a, b]))
    with pytest.raises(SystemExit, match="20 of its images are missing"):
        split.rows(load_index([a]))
    relabelled = load_index([a, b])
    relabelled.attrs[0, 0] *= -1
    with pytest.raises(SystemExit, match="labels"):
        split.rows(relabelled)
    with pytest.raises(SystemExit, match="No split.json"):
        Split.load(tmp_path)


def test_official_split_uses_the_partition_file(tiny_celeba):
    split = make_split(load_index([tiny_celeba]), mode="official")
    assert split.counts() == {"train": 39, "validation": 0, "test": 9} and split.unit == "official partition"


def test_shipped_split_matches_the_real_data_and_the_old_train_part(shared_data):
    index = load_index([shared_data / n for n in ("celeba-subset", "celeba-small", "celebahq-256")])
    shipped = Split.load(ASSETS)
    rows = shipped.rows(index)  # stops if the data or labels differ
    assert shipped.counts()["train"] == 17_366 and len(rows.validation) + len(rows.test) == 4_357
    assert shipped == make_split(index, by="photo", validation_fraction=0.1, test_fraction=0.1, seed=0)
    group = dict(zip(index.keys, index.groups))
    side = part_of(shipped)
    assert all(side[k] == side[g] for k, g in group.items() if k != g)


def test_sample_rows_is_seeded_sorted_and_spread_over_the_rows():
    rows = np.arange(100, 200)
    picked = sample_rows(rows, 10, seed=0)
    assert np.array_equal(picked, sample_rows(rows, 10, seed=0)) and np.all(np.diff(picked) > 0)
    assert set(picked) <= set(rows) and picked.max() > 150  # not the first rows, which are one folder
    assert np.array_equal(sample_rows(rows, None, 0), rows) and np.array_equal(sample_rows(rows, 500, 0), rows)


def test_split_command_writes_split_json(tiny_celeba, tmp_path):
    written = split_main(["--data", str(tiny_celeba), "--out", str(tmp_path), "--split-by", "photo", "--seed", "2"])
    assert Split.load(tmp_path) == written and written.counts() == {"train": 38, "validation": 5, "test": 5}
