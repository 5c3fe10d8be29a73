"""Shared fixtures: a small synthetic dataset in the official CelebA layout, written per test session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# gradio_client downloads every result under tempfile's folder (the files in gradio/, and an empty folder per
# file beside them, never removed): this session's own folder instead, gone at exit, so the suite leaves no litter.
# pytest's own tmp_path folders stay where they were, kept after a failure as pytest.ini says.
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
tempfile.tempdir = tempfile.mkdtemp(prefix="smile-tests-")
atexit.register(shutil.rmtree, tempfile.tempdir, ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]
# a smoke run of `python -m train`: small batches, few scored images, fixed numerics (no speed trial)
SMOKE_TRAIN = ["--batch-size", "8", "--eval-images", "8", "--precision", "fp32", "--channels-last", "on"]
SHARED_DATA = ROOT.parent / "shared" / "data"
ATTR_NAMES = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
]


def cartoon_face(smiling: bool, rng: np.random.Generator, size: tuple[int, int] = (178, 218)) -> Image.Image:
    """A drawn face in CelebA's framing whose mouth curves up when `smiling`."""
    w, h = size
    bg = tuple(int(v) for v in rng.integers(40, 200, 3))
    image = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(image)
    skin = tuple(int(v) for v in rng.integers(150, 240, 3))
    draw.ellipse([w * 0.2, h * 0.22, w * 0.8, h * 0.85], fill=skin)
    for ex in (0.4, 0.6):
        draw.ellipse([w * ex - 6, h * 0.5 - 4, w * ex + 6, h * 0.5 + 4], fill=(30, 30, 30))
    box = [w * 0.38, h * 0.62, w * 0.62, h * 0.76]
    if smiling:
        draw.chord(box, 0, 180, fill=(150, 20, 40))
    else:
        draw.line([box[0], h * 0.7, box[2], h * 0.7], fill=(120, 30, 40), width=4)
    return image


def write_celeba(root: Path, count: int, seed: int = 0, partition: bool = True) -> Path:
    """Write `count` cartoon faces with Smiling/Male labels in the official layout under `root`."""
    rng = np.random.default_rng(seed)
    (root / "img_align_celeba").mkdir(parents=True)
    rows, parts = [], []
    for i in range(count):
        name = f"{i + 1:06d}.jpg"
        smiling = bool(i % 2)
        cartoon_face(smiling, rng).save(root / "img_align_celeba" / name, quality=90)
        values = rng.choice([-1, 1], size=len(ATTR_NAMES))
        values[ATTR_NAMES.index("Smiling")] = 1 if smiling else -1
        rows.append(name + " " + " ".join(f"{v:2d}" for v in values))
        parts.append(f"{name} {0 if i < count * 0.8 else 2}")
    (root / "list_attr_celeba.txt").write_text(f"{count}\n" + " ".join(ATTR_NAMES) + "\n" + "\n".join(rows) + "\n")
    if partition:
        (root / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_celeba(tmp_path_factory) -> Path:
    return write_celeba(tmp_path_factory.mktemp("data") / "tiny", 48)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "celeba-subset" / "list_attr_celeba.txt").exists():
        pytest.skip(f"real CelebA data not found at {SHARED_DATA} (see README: Training on CelebA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def app_process(request):
    """The real app (`python app.py`) in a subprocess on a free port, offline, with its own upload folder."""
    from bench.appserver import AppServer

    with AppServer(log=ROOT / ".pytest_app.log") as server:
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():  # shown in the test output, not swallowed by capture
            print(f"\napp started offline and was ready in {server.start_s:.1f} s")
        yield server


@pytest.fixture(scope="session")
def app_server(app_process) -> str:
    """The real app's URL."""
    return app_process.url


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    """The public-domain astronaut photo (NASA; the copy scikit-image ships), shipped as the app's example."""
    return ROOT / "assets" / "examples" / "astronaut.jpg"
