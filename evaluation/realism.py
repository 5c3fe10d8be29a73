"""Do made mouths look like real ones? A classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017).

A linear classifier learns to tell two sets of mouth patches apart; its cross-validated ROC-AUC is the
score: 0.5 means it cannot tell them apart, 1.0 that it always can. No downloaded weights: the features
are written here and say what a viewer looks at in a mouth:
- HOG (9 orientations, 8-px cells, 2x2 blocks) of the grey patch: edges of lips and teeth, their shape;
- the energy of three band-pass layers (differences of Gaussians, sigma 0.5 / 1 / 2 / 4 px) on a 4 x 6
  grid, as logs: how sharp each part is (blur, JPEG, a painted blob all move these);
- the mean and spread of each colour channel on a 2 x 3 grid: the colour of lips, teeth and skin.
Patches are cut from the photo at its own resolution, axis-aligned in the model's crop (so every mouth
sits at the same place), and resampled to the region's patch size, for two regions (`REGIONS`): the
mouth (lips, what lies between them, the corners) and the lower face (nose to chin, cheek to cheek: a
real smile also lifts the cheeks and deepens the folds beside the nose). The score is reported with its
baselines in the same run: the two classes unedited (how strong the test is: it must see a smile), real
against real (~0.5), degraded copies, and real transplants: each face given the mouth of the nearest-
looking face of the other class, warped through both alignments, its colour matched on the skin around
it and feathered in (real teeth and lips, the best a mouth-only paste could do: what an edit is held to).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageFilter
from skimage.feature import hog
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vae.align import FRAME_POINTS, FRAME_SIZE, crop_to_frame, warp
from vae.filters import gaussian_blur


@dataclass(frozen=True)
class Region:
    """A patch axis-aligned in the model's 128-px crop, around CelebA's mouth point."""

    patch_size: tuple[int, int]  # width, height of the patch, px
    crop_px: tuple[float, float]  # its extent in the crop
    up: float = 0.0  # crop px its centre lies above the mouth point


REGIONS = {
    "mouth": Region((96, 64), (56.0, 37.3)),  # about a CelebA-HQ mouth at 256 px, 1:1: the lips, corners, lip line
    "lower_face": Region((96, 64), (84.0, 56.0), 6.0),  # nose to chin, cheek to cheek
}
PATCH_SIZE = REGIONS["mouth"].patch_size
TRANSPLANT_RADII = (20.0, 11.0)  # crop px: the pasted ellipse, lips and corners (the mouth is ~35 px wide)
TRANSPLANT_FEATHER = 4.0  # crop px over which the paste fades in
FOLDS = 5
FEATURE_KINDS = ("shape (HOG)", "sharpness (band-pass energy)", "colour")  # the keys of `feature_parts`, in order
CLASSIFIER = (
    "standardised features -> L2 logistic regression (C=0.01), 5-fold stratified cross-validated ROC-AUC; features: "
    "HOG of the grey patch (9 orientations, 8-px cells, 2x2 blocks), log band-pass energy at 3 scales on a 4x6 grid, "
    "colour mean and spread on a 2x3 grid; patches 96x64 px cut around the mouth, axis-aligned in the model's crop"
)


def mouth_point() -> np.ndarray:
    """CelebA's mouth point in the model's crop, px."""
    frame_to_crop = np.linalg.inv(crop_to_frame(FRAME_SIZE))
    return (frame_to_crop @ np.append(FRAME_POINTS[2], 1.0))[:2]


def patch_to_photo(crop_to_photo: np.ndarray, region: str = "mouth") -> np.ndarray:
    """3x3 from a region's patch pixels to photo pixels."""
    shape = REGIONS[region]
    mouth = mouth_point()
    sx, sy = shape.crop_px[0] / shape.patch_size[0], shape.crop_px[1] / shape.patch_size[1]
    patch_to_crop = np.array(
        [
            [sx, 0, mouth[0] - shape.crop_px[0] / 2 + sx / 2 - 0.5],
            [0, sy, mouth[1] - shape.up - shape.crop_px[1] / 2 + sy / 2 - 0.5],
            [0, 0, 1],
        ]
    )
    return crop_to_photo @ patch_to_crop


