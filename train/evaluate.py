"""Evaluate a trained model: `python -m train.evaluate --model DIR --judge runs/judge --data ... --out runs/eval`.

1. Reconstruction of the whole test split (posterior mean): MSE, PSNR, SSIM.
2. Linear separability: ROC-AUC of z . v on the test split for every attribute.
3. Edits judged by an independent CNN (train.judge): mean P(smile) for alpha = -3..3 (slider units) on a
   seeded sample of test faces; flip rates against the alpha = 0 reconstruction; per Male/Female x
   Young/Old group.
4. Side effects: change of the judged Male and Young probabilities under the +alpha edit.
5. Vector variants: the recipe's mean difference, a Male x Young balanced one, one with the Male and
   Mouth_Slightly_Open directions projected out, and a logistic-regression direction.
Writes `evaluation.json` and PNG plots to --out; `--update-model` adds the variants to the model's
attribute_vectors.npz and makes the best one (and its strength) the app's default in editor.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from train.judge import AttributeJudge
from train.vectors import add_split_args, compute_vectors, encode_rows, load_split, projection_auc, resolve_model_dir
from vae.editor import DEFAULT_SETTINGS, SETTINGS_FILE
from vae.model import SmileVAE
from vae.vectors import AttributeVectors, balanced_weights, mean_difference, project_out, projection_std

ALPHAS = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
GROUPS = {"all": lambda m, y: np.ones_like(m), "male_young": lambda m, y: m & y, "male_old": lambda m, y: m & ~y,
          "female_young": lambda m, y: ~m & y, "female_old": lambda m, y: ~m & ~y}


@torch.inference_mode()
def reconstruction_metrics(model: SmileVAE, images: np.ndarray, rows: np.ndarray, z: np.ndarray, batch: int = 64) -> dict:
    mse, ssim = [], []
    for s in tqdm(range(0, len(rows), batch), desc="Reconstructing test split", unit="batch"):
        recon = model.decode(torch.from_numpy(z[s:s + batch])).permute(0, 2, 3, 1).numpy()
        target = images[rows[s:s + batch]].astype(np.float32) / 255.0
        mse.extend(((recon - target) ** 2).mean(axis=(1, 2, 3)))
        ssim.extend(structural_similarity(r, t, channel_axis=2, data_range=1.0) for r, t in zip(recon, target))
    mse = np.array(mse)
    psnr = 10 * np.log10(1.0 / np.maximum(mse, 1e-10))
    return {"test_mse": float(mse.mean()), "test_psnr": float(psnr.mean()), "test_ssim": float(np.mean(ssim)),
            "psnr_per_image": psnr}


@torch.inference_mode()
def judge_decoded(model: SmileVAE, judge: AttributeJudge, z: np.ndarray, batch: int = 64) -> np.ndarray:
    """Judge probabilities (N, len(JUDGED)) of the faces decoded from latents z."""
    return np.concatenate([judge.probabilities(model.decode(torch.from_numpy(z[s:s + batch]))).numpy()
                           for s in range(0, len(z), batch)])


def judged_curve(model: SmileVAE, judge: AttributeJudge, z: np.ndarray, step: np.ndarray, at_zero: np.ndarray) -> np.ndarray:
    """Judge probabilities (len(ALPHAS), N, len(JUDGED)) of decode(z + alpha * step); alpha = 0 is shared by all vectors."""
    return np.stack([at_zero if alpha == 0 else judge_decoded(model, judge, (z + alpha * step).astype(np.float32))
                     for alpha in ALPHAS])


def edit_report(probs: np.ndarray, smiling: np.ndarray, male: np.ndarray, young: np.ndarray, alpha: float) -> dict:
    """Flip rates and side effects at +-alpha (which must be in ALPHAS), per group, vs alpha = 0."""
    plus, minus, zero = ALPHAS.index(alpha), ALPHAS.index(-alpha), ALPHAS.index(0.0)
    judged_smile = probs[..., 0] > 0.5
    report = {"flip_rate_by_group": {}, "baseline_by_group": {}, "p_smile_by_group": {}}
    for name, select in GROUPS.items():
        rows = select(male, young).astype(bool)
        neg, pos = rows & ~smiling, rows & smiling
        report["flip_rate_by_group"][name] = {"plus": float(judged_smile[plus, neg].mean()),
                                              "minus": float((~judged_smile[minus, pos]).mean()), "n": int(rows.sum())}
        report["baseline_by_group"][name] = {"plus": float(judged_smile[zero, neg].mean()),
                                             "minus": float((~judged_smile[zero, pos]).mean())}
        report["p_smile_by_group"][name] = [float(probs[a, rows, 0].mean()) for a in range(len(ALPHAS))]
    report["male_drift"] = float((probs[plus, :, 1] - probs[zero, :, 1]).mean())
    report["young_drift"] = float((probs[plus, :, 2] - probs[zero, :, 2]).mean())
    report["male_drift_minus"] = float((probs[minus, :, 1] - probs[zero, :, 1]).mean())
    report["min_flip_rate"] = min(min(v["plus"], v["minus"]) for v in report["flip_rate_by_group"].values())
    return report


def smile_variants(train_z: np.ndarray, labels: np.ndarray, names: list[str], recipe: AttributeVectors, seed: int) -> dict[str, np.ndarray]:
    col = {n: i for i, n in enumerate(names)}
    smiling, male, young = (labels[:, col[n]] > 0 for n in ("Smiling", "Male", "Young"))
    cells = smiling * 4 + male * 2 + young
    logistic = LogisticRegression(C=1.0, max_iter=2000).fit(train_z, smiling)
    return {
        "Smiling": recipe.vector("Smiling"),
        "Smiling (balanced)": mean_difference(train_z, smiling, seed=seed, weights=balanced_weights(cells)),
        "Smiling (no Male, Mouth_Slightly_Open)": project_out(recipe.vector("Smiling"),
                                                              [recipe.vector("Male"), recipe.vector("Mouth_Slightly_Open")]),
        "Smiling (logistic)": logistic.coef_[0].astype(np.float32),
    }


def choose_default(variants: dict) -> tuple[str, float]:
    """Best variant: side effects under 0.1 first, then the highest worst-group flip rate at its smallest good alpha."""
    def score(item):
        name, per_alpha = item
        alpha = next((a for a in (1.0, 2.0, 3.0) if per_alpha[a]["min_flip_rate"] >= 0.8), 3.0)
        r = per_alpha[alpha]
        return (abs(r["male_drift"]) < 0.1, r["min_flip_rate"] >= 0.8, -alpha if r["min_flip_rate"] >= 0.8 else 0,
                r["min_flip_rate"] - abs(r["male_drift"])), alpha
    best = max(variants.items(), key=lambda item: score(item)[0])
    return best[0], score(best)[1]


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
        fig.savefig(out / f"p_smile_{name.split(' ')[-1].strip('()').lower() if '(' in name else 'recipe'}.png", dpi=100)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(psnr, bins=40)
    ax.set(xlabel="test reconstruction PSNR (dB)", ylabel="images", title=f"mean {psnr.mean():.2f} dB")
    fig.tight_layout()
    fig.savefig(out / "psnr_histogram.png", dpi=100)
    plt.close(fig)


def astronaut_strip(model_dir: Path, out: Path, attribute: str, strength: float) -> None:
    from skimage.data import astronaut

    from vae.editor import SmileEditor
    from vae.export import atomic_save, strip_image

    editor = SmileEditor.from_pretrained(model_dir)
    result = editor.render(editor.prepare(astronaut()), strength, attribute)
    atomic_save(strip_image(result.strip), out / "astronaut_strip.png")
    if result.in_photo is not None:
        atomic_save(result.in_photo.resize((256, 256)), out / "astronaut_more_in_photo.png")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder or run folder (with attribute vectors)")
    add_split_args(p)
    p.add_argument("--judge", required=True, help="folder written by python -m train.judge")
    p.add_argument("--out", default="runs/eval")
    p.add_argument("--faces", type=int, default=800, help="test faces edited and judged (seeded sample)")
    p.add_argument("--update-model", action="store_true", help="add the variants and the chosen default to the model folder")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model_dir(args.model)
    model = SmileVAE.load(model_dir).to(memory_format=torch.channels_last)
    judge = AttributeJudge.from_pretrained(args.judge).eval()
    cache, train_rows, test_rows = load_split(args)
    names = cache.attr_names
    train_z = encode_rows(model, cache.images, train_rows, desc="Encoding train split")
    test_z = encode_rows(model, cache.images, test_rows, desc="Encoding test split")
    recon = reconstruction_metrics(model, cache.images, test_rows, test_z)
    recipe = compute_vectors(train_z, cache.attrs[train_rows], test_z, names, seed=args.seed)
    auc = {n: projection_auc(test_z, cache.attrs[test_rows, i], recipe.vectors[i]) for i, n in enumerate(names)}

    sample = np.sort(np.random.default_rng(args.seed).choice(len(test_rows), min(args.faces, len(test_rows)), replace=False))
    z, labels = test_z[sample], cache.attrs[test_rows[sample]]
    smiling, male, young = (labels[:, names.index(n)] > 0 for n in ("Smiling", "Male", "Young"))
    variants = smile_variants(train_z, cache.attrs[train_rows], names, recipe, args.seed)
    per_variant, curves = {}, {}
    at_zero = judge_decoded(model, judge, z)
    for name, vector in variants.items():
        step = vector / np.linalg.norm(vector) * projection_std(test_z, vector)
        probs = judged_curve(model, judge, z, step, at_zero)
        per_variant[name] = {a: edit_report(probs, smiling, male, young, a) for a in (1.0, 2.0, 3.0)}
        curves[name] = per_variant[name][2.0]
        print(f"{name}: min flip rate at alpha 1/2/3 = "
              + ", ".join(f"{per_variant[name][a]['min_flip_rate']:.2f}" for a in (1.0, 2.0, 3.0))
              + f"; male drift at 2 = {per_variant[name][2.0]['male_drift']:+.3f}")
    best, best_alpha = choose_default(per_variant)
    shipped = per_variant["Smiling"][best_alpha]
    report = {
        "test_images": len(test_rows), "train_images": len(train_rows), "edited_faces": len(sample),
        "test_mse": recon["test_mse"], "test_psnr": recon["test_psnr"], "test_ssim": recon["test_ssim"],
        "smile_auc": auc["Smiling"], "projection_auc": auc,
        "default_attribute": best, "default_strength": best_alpha, "alphas": ALPHAS,
        "flip_rate_by_group": per_variant[best][best_alpha]["flip_rate_by_group"],
        "male_drift": per_variant[best][best_alpha]["male_drift"], "young_drift": per_variant[best][best_alpha]["young_drift"],
        "recipe_vector_at_default": {k: shipped[k] for k in ("flip_rate_by_group", "male_drift", "young_drift", "min_flip_rate")},
        "variants": {name: {str(a): r for a, r in reps.items()} for name, reps in per_variant.items()},
        "judge": json.loads((Path(args.judge) / "judge_report.json").read_text()),
    }
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    plots(out, curves, recon["psnr_per_image"])
    if args.update_model:
        extra = [n for n in variants if n != "Smiling"]
        vectors = AttributeVectors(recipe.names + extra, np.concatenate([recipe.vectors, np.stack([variants[n] for n in extra])]),
                                   np.concatenate([recipe.stds, [projection_std(test_z, variants[n]) for n in extra]]))
        vectors.save(model_dir)
        settings = {**DEFAULT_SETTINGS, "default_attribute": best, "default_strength": best_alpha}
        (model_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        astronaut_strip(model_dir, out, best, best_alpha)
    print(f"PSNR {recon['test_psnr']:.2f} dB, SSIM {recon['test_ssim']:.3f}, smile AUC {auc['Smiling']:.3f}; "
          f"default {best!r} at alpha {best_alpha}; wrote {out / 'evaluation.json'}")
    return report


if __name__ == "__main__":
    main()
