"""A small CNN that judges Smiling, Male and Young, independent of the VAE.

Edit quality is measured by a classifier that is not the generator (Fader Networks, @smilevector):
it is trained on the *train part of the model's split.json* and then scores decoded edits of
validation and test faces; its report records a digest of the train keys, which evaluation checks.
VAE outputs are blurrier than photos, so half the training batches are blurred (down- and up-sampled)
to keep the judge from reading "blurry" as "not smiling".
`python -m evaluation.judge --model RUN_OR_DIR --data ... --out runs/judge`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from celeba.cache import add_data_args
from celeba.model_folder import open_model_split, resolve_model_dir
from celeba.reader import run_command
from vae.files import atomic_files, atomic_write_text
from vae.preprocess import to_tensor

JUDGED = ["Smiling", "Male", "Young"]
JUDGE_SIZE = 64


class AttributeJudge(nn.Module, PyTorchModelHubMixin, library_name="smile", tags=["classifier", "celeba"]):
    """Four stride-2 conv blocks, global average pooling, one logit per attribute; 64x64 input."""

    def __init__(self, attributes: list[str] = JUDGED) -> None:
        super().__init__()
        self.attributes = list(attributes)
        blocks, channels = [], 3
        for width in (32, 64, 128, 256):
            blocks += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, len(self.attributes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images in [0, 1] of any size (resized to 64x64)."""
        if x.shape[-1] != JUDGE_SIZE:
            x = F.interpolate(x, size=(JUDGE_SIZE, JUDGE_SIZE), mode="area")
        return self.head(self.features(x))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> AttributeJudge:
        """`from_pretrained`, strict (a judge missing weights would grade with random ones), in eval mode."""
        return cls.from_pretrained(str(folder), strict=True).eval()

    @torch.inference_mode()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x))


def batch_from(images: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    return F.interpolate(to_tensor(images[rows]), size=(JUDGE_SIZE, JUDGE_SIZE), mode="area")


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    blur = torch.rand(len(x), generator=generator) < 0.5
    blurred = F.interpolate(
        F.interpolate(x, scale_factor=0.5, mode="area"), size=x.shape[-2:], mode="bilinear", align_corners=False
    )
    return torch.where(blur[:, None, None, None], blurred, x)


def evaluate_judge(judge: AttributeJudge, images: np.ndarray, rows: np.ndarray, labels: np.ndarray) -> dict:
    judge.eval()
    probs = np.concatenate([judge.probabilities(batch_from(images, rows[s : s + 256])).numpy() for s in range(0, len(rows), 256)])
    labels = labels > 0
    return {
        name: {
            "accuracy": float(((probs[:, i] > 0.5) == labels[:, i]).mean()),
            "auc": float(roc_auc_score(labels[:, i], probs[:, i])),
        }
        for i, name in enumerate(judge.attributes)
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.judge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="model or run folder: the judge trains on its split.json's train part")
    add_data_args(p)
    p.add_argument("--out", default="runs/judge")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="seeds the initialisation, batch order and augmentation")
    args = p.parse_args(argv)
    model_dir = resolve_model_dir(args.model)
    cache, split, rows = open_model_split(args, model_dir)
    train_rows, test_rows = rows.train, rows.test
    columns = [cache.attr_names.index(a) for a in JUDGED]
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    judge = AttributeJudge()
    optimizer = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = args.epochs * (len(train_rows) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    for epoch in range(args.epochs):
        judge.train()
        order = np.random.default_rng((args.seed, epoch)).permutation(train_rows)
        bar = tqdm(range(len(order) // args.batch_size), desc=f"judge epoch {epoch + 1}/{args.epochs}", unit="batch")
        for b in bar:
            batch = np.sort(order[b * args.batch_size : (b + 1) * args.batch_size])
            x = augment(batch_from(cache.images, batch), generator)
            y = torch.from_numpy((cache.attrs[batch][:, columns] > 0).astype(np.float32))
            loss = F.binary_cross_entropy_with_logits(judge(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if b % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    report = evaluate_judge(judge, cache.images, test_rows, cache.attrs[test_rows][:, columns])
    out = Path(args.out)
    with atomic_files(out) as tmp:
        judge.save_pretrained(tmp)
    trained_on = {
        "part": "train",
        "images": len(train_rows),
        "digest": split.digest("train"),
        "data_fingerprint": split.fingerprint,
    }
    atomic_write_text(
        out / "judge_report.json",
        json.dumps({"test": report, "train_images": len(train_rows), "trained_on": trained_on, "epochs": args.epochs}, indent=2),
    )
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    run_command(main)