def mouth_patches(photos: np.ndarray, crop_to_photo: np.ndarray, region: str = "mouth") -> np.ndarray:
    """(K, h, w, 3) uint8 patches of `region` of K (H, W, 3) uint8 photos that share one alignment."""
    tensor = torch.from_numpy(np.array(photos)).permute(0, 3, 1, 2).float() / 255
    patches = warp(tensor, patch_to_photo(crop_to_photo, region), REGIONS[region].patch_size, mode="bilinear")
    return (patches.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def region_patches(photo: np.ndarray, crop_to_photo: np.ndarray) -> dict[str, np.ndarray]:
    """Each region's (h, w, 3) patch of one photo."""
    return {region: mouth_patches(photo[None], crop_to_photo, region)[0] for region in REGIONS}


def _crop_ellipse(radii: tuple[float, float], feather: float) -> torch.Tensor:
    """(1, 1, 128, 128) weights in the crop: 1 inside an ellipse around the mouth point, fading out over `feather` px."""
    mouth = mouth_point()
    ys, xs = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    radius = torch.sqrt(((xs - mouth[0]) / radii[0]) ** 2 + ((ys - mouth[1]) / radii[1]) ** 2)
    return ((1 + feather / min(radii) - radius) * min(radii) / feather).clamp(0, 1)[None, None]


def transplant(target: np.ndarray, target_map: np.ndarray, donor: np.ndarray, donor_map: np.ndarray) -> np.ndarray:
    """`target` (H, W, 3) uint8 with `donor`'s mouth pasted in: warped through both photos' crop -> photo maps,
    its mean colour matched to the target's on a ring of skin around the mouth, and feathered in."""
    height, width = target.shape[:2]
    to_crop = np.linalg.inv(target_map)
    donor_px = torch.from_numpy(np.array(donor)).permute(2, 0, 1).float() / 255
    moved = warp(donor_px, donor_map @ to_crop, (width, height), mode="bicubic")
    inner = warp(_crop_ellipse(TRANSPLANT_RADII, TRANSPLANT_FEATHER), to_crop, (width, height), padding="zeros")[0]
    outer = (TRANSPLANT_RADII[0] + 2 * TRANSPLANT_FEATHER, TRANSPLANT_RADII[1] + 2 * TRANSPLANT_FEATHER)
    ring = (warp(_crop_ellipse(outer, TRANSPLANT_FEATHER), to_crop, (width, height), padding="zeros")[0] - inner).clamp(0, 1)
    base = torch.from_numpy(np.array(target)).permute(2, 0, 1).float() / 255
    if float(ring.sum()) > 0:
        shift = ((base - moved) * ring).sum((1, 2), keepdim=True) / ring.sum()
        moved = moved + shift
    out = base * (1 - inner) + moved.clamp(0, 1) * inner
    return (out.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def feature_parts(patches: np.ndarray) -> dict[str, np.ndarray]:
    """(N, D_k) float features of (N, h, w, 3) uint8 patches by what they look at (see the module docstring)."""
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    blurred = [grey] + [gaussian_blur(grey, s) for s in (0.5, 1.0, 2.0, 4.0)]
    bands = [(blurred[i] - blurred[i + 1]) ** 2 for i in range(1, 4)]
    energy = torch.cat([torch.nn.functional.adaptive_avg_pool2d(b, (4, 6)) for b in bands], 1).flatten(1)
    mean = torch.nn.functional.adaptive_avg_pool2d(x, (2, 3))
    spread = (torch.nn.functional.adaptive_avg_pool2d(x**2, (2, 3)) - mean**2).clamp_min(0).sqrt()
    return {
        "shape (HOG)": np.stack(
            [hog(g, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2)) for g in grey[:, 0].numpy()]
        ),
        "sharpness (band-pass energy)": torch.log(energy + 1e-6).numpy(),
        "colour": np.concatenate([mean.flatten(1).numpy(), spread.flatten(1).numpy()], 1),  # mean and spread
    }


def features(patches: np.ndarray) -> np.ndarray:
    """(N, D) float features of (N, h, w, 3) uint8 patches: every kind of `feature_parts`, side by side."""
    return np.concatenate(list(feature_parts(patches).values()), 1)


def parts_of(patches: list[np.ndarray]) -> dict[str, np.ndarray]:
    """`feature_parts` of a list of patches; no rows for an empty list."""
    if patches:
        return feature_parts(np.stack(patches))
    return dict.fromkeys(FEATURE_KINDS, np.zeros((0, 1)))


def features_of(patches: list[np.ndarray]) -> np.ndarray:
    """`features` of a list of patches; no rows for an empty list."""
    return np.concatenate(list(parts_of(patches).values()), 1)


def two_sample_auc(first: np.ndarray, second: np.ndarray, seed: int = 0) -> float | None:
    """Cross-validated ROC-AUC of telling feature rows `first` from `second`; None with too few of either."""
    if min(len(first), len(second)) < 2 * FOLDS:
        return None
    x = np.concatenate([first, second])
    y = np.r_[np.zeros(len(first)), np.ones(len(second))]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=5000))
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, y, cv=folds, method="decision_function")
    return float(roc_auc_score(y, scores))


