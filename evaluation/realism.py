"""Do made mouths look like real ones? A classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017).

A linear classifier learns to tell two sets of mouth patches apart; its cross-validated ROC-AUC is the
score: 0.5 means it cannot tell them apart, 1.0 that it always can. No downloaded weights: the features
are written here and say what a viewer looks at in a mouth:
- HOG (9 orientations, 8-px cells, 2x2 blocks) of the grey patch: edges of lips and teeth, their shape;
- the energy of three band-pass layers (differences of Gaussians, sigma 0.5 / 1 / 2 / 4 px) on a 4 x 6
  grid, as logs: how sharp each part is (blur, JPEG, a painted blob all move these);
- the mean and spread of each colour channel on a 2 x 3 grid: the colour of lips, teeth and skin.
Patches are cut from the photo at its own resolution, axis-aligned in the model's crop (so every mouth
sits at the same place), and resampled to PATCH_SIZE. The score is reported with its baselines in the same
run: the two classes unedited (how strong the test is: it must see a smile) and real against real (~0.5).
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
from vae.transfer import gaussian_blur

PATCH_SIZE = (96, 64)  # width, height: about a CelebA-HQ mouth at 256 px, 1:1
PATCH_CROP_PX = (56.0, 37.3)  # the patch's extent in the model's 128-px crop: the mouth, its corners and the lip line
FOLDS = 5
FEATURE_KINDS = ("shape (HOG)", "sharpness (band-pass energy)", "colour")  # the keys of `feature_parts`, in order
CLASSIFIER = (
    "standardised features -> L2 logistic regression (C=0.01), 5-fold stratified cross-validated ROC-AUC; features: "
    "HOG of the grey patch (9 orientations, 8-px cells, 2x2 blocks), log band-pass energy at 3 scales on a 4x6 grid, "
    "colour mean and spread on a 2x3 grid; patches 96x64 px cut around the mouth, axis-aligned in the model's crop"
)


def patch_to_photo(crop_to_photo: np.ndarray) -> np.ndarray:
    """3x3 from mouth-patch pixels to photo pixels."""
    frame_to_crop = np.linalg.inv(crop_to_frame(FRAME_SIZE))
    mouth = (frame_to_crop @ np.append(FRAME_POINTS[2], 1.0))[:2]
    sx, sy = PATCH_CROP_PX[0] / PATCH_SIZE[0], PATCH_CROP_PX[1] / PATCH_SIZE[1]
    patch_to_crop = np.array(
        [
            [sx, 0, mouth[0] - PATCH_CROP_PX[0] / 2 + sx / 2 - 0.5],
            [0, sy, mouth[1] - PATCH_CROP_PX[1] / 2 + sy / 2 - 0.5],
            [0, 0, 1],
        ]
    )
    return crop_to_photo @ patch_to_crop


def mouth_patches(photos: np.ndarray, crop_to_photo: np.ndarray) -> np.ndarray:
    """(K, 64, 96, 3) uint8 mouth patches of K (H, W, 3) uint8 photos that share one alignment."""
    tensor = torch.from_numpy(np.array(photos)).permute(0, 3, 1, 2).float() / 255
    patches = warp(tensor, patch_to_photo(crop_to_photo), PATCH_SIZE, mode="bilinear")
    return (patches.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


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
    """Mouth patches of the unedited photos by their dataset label, and of degraded copies of the smiling ones."""

    patches: dict[bool, list[np.ndarray]] = field(default_factory=lambda: {True: [], False: []})
    degraded: dict[str, list[np.ndarray]] = field(default_factory=lambda: {name: [] for name in DEGRADATIONS})

    def add(self, photo: np.ndarray, crop_to_photo: np.ndarray, smiling: bool) -> None:
        self.patches[smiling].append(mouth_patches(photo[None], crop_to_photo)[0])
        if smiling:
            image = Image.fromarray(photo)
            for name, degrade in DEGRADATIONS.items():
                self.degraded[name].append(mouth_patches(np.asarray(degrade(image))[None], crop_to_photo)[0])

    def baselines(self) -> dict:
        """The test's strength (nothing edited), its chance level (real vs real) and its scale (degraded copies)."""
        smiling, plain = (features_of(self.patches[k]) for k in (True, False))
        first, second = halves(np.arange(len(smiling)))
        return {
            "nothing_edited": two_sample_auc(smiling, plain),
            "real_vs_real": {
                "smiling": two_sample_auc(*(smiling[h] for h in (first, second))),
                "not_smiling": two_sample_auc(*(plain[h] for h in halves(np.arange(len(plain))))),
            },
            "real_smiling_vs_degraded": {
                name: two_sample_auc(smiling[first], features_of(patches)[second]) if patches else None
                for name, patches in self.degraded.items()
            },
            "n": {"smiling": len(smiling), "not_smiling": len(plain)},
        }

    def scores(self, made_more: list[np.ndarray], made_less: list[np.ndarray]) -> dict:
        """AUC of real smiling mouths vs made ones ("more"), and of real non-smiling ones vs made ones ("less");
        `by_features`: the same, and nothing edited, with one kind of feature at a time (what gives a made mouth away)."""
        parts = [parts_of(p) for p in (self.patches[True], self.patches[False], made_more, made_less)]
        smiling, plain, more, less = (np.concatenate(list(p.values()), 1) for p in parts)
        pairs = {"more": (0, 2), "less": (1, 3), "nothing_edited": (0, 1)}
        by_features = {
            kind: {k: two_sample_auc(parts[a][kind], parts[b][kind]) for k, (a, b) in pairs.items()} for kind in FEATURE_KINDS
        }
        return {
            "more": two_sample_auc(smiling, more),
            "less": two_sample_auc(plain, less),
            "by_features": by_features,
            "n": {"more": len(made_more), "less": len(made_less)},
        }
