"""The realism test (a classifier two-sample test) on synthetic patches: it must see a real difference and
must not invent one."""

import numpy as np
from PIL import Image, ImageFilter

from evaluation.realism import (
    PATCH_SIZE,
    REGIONS,
    RealMouths,
    features,
    halves,
    mouth_patches,
    region_patches,
    transplant,
    two_sample_auc,
)


def textures(count: int, seed: int, blur: float = 0.0) -> np.ndarray:
    """`count` patches of a lip-like band over skin-coloured noise; `blur` softens them (a made, blurry mouth)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        base = rng.normal([180, 130, 110], 25, (PATCH_SIZE[1], PATCH_SIZE[0], 3))
        row = rng.integers(24, 40)
        base[row : row + 6, 16:80] = rng.normal([150, 60, 60], 25, (6, 64, 3))
        image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
        out.append(np.asarray(image.filter(ImageFilter.GaussianBlur(blur)) if blur else image))
    return np.stack(out)


def test_it_separates_two_clearly_different_distributions():
    sharp, blurry = features(textures(60, 0)), features(textures(60, 1, blur=1.5))
    assert two_sample_auc(sharp, blurry) > 0.9


def test_it_does_not_separate_two_draws_of_the_same_distribution():
    first, second = features(textures(60, 2)), features(textures(60, 3))
    assert 0.3 < two_sample_auc(first, second) < 0.7


def test_too_few_samples_give_no_score_rather_than_a_number():
    assert two_sample_auc(features(textures(6, 0)), features(textures(60, 1))) is None


def test_halves_are_disjoint_and_cover_everything():
    first, second = halves(np.arange(11))
    assert not set(first) & set(second) and sorted([*first, *second]) == list(range(11))


def test_patches_are_cut_around_the_mouth_of_the_crop_and_baselines_name_their_parts():
    photo = np.zeros((256, 256, 3), np.uint8)
    photo[190:215, 100:156] = 255  # a white bar where an aligned 128-px crop scaled x2 puts the mouth
    crop_to_photo = np.diag([2.0, 2.0, 1.0])
    patch = mouth_patches(photo[None], crop_to_photo)[0]
    assert patch.shape == (PATCH_SIZE[1], PATCH_SIZE[0], 3)
    assert patch[PATCH_SIZE[1] // 2, PATCH_SIZE[0] // 2].min() == 255 and patch[0, 0].max() == 0
    mouths = RealMouths()
    rng = np.random.default_rng(0)
    for k in range(24):
        mouths.add(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), crop_to_photo, smiling=k % 2 == 0)
    baselines = mouths.baselines()
    assert set(baselines) == set(REGIONS) == {"mouth", "lower_face"}
    for region in REGIONS:
        assert set(baselines[region]) == {"nothing_edited", "real_vs_real", "real_smiling_vs_degraded", "real_transplant", "n"}
        assert baselines[region]["n"] == {"smiling": 12, "not_smiling": 12, "transplants": 12}
        assert set(baselines[region]["real_smiling_vs_degraded"]) == {"half resolution", "JPEG quality 40", "blur 1 px"}
        assert set(baselines[region]["real_transplant"]) == {"more", "less"}


def test_by_features_names_what_gives_a_made_mouth_away():
    """A colour shift only: the colour features see it, shape and sharpness do not."""
    mouths = RealMouths()
    crop_to_photo = np.diag([2.0, 2.0, 1.0])
    shifted: dict[str, list[np.ndarray]] = {region: [] for region in REGIONS}
    for k, patch in enumerate(np.concatenate([textures(100, 4), textures(100, 5)])):  # 100 a side: AUC noise ~0.04
        photo = np.asarray(Image.fromarray(patch).resize((256, 256)))
        mouths.add(photo, crop_to_photo, smiling=k < 100)
        if k >= 100:  # "more" made from the non-smiling ones: the same mouths, redder
            redder = (photo + np.array([40, 0, 0])).clip(0, 255).astype(np.uint8)
            for region, made in region_patches(redder, crop_to_photo).items():
                shifted[region].append(made)
    scores = mouths.scores(shifted, shifted)
    assert set(scores) == set(REGIONS)
    by = scores["mouth"]["by_features"]
    assert set(by) == {"shape (HOG)", "sharpness (band-pass energy)", "colour"}
    # "more": the smiling draws against the other draws made redder (not against the very same mouths, which
    # cross-validation would score below chance)
    assert by["colour"]["more"] > 0.9
    assert 0.25 < by["shape (HOG)"]["more"] < 0.75 and 0.25 < by["sharpness (band-pass energy)"]["more"] < 0.75
    assert 0.25 < by["colour"]["nothing_edited"] < 0.75


def test_a_transplant_pastes_the_donors_mouth_in_its_colour_and_leaves_the_rest():
    crop_to_photo = np.diag([2.0, 2.0, 1.0])  # a 256-px photo of an aligned face
    target = np.full((256, 256, 3), 100, np.uint8)
    donor = np.full((256, 256, 3), 160, np.uint8)
    donor[200:214, 104:152] = 250  # its teeth, where the crop puts the mouth
    pasted = transplant(target, crop_to_photo, donor, crop_to_photo).astype(int)
    assert np.array_equal(pasted[:120], target[:120])  # the eyes and everything far from the mouth are the target's
    assert abs(pasted[200:214, 110:146].mean() - (250 - 60)) < 4  # the teeth, moved to the target's skin tone
    assert abs(pasted[180:186, 128].mean() - 100) < 4  # the skin the paste covers has the target's colour
    assert mouth_patches(pasted.astype(np.uint8)[None], crop_to_photo)[0].max() > 180