def halves(rows: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves of `rows` (real against real: the test's chance level)."""
    order = np.random.default_rng(seed).permutation(len(rows))
    return rows[order[: len(rows) // 2]], rows[order[len(rows) // 2 :]]


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer, formats=["JPEG"]).convert("RGB")


def _half(image: Image.Image) -> Image.Image:
    small = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.BILINEAR)
    return small.resize(image.size, Image.Resampling.BILINEAR)


DEGRADATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "half resolution": _half,
    "JPEG quality 40": lambda image: _jpeg(image, 40),
    "blur 1 px": lambda image: image.filter(ImageFilter.GaussianBlur(1.0)),
}


@dataclass
class RealMouths:
    """Each region's patches of the unedited photos by their dataset label, of degraded copies of the smiling
    ones, and the photos themselves (for the real transplants)."""

    patches: dict[str, dict[bool, list[np.ndarray]]] = field(
        default_factory=lambda: {region: {True: [], False: []} for region in REGIONS}
    )
    degraded: dict[str, dict[str, list[np.ndarray]]] = field(
        default_factory=lambda: {region: {name: [] for name in DEGRADATIONS} for region in REGIONS}
    )
    faces: list[tuple[np.ndarray, np.ndarray, bool]] = field(default_factory=list)  # (photo, crop_to_photo, smiling)

    def add(self, photo: np.ndarray, crop_to_photo: np.ndarray, smiling: bool) -> None:
        for region, patch in region_patches(photo, crop_to_photo).items():
            self.patches[region][smiling].append(patch)
        self.faces.append((photo, crop_to_photo, smiling))
        if smiling:
            image = Image.fromarray(photo)
            for name, degrade in DEGRADATIONS.items():
                for region, patch in region_patches(np.asarray(degrade(image)), crop_to_photo).items():
                    self.degraded[region][name].append(patch)

    def transplants(self) -> dict[bool, dict[str, list[np.ndarray]]]:
        """Region patches of every face given the mouth of the nearest-looking face of the other class (by the
        lower face's mean colour): True holds smiling mouths in non-smiling faces ("more"'s yardstick)."""
        looks = [
            mouth_patches(photo[None], to_photo, "lower_face")[0].reshape(-1, 3).mean(0) for photo, to_photo, _ in self.faces
        ]
        out: dict[bool, dict[str, list[np.ndarray]]] = {True: {r: [] for r in REGIONS}, False: {r: [] for r in REGIONS}}
        for k, (photo, to_photo, smiling) in enumerate(self.faces):
            donors = [j for j, face in enumerate(self.faces) if face[2] != smiling]
            if not donors:
                continue
            j = min(donors, key=lambda d: float(np.abs(looks[d] - looks[k]).sum()))
            pasted = transplant(photo, to_photo, self.faces[j][0], self.faces[j][1])
            for region, patch in region_patches(pasted, to_photo).items():
                out[not smiling][region].append(patch)
        return out

    def baselines(self) -> dict:
        """Per region: the test's strength (nothing edited), its chance level (real vs real), its scale
        (degraded copies) and what a real mouth pasted in scores (real transplants)."""
        pasted = self.transplants()
        out = {}
        for region in REGIONS:
            smiling, plain = (features_of(self.patches[region][k]) for k in (True, False))
            first, second = halves(np.arange(len(smiling)))
            out[region] = {
                "nothing_edited": two_sample_auc(smiling, plain),
                "real_vs_real": {
                    "smiling": two_sample_auc(*(smiling[h] for h in (first, second))),
                    "not_smiling": two_sample_auc(*(plain[h] for h in halves(np.arange(len(plain))))),
                },
                "real_smiling_vs_degraded": {
                    name: two_sample_auc(smiling[first], features_of(patches)[second]) if patches else None
                    for name, patches in self.degraded[region].items()
                },
                "real_transplant": {
                    "more": two_sample_auc(smiling, features_of(pasted[True][region])),
                    "less": two_sample_auc(plain, features_of(pasted[False][region])),
                },
                "n": {"smiling": len(smiling), "not_smiling": len(plain), "transplants": len(pasted[True][region])},
            }
        return out

    def scores(self, made_more: dict[str, list[np.ndarray]], made_less: dict[str, list[np.ndarray]]) -> dict:
        """Per region: AUC of real smiling mouths vs made ones ("more"), and of real non-smiling ones vs made ones
        ("less"); `by_features`: the same, and nothing edited, with one kind of feature at a time (what gives a
        made mouth away)."""
        out = {}
        for region in REGIONS:
            real = self.patches[region]
            parts = [parts_of(p) for p in (real[True], real[False], made_more[region], made_less[region])]
            smiling, plain, more, less = (np.concatenate(list(p.values()), 1) for p in parts)
            pairs = {"more": (0, 2), "less": (1, 3), "nothing_edited": (0, 1)}
            out[region] = {
                "more": two_sample_auc(smiling, more),
                "less": two_sample_auc(plain, less),
                "by_features": {
                    kind: {k: two_sample_auc(parts[a][kind], parts[b][kind]) for k, (a, b) in pairs.items()}
                    for kind in FEATURE_KINDS
                },
                "n": {"more": len(made_more[region]), "less": len(made_less[region])},
            }
        return out
