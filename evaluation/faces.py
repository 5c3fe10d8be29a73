"""Evaluate a trained model: `python -m evaluation.faces --model DIR --judge runs/judge --data ... --out runs/eval`.

The split comes from the model's split.json. Choices are made on validation faces; the numbers are
then reported on test faces, once (definitions: evaluation/metrics.py).
1. Reconstruction of the whole test part (posterior mean): MSE, PSNR (per image), SSIM (Gaussian window).
2. Linear separability: ROC-AUC of z . v on the test part for every attribute (vectors fitted on train).
3. Smile vector variants: the recipe's mean difference, a Male x Young balanced one, one with the Male
   and Mouth_Slightly_Open directions projected out, and a logistic-regression direction.
4. Selection, on --faces seeded validation faces: the default variant and strength alpha. If no variant
   flips every group's faces at any strength (an untrained model), nothing is chosen: the previous default
   (editor.json's, else Smiling) stays, and a WARNING is printed and stored as selection.warning.
5. Report, on --faces seeded test faces, judged by an independent CNN (evaluation.judge) at alpha = -3..3:
   flips conditioned on the alpha = 0 verdict, with Wilson intervals, per Male/Female x Young/Old cell
   and per luminance tercile; the change of judged P(male) and P(young) at +alpha and -alpha.
Merges its keys into `evaluation.json` in --out (and, with --update-model, in the model folder, keeping
keys that other steps wrote); writes PNG plots to --out. `--update-model` also adds the variants to the
model's attribute_vectors.npz and makes the chosen one (and its strength) the app's default in editor.json
(its other settings stay).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from celeba.cache import FaceCache, add_data_args
from celeba.model_folder import encode_rows, open_model_split, resolve_model_dir
from celeba.reader import run_command
from celeba.split import SplitRows, sample_rows, split_units
from evaluation.judge import AttributeJudge
from evaluation.metrics import FLIP_DEFINITION, drift, flips, luminance, ssim, terciles
from evaluation.report import EVALUATION_FILE, merge_json
from vae.files import atomic_path
from vae.model import SmileVAE
from vae.preprocess import to_tensor
from vae.reconstruction import psnr, reconstruct
from vae.settings import SETTINGS_FILE, EditorSettings
from vae.vectors import (
    AttributeVectors,
    balanced_weights,
    compute_vectors,
    mean_difference,
    project_out,
    projection_auc,
    projection_std,
)

ALPHAS = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
STRENGTHS = (1.0, 2.0, 3.0)
GROUPS = {
    "all": lambda m, y: np.ones_like(m),
    "male_young": lambda m, y: m & y,
    "male_old": lambda m, y: m & ~y,
    "female_young": lambda m, y: ~m & y,
    "female_old": lambda m, y: ~m & ~y,
}
SELECTION_RULE = (
    "On validation faces: variants whose judged Male change is under 0.1 at both +alpha and -alpha first, then "
    "those whose worst gender x age flip rate (both sides) reaches 0.8, at the smallest such alpha in 1, 2, 3; "
    "ties by the worst flip rate minus the Male change."
)
RETIRED_KEYS = (
    "flip_rate_by_group",
    "male_drift",
    "young_drift",
    "train_images",
    "alphas",  # the old protocol's unconditioned rates
    "default_strength",
)  # the face-level strength is now face_strength; the app's is editor.json's (photo_eval)


@torch.inference_mode()
def reconstruction_metrics(model: SmileVAE, images: np.ndarray, rows: np.ndarray, batch: int = 64) -> dict:
    """Posterior-mean reconstruction of `rows`: mean MSE, PSNR and SSIM, plus the per-image PSNRs (for the plot)."""
    mse, similarity = [], []
    for s in tqdm(range(0, len(rows), batch), desc="Reconstructing test part", unit="batch"):
        x = to_tensor(images[rows[s : s + batch]])
        recon, error, _ = reconstruct(model, x)
        mse.append(error.numpy())
        similarity.append(ssim(recon.permute(0, 2, 3, 1).numpy(), x.permute(0, 2, 3, 1).numpy()))
    mse, similarity = np.concatenate(mse), np.concatenate(similarity)
    return {
        "test_mse": float(mse.mean()),
        "test_psnr": float(psnr(mse).mean()),
        "test_ssim": float(similarity.mean()),
        "psnr_per_image": psnr(mse),
        "ssim_per_image": similarity,
    }


def person_in_train(cache: FaceCache, rows: SplitRows) -> np.ndarray:
    """Per test row: whether the same person (identity_CelebA.txt, or a CelebA twin's) has an image in train."""
    units = split_units(cache.groups, cache.identities, "person")
    train_units = {units[r] for r in rows.train}
    return np.array([units[r] in train_units for r in rows.test], dtype=bool)  # photo groups never cross parts


def by_identity_overlap(recon: dict, seen: np.ndarray) -> dict:
    """Reconstruction of test faces whose person the model saw in training vs. faces of people it never saw."""
    return {
        name: {
            "n": int(mask.sum()),
            "psnr": float(recon["psnr_per_image"][mask].mean()) if mask.any() else None,
            "ssim": float(recon["ssim_per_image"][mask].mean()) if mask.any() else None,
        }
        for name, mask in (("person_in_train", seen), ("person_not_in_train_or_unknown", ~seen))
    }


@torch.inference_mode()
def judge_decoded(model: SmileVAE, judge: AttributeJudge, z: np.ndarray, batch: int = 64) -> np.ndarray:
    """Judge probabilities (N, len(JUDGED)) of the faces decoded from latents z."""
    return np.concatenate(
        [judge.probabilities(model.decode(torch.from_numpy(z[s : s + batch]))).numpy() for s in range(0, len(z), batch)]
    )


@dataclass
class Faces:
    """A seeded sample of one part's faces: latents, the labels that define the cells, and lighting terciles."""

    z: np.ndarray
    male: np.ndarray
    young: np.ndarray
    lighting: dict[str, np.ndarray]
    lighting_cuts: list[float]

    @classmethod
    def sample(cls, cache: FaceCache, rows: np.ndarray, z: np.ndarray, count: int, seed: int) -> Faces:
        pick = sample_rows(np.arange(len(rows)), count, seed)
        labels = cache.attrs[rows[pick]]
        male, young = (labels[:, cache.attr_names.index(n)] > 0 for n in ("Male", "Young"))
        lighting, cuts = terciles(luminance(cache.images[rows[pick]]))
        return cls(z[pick], male, young, lighting, cuts)

    def __len__(self) -> int:
        return len(self.z)

    def cells(self) -> dict[str, np.ndarray]:
        return {name: select(self.male, self.young).astype(bool) for name, select in GROUPS.items()}


def judged_curve(model: SmileVAE, judge: AttributeJudge, faces: Faces, step: np.ndarray, at_zero: np.ndarray) -> np.ndarray:
    """Judge probabilities (len(ALPHAS), N, len(JUDGED)) of decode(z + alpha * step); alpha = 0 is shared by all vectors."""
    return np.stack(
        [at_zero if alpha == 0 else judge_decoded(model, judge, (faces.z + alpha * step).astype(np.float32)) for alpha in ALPHAS]
    )


def edit_report(probs: np.ndarray, faces: Faces, alpha: float) -> dict:
    """Flips (conditioned on the alpha = 0 verdict) per cell and lighting tercile, and side effects, at +-alpha."""
    plus, minus, zero = ALPHAS.index(alpha), ALPHAS.index(-alpha), ALPHAS.index(0.0)
    smiling = probs[..., 0] > 0.5
    by_group = {name: flips(smiling[zero], smiling[plus], smiling[minus], mask) for name, mask in faces.cells().items()}
    rates = [
        side["rate"] for name, cell in by_group.items() if name != "all" for side in cell.values() if side["rate"] is not None
    ]
    return {
        "flip_by_group": by_group,
        "flip_by_lighting": {
            name: flips(smiling[zero], smiling[plus], smiling[minus], mask) for name, mask in faces.lighting.items()
        },
        "drift": {
            name: drift(probs[zero, :, i], probs[plus, :, i], probs[minus, :, i]) for i, name in ((1, "male"), (2, "young"))
        },
        "worst_flip": min(rates),
        "p_smile_by_group": {name: probs[:, mask, 0].mean(axis=1).tolist() for name, mask in faces.cells().items() if mask.any()},
    }


def male_change(report: dict) -> float:
    """The larger of the mean judged Male changes at +alpha and -alpha."""
    return max(abs(report["drift"]["male"]["plus"]), abs(report["drift"]["male"]["minus"]))


def choose_default(variants: dict[str, dict[float, dict]]) -> tuple[str, float]:
    """The default (variant, alpha) by SELECTION_RULE; call it with validation reports only."""

    def score(item):
        name, per_alpha = item
        alpha = next((a for a in STRENGTHS if per_alpha[a]["worst_flip"] >= 0.8), STRENGTHS[-1])
        r = per_alpha[alpha]
        good = r["worst_flip"] >= 0.8
        return (male_change(r) < 0.1, good, -alpha if good else 0, r["worst_flip"] - male_change(r)), alpha

    best = max(variants.items(), key=lambda item: score(item)[0])
    return best[0], score(best)[1]


def settle_default(variants: dict[str, dict[float, dict]], previous: str | None) -> tuple[str, float, str | None]:
    """choose_default and a warning, if any. When no variant flips the faces of every group at any strength (an
    untrained or barely trained model) there is nothing to choose between: the previous default (editor.json's)
    stays if it is one of the variants, else the recipe's Smiling, at the largest strength."""
    best, alpha = choose_default(variants)
    top = max(r["worst_flip"] for per_alpha in variants.values() for r in per_alpha.values())
    if top >= 0.8:
        return best, alpha, None
    if top > 0:
        return (
            best,
            alpha,
            f"no variant reaches a worst flip of 0.8 at any strength (the best: {top:.2f}); the default is the best of them",
        )
    kept = previous if previous in variants else "Smiling"
    return (
        kept,
        STRENGTHS[-1],
        (
            f"no variant flips the faces of every group at any strength (every worst flip is 0): "
            f"nothing was chosen, the default stays {kept!r}. Train longer, then evaluate again."
        ),
    )


def smile_variants(
    train_z: np.ndarray, labels: np.ndarray, names: list[str], recipe: AttributeVectors, seed: int
) -> dict[str, np.ndarray]:
    col = {n: i for i, n in enumerate(names)}
    smiling, male, young = (labels[:, col[n]] > 0 for n in ("Smiling", "Male", "Young"))
    cells = smiling * 4 + male * 2 + young
    logistic = LogisticRegression(C=1.0, max_iter=2000).fit(train_z, smiling)
    return {
        "Smiling": recipe.vector("Smiling"),
        "Smiling (balanced)": mean_difference(train_z, smiling, seed=seed, weights=balanced_weights(cells)),
        "Smiling (no Male, Mouth_Slightly_Open)": project_out(
            recipe.vector("Smiling"), [recipe.vector("Male"), recipe.vector("Mouth_Slightly_Open")]
        ),
        "Smiling (logistic)": logistic.coef_[0].astype(np.float32),
    }


@torch.inference_mode()
def edit_reports(
    model: SmileVAE, judge: AttributeJudge, faces: Faces, variants: dict[str, np.ndarray], train_z: np.ndarray, desc: str
) -> dict[str, dict[float, dict]]:
    """For every variant and strength: edit_report of the faces moved alpha slider units (std over train) along it."""
    at_zero = judge_decoded(model, judge, faces.z)
    reports = {}
    for name, vector in tqdm(variants.items(), desc=desc, unit="vector"):
        step = vector / np.linalg.norm(vector) * projection_std(train_z, vector)
        probs = judged_curve(model, judge, faces, step, at_zero)
        reports[name] = {a: edit_report(probs, faces, a) for a in STRENGTHS}
    return reports


def summary(report: dict) -> dict:
    """The selection figures of one (variant, alpha) report."""
    return {"worst_flip": report["worst_flip"], "male_change": male_change(report)}


def check_judge(judge_dir: Path, split_digest: str) -> dict:
    """The judge's report, after checking it was trained on this model's train part (and nothing else)."""
    report = json.loads((judge_dir / "judge_report.json").read_text())
    trained_on = report.get("trained_on", {}).get("digest")
    if trained_on != split_digest:
        raise SystemExit(
            f"The judge in {judge_dir} was not trained on this model's train part (its digest {trained_on}, "
            f"the split's {split_digest}): train one with `python -m evaluation.judge --model ...`."
        )
    return report


def plots(out: Path, curves: dict, psnr: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, report in curves.items():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for group, values in report["p_smile_by_group"].items():
            ax.plot(ALPHAS, values, marker="o", label=group, linewidth=2.5 if group == "all" else 1.2)
        ax.set(xlabel="strength alpha (std of z . v_hat)", ylabel="mean judged P(smile)", title=name, ylim=(0, 1))
        ax.axhline(0.5, color="grey", linewidth=0.5)
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(out / f"p_smile_{name.split(' ')[-1].strip('()').lower() if '(' in name else 'recipe'}.png") as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(psnr, bins=40)
    ax.set(xlabel="test reconstruction PSNR (dB)", ylabel="images", title=f"mean {psnr.mean():.2f} dB")
    fig.tight_layout()
    with atomic_path(out / "psnr_histogram.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.faces", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="model folder or run folder (with split.json)")
    add_data_args(p)
    p.add_argument("--judge", required=True, help="folder written by python -m evaluation.judge")
    p.add_argument("--out", default="runs/eval")
    p.add_argument(
        "--faces", type=int, default=800, help="validation faces for the choice and test faces for the report (seeded)"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the face samples and the vector fits")
    p.add_argument("--update-model", action="store_true", help="add the variants and the chosen default to the model folder")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model_dir(args.model)
    model = SmileVAE.load(model_dir).to(memory_format=torch.channels_last)
    cache, split, rows = open_model_split(args, model_dir)
    judge_report = check_judge(Path(args.judge), split.digest("train"))
    judge = AttributeJudge.load(args.judge)
    names = cache.attr_names
    train_z, validation_z, test_z = (
        encode_rows(model, cache.images, r, desc=f"Encoding {part} part")
        for part, r in zip(("train", "validation", "test"), rows)
    )
    recon = reconstruction_metrics(model, cache.images, rows.test)
    recipe = compute_vectors(train_z, cache.attrs[rows.train], names, seed=args.seed)
    auc = {n: projection_auc(test_z, cache.attrs[rows.test, i], recipe.vectors[i]) for i, n in enumerate(names)}
    variants = smile_variants(train_z, cache.attrs[rows.train], names, recipe, args.seed)

    chosen_on = Faces.sample(cache, rows.validation, validation_z, args.faces, args.seed)
    selection = edit_reports(model, judge, chosen_on, variants, train_z, "Validation edits")
    previous = EditorSettings.load(model_dir).default_attribute if (model_dir / SETTINGS_FILE).exists() else None
    best, alpha, warning = settle_default(selection, previous)
    reported_on = Faces.sample(cache, rows.test, test_z, args.faces, args.seed)
    reports = edit_reports(model, judge, reported_on, variants, train_z, "Test edits")
    for name, per_alpha in reports.items():
        print(
            f"{name}: worst flip at alpha 1/2/3 (test) = "
            + ", ".join(f"{per_alpha[a]['worst_flip']:.2f}" for a in STRENGTHS)
            + f"; Male change at 2 = {male_change(per_alpha[2.0]):.3f}"
        )
    headline = {k: v for k, v in reports[best][alpha].items() if k != "p_smile_by_group"}
    report = {
        "split": {**split.counts(), "unit": split.unit, "data_fingerprint": split.fingerprint, "file": "split.json"},
        "selection": {
            "subset": "validation",
            "n": len(chosen_on),
            "rule": SELECTION_RULE,
            "default_attribute": best,
            "face_strength": alpha,
            "warning": warning,
            "variants": {n: {str(a): summary(r) for a, r in per.items()} for n, per in selection.items()},
        },
        "default_attribute": best,
        "face_strength": alpha,
        "test_images": len(rows.test),
        "test_mse": recon["test_mse"],
        "test_psnr": recon["test_psnr"],
        "test_ssim": recon["test_ssim"],
        "test_by_identity_overlap": by_identity_overlap(recon, person_in_train(cache, rows)),
        "reconstruction_definition": "posterior mean mu, eval mode; PSNR per image then averaged; SSIM per image with a "
        "Gaussian window (sigma 1.5), then averaged",
        "smile_auc": auc["Smiling"],
        "projection_auc": auc,
        "edited_faces": {"subset": "test", "n": len(reported_on), "alphas": ALPHAS},
        "flip_definition": FLIP_DEFINITION,
        "lighting_definition": "terciles of the edited test faces' mean Rec. 601 luma of the 128x128 input crop "
        f"(cut points {reported_on.lighting_cuts[0]:.3f} and {reported_on.lighting_cuts[1]:.3f})",
        **headline,
        "recipe_vector_at_default": {k: v for k, v in reports["Smiling"][alpha].items() if k != "p_smile_by_group"},
        "variants": {name: {str(a): r for a, r in per.items()} for name, per in reports.items()},
        "judge": judge_report,
    }
    merge_json(out / EVALUATION_FILE, report, RETIRED_KEYS)
    plots(out, {name: per[alpha] for name, per in reports.items()}, recon["psnr_per_image"])
    if args.update_model:
        extra = [n for n in variants if n != "Smiling"]
        vectors = AttributeVectors(
            recipe.names + extra,
            np.concatenate([recipe.vectors, np.stack([variants[n] for n in extra])]),
            np.concatenate([recipe.stds, [projection_std(train_z, variants[n]) for n in extra]]),
        )
        vectors.save(model_dir)
        # the app's strength applies to whole photos: evaluation.photos chooses it (editor.json's default_strength)
        EditorSettings.load(model_dir).replace(default_attribute=best).save(model_dir)
        merge_json(model_dir / EVALUATION_FILE, report, RETIRED_KEYS)
    print(
        f"PSNR {recon['test_psnr']:.2f} dB, SSIM {recon['test_ssim']:.3f}, smile AUC {auc['Smiling']:.3f}; default {best!r} "
        f"at alpha {alpha} (chosen on {len(chosen_on)} validation faces); wrote {out / EVALUATION_FILE}"
    )
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    return report


if __name__ == "__main__":
    run_command(main)
