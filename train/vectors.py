"""Vectors step: `python -m train.vectors --model RUN_OR_DIR --data DIR [--data DIR ...]`.

Reads the split the model was trained with from its `split.json` (never re-derived from flags),
encodes it (posterior means, never samples), forms the recipe's mean-difference vector for every
attribute from the *train* rows (capped at --cap per side), with its slider unit (the std of z . v_hat
over the train rows), and scores it on the *test* rows: ROC-AUC of the projection z . v, a first check
that the direction carries the attribute. Writes `attribute_vectors.npz`, `smile_vector.npy` and
`vectors_report.json` next to the model. The file then holds the recipe vectors only: if `editor.json`
names a variant that `evaluation.faces --update-model` had added, its default is reset to `Smiling`
(with a note), so the folder stays loadable.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from celeba.cache import add_data_args
from celeba.model_folder import encode_rows, open_model_split, resolve_model_dir
from celeba.reader import run_command
from vae.files import atomic_write_text
from vae.model import SmileVAE
from vae.settings import SETTINGS_FILE, EditorSettings
from vae.vectors import compute_vectors, projection_auc


def keep_default_loadable(model_dir: Path, names: list[str]) -> None:
    """The vectors file now holds the recipe vectors only; an editor.json naming a vector that is gone (a variant
    added by `evaluation.faces --update-model`) is reset to the recipe's Smiling, so the folder stays loadable."""
    path = model_dir / SETTINGS_FILE
    chosen = EditorSettings.load(model_dir).default_attribute if path.exists() else None
    if chosen is not None and chosen not in names:
        EditorSettings.load(model_dir).replace(default_attribute="Smiling").save(model_dir)
        print(
            f"Note: {path} named {chosen!r}, which only evaluation.faces --update-model adds; reset to 'Smiling'. "
            "Run evaluation.faces --update-model (and evaluation.photos) again to choose the default."
        )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m train.vectors", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="model folder or run folder")
    add_data_args(p)
    p.add_argument("--cap", type=int, default=10_000, help="samples per side (recipe: 10,000)")
    p.add_argument("--seed", type=int, default=0, help="seeds the --cap sampling")
    args = p.parse_args(argv)
    model_dir = resolve_model_dir(args.model)
    model = SmileVAE.load(model_dir)
    cache, _, rows = open_model_split(args, model_dir)
    train_z = encode_rows(model, cache.images, rows.train, desc="Encoding train split")
    test_z = encode_rows(model, cache.images, rows.test, desc="Encoding test split")
    vectors = compute_vectors(train_z, cache.attrs[rows.train], cache.attr_names, args.cap, args.seed)
    auc = {name: projection_auc(test_z, cache.attrs[rows.test, i], vectors.vectors[i]) for i, name in enumerate(vectors.names)}
    vectors.save(model_dir)
    keep_default_loadable(model_dir, vectors.names)
    report = {
        "train_images": len(rows.train),
        "test_images": len(rows.test),
        "cap": args.cap,
        "slider_unit": "std of z . v_hat over train",
        "projection_auc": auc,
    }
    atomic_write_text(model_dir / "vectors_report.json", json.dumps(report, indent=2))
    for name, value in sorted(auc.items(), key=lambda kv: -np.nan_to_num(kv[1])):
        print(f"{name:22s} AUC {value:.3f}")
    print(f"Wrote {model_dir / 'attribute_vectors.npz'} and smile_vector.npy; Smiling AUC {auc.get('Smiling', float('nan')):.3f}")
    return report


if __name__ == "__main__":
    run_command(main)
