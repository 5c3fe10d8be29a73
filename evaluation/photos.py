"""Whole-photo evaluation: what a person gets back, measured on held-out photos at their own resolution.

`python -m evaluation.photos --model assets --judge assets/judge --data DIR ... --part validation --select`
`python -m evaluation.photos --model assets --judge assets/judge --data DIR ... --part test --update-model`

Photos of the model's split, from every data folder its split.json names, go through the app's own
pipeline: MTCNN alignment, encoding, and the transfer of `vae.transfer`. A folder is left out
(and said so) when `--skip-folder NAME` names it, or when its photos are smaller than the model's
128x128 input, which marks a downscaled copy (shared/data's celeba-small, 89x109): edited at their own
resolution they would measure the upsampling. So the shipped model is measured on celeba-subset
(178x218) and celebahq-256 (256x256); a part with no photos left stops with a message. For every edit:
- flip: the judge's verdict on the edited photo's aligned crop, conditioned on its verdict on the
  original photo's crop (PHOTO_FLIP_DEFINITION);
- identity: dlib's face-recognition model, which SMILE has no part in (evaluation.identity);
- detail ratio: high-frequency energy of the face region, edited / original;
- colour shift: change of the face region's mean colour, per channel, in 8-bit levels;
- outside unchanged: every pixel outside the face region identical to the photo;
- independent judge: flips by an expression model this project did not train (evaluation.expression,
  fer's mini-Xception), conditioned on its own verdict on the original photo, overall and by gender x age;
- realism: a classifier two-sample test (evaluation.realism) on the mouth and on the lower face: real smiling
  mouths against "more" mouths made from photos labelled not smiling, real non-smiling ones against "less"
  mouths made from smiling ones, with its baselines in the same run (nothing edited, real vs real,
  degraded copies, and real transplants: real mouths of the other class pasted into these faces).
`--select` compares the transfer variants at several strengths on the validation part and chooses the
variant and the default strength (first what keeps the person, the detail and the colour, then how many
of the independent judge's flip target and the realism target it meets, then the best margin to them) (with --update-model both go into the model's editor.json); the test
part is then reported once, with the model's own settings, under "photo" in evaluation.json. `--exclude` keeps out the photos looked at while
designing (assets/photo_design_keys.txt).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from tqdm import tqdm

from celeba.model_folder import resolve_model_dir
from celeba.reader import load_index, run_command
from celeba.split import PARTS, Split
from evaluation.expression import ExpressionJudge, independent_verdicts
from evaluation.identity import IdentityModel
from evaluation.judge import AttributeJudge
from evaluation.metrics import flips
from evaluation.realism import CLASSIFIER, REGIONS, RealMouths, region_patches
from evaluation.report import EVALUATION_FILE, merge_json
from vae.align import FRAME_SIZE, warp
from vae.editor import Prepared, SmileEditor
from vae.files import atomic_save
from vae.filters import gaussian_blur
from vae.preprocess import IMAGE_SIZE, crop_and_resize, pil_to_tensor, to_image, to_tensor
from vae.refiner import REFINER_WEIGHTS, MouthRefiner
from vae.renderer import RENDERER_WEIGHTS, MouthRenderer
from vae.settings import EditorSettings, TransferSettings
from vae.transfer import face_region

VARIANTS = {
    "difference only (prototype)": TransferSettings(flatten_sigma=0.0, mouth_gain=0.0, lower_face=False),
    "flattened difference": TransferSettings(mouth_gain=0.0, lower_face=False),
    "flattened, mouth x1.5": TransferSettings(mouth_gain=0.5, lower_face=False),
    "flattened, mouth x2": TransferSettings(mouth_gain=1.0, lower_face=False),
    "flattened, lower face": TransferSettings(mouth_gain=0.0, lower_face=True),
    "flattened, lower face, mouth x1.5": TransferSettings(mouth_gain=0.5, lower_face=True),
    "flattened, lower face, mouth refiner": TransferSettings(lower_face=True, refine_mouth=True),
    "flattened, lower face, along the flow": TransferSettings(lower_face=True, follow_flow=True),
    "flattened, lower face, along the flow, mouth refiner": TransferSettings(
        lower_face=True, follow_flow=True, refine_mouth=True
    ),
    "flattened, lower face, along the flow, mouth x1.5": TransferSettings(lower_face=True, follow_flow=True, mouth_gain=0.5),
    "flattened, lower face, along the flow, renderer for more": TransferSettings(
        lower_face=True, follow_flow=True, render_mouth="more"
    ),
    "flattened, lower face, along the flow, renderer both ways": TransferSettings(
        lower_face=True, follow_flow=True, render_mouth="both"
    ),
    "along the flow, renderer both ways, half the residual": TransferSettings(
        lower_face=True, follow_flow=True, render_mouth="both", residual_gain=0.5
    ),
    "along the flow, renderer both ways, no residual": TransferSettings(
        lower_face=True, follow_flow=True, render_mouth="both", residual_gain=0.0
    ),
    "along the flow, renderer both ways, shade outside the lips at most 8 levels": TransferSettings(
        lower_face=True, follow_flow=True, render_mouth="both", shade_limit=8.0
    ),
    "along the flow, renderer both ways, shade outside the lips at most 16 levels": TransferSettings(
        lower_face=True, follow_flow=True, render_mouth="both", shade_limit=16.0
    ),
}
COMPARED = (  # the flow, pushed harder over the mouth, and a refiner or a renderer when the model has one
    "flattened, lower face, along the flow",
    "flattened, lower face, along the flow, mouth x1.5",
    "flattened, lower face, along the flow, mouth refiner",
    "flattened, lower face, along the flow, renderer for more",
    "flattened, lower face, along the flow, renderer both ways",
    "along the flow, renderer both ways, half the residual",
    "along the flow, renderer both ways, no residual",
    "along the flow, renderer both ways, shade outside the lips at most 8 levels",
    "along the flow, renderer both ways, shade outside the lips at most 16 levels",
)
STRENGTHS = (2.5, 3.0, 3.5)
TARGETS = {
    "independent_flip": 0.90,
    "realism_auc": 0.70,
    "identity_kept": 0.95,
    "detail_ratio_median": 0.90,
    "colour_shift_max": 3.0,
}
RENDERER_SPLIT = Path("renderer") / "split.json"  # the renderer's own held-out faces, beside its training state
PHOTO_FLIP_DEFINITION = (
    "Flips are conditioned on the judge's verdict at alpha=0, here the original photo's aligned crop: 'plus' is, "
    "among photos the judge calls non-smiling, the share it calls smiling after +alpha; 'minus' is, among photos it "
    "calls smiling, the share it calls non-smiling after -alpha. Verdict: judged P(smile) > 0.5 on the edited "
    "photo's crop, aligned with the original photo's transform."
)


def variant_name(transfer: TransferSettings) -> str:
    """The name under which `transfer` is reported (one of VARIANTS, or its fields)."""
    return next((name for name, t in VARIANTS.items() if t == transfer), str(transfer))


def aligned_crops(photos: np.ndarray, prepared: Prepared) -> torch.Tensor:
    """The model's crop of each (K, H, W, 3) photo, cut with the original photo's alignment."""
    frame_to_photo = prepared.aligned.frame_to_photo
    frames = warp(torch.stack([pil_to_tensor(Image.fromarray(p)) for p in photos]), frame_to_photo, FRAME_SIZE)
    return to_tensor(np.stack([crop_and_resize(to_image(f)) for f in frames]))


def high_frequency_energy(photo: np.ndarray, region: np.ndarray) -> float:
    """Mean squared luminance minus its Gaussian blur (sigma 1.5 px) over the region: the photo's fine detail."""
    luma = Image.fromarray(photo).convert("L")
    detail = np.asarray(luma, np.float32) - np.asarray(luma.filter(ImageFilter.GaussianBlur(1.5)), np.float32)
    return float((detail[region] ** 2).mean())


def local_colour_change(change: np.ndarray, region: np.ndarray, sigma: float = 4.0) -> float:
    """Mean |change| per channel after a Gaussian blur (sigma px): the colour moved locally, which the
    region's mean could hide when one part brightens and another darkens."""
    blurred = gaussian_blur(torch.from_numpy(np.ascontiguousarray(np.moveaxis(change, -1, 0)))[None], sigma)[0]
    return float(blurred.abs().permute(1, 2, 0).numpy()[region].mean())


@dataclass
class Measures:
    """Per-edit measurements, appended photo by photo, for one (variant, strength)."""

    p_smile: dict[str, list[float]] = field(default_factory=lambda: {"zero": [], "plus": [], "minus": []})
    distance: dict[str, list[float]] = field(default_factory=lambda: {"plus": [], "minus": []})
    detail: list[float] = field(default_factory=list)
    colour: list[float] = field(default_factory=list)
    local_colour: list[float] = field(default_factory=list)
    outside_same: list[bool] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)
    independent: dict[str, list[bool]] = field(default_factory=lambda: {"zero": [], "plus": [], "minus": []})
    made_more: dict[str, list[np.ndarray]] = field(default_factory=lambda: {r: [] for r in REGIONS})  # region patches
    made_less: dict[str, list[np.ndarray]] = field(default_factory=lambda: {r: [] for r in REGIONS})  # of "more" on photos
    # labelled not smiling, and of "less" on photos labelled smiling

    def extend(self, other: Measures) -> None:
        """Append another photo's measures (every list field, and every list of the dict fields)."""
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict):
                for key, values in theirs.items():
                    mine[key].extend(values)
            else:
                mine.extend(theirs)

    def independent_summary(self) -> dict:
        """The independent judge's flips (conditioned on its own verdict on the original), overall and by group."""
        zero, plus, minus = (np.array(self.independent[k]) for k in ("zero", "plus", "minus"))
        cells = np.array(self.cells)
        overall = flips(zero, plus, minus, np.ones_like(zero))
        return {
            "name": ExpressionJudge.name,
            "flip": {side: overall[side]["rate"] for side in ("plus", "minus")},
            "flip_detail": overall,
            "flip_by_group": {cell: flips(zero, plus, minus, cells == cell) for cell in sorted(set(self.cells))},
            "judged_smiling_originals": float(zero.mean()),
        }

    def summary(self) -> dict:
        zero, plus, minus = (np.array(self.p_smile[k]) > 0.5 for k in ("zero", "plus", "minus"))
        everyone, cells = np.ones_like(zero), np.array(self.cells)
        overall = flips(zero, plus, minus, everyone)
        distance = {side: np.array(d) for side, d in self.distance.items()}
        located = np.isfinite(distance["plus"])
        kept = {side: d[located] < IdentityModel.threshold for side, d in distance.items()}
        both = kept["plus"] & kept["minus"]
        all_distances = np.concatenate([d[located] for d in distance.values()])
        return {
            "flip": {side: overall[side]["rate"] for side in ("plus", "minus")},
            "flip_detail": overall,
            "flip_by_group": {cell: flips(zero, plus, minus, cells == cell) for cell in sorted(set(self.cells))},
            "identity_kept": float(both.mean()) if both.size else None,
            "identity_kept_by_side": {side: float(k.mean()) if k.size else None for side, k in kept.items()},
            "identity_distance": {"median": float(np.median(all_distances)), "p95": float(np.percentile(all_distances, 95))}
            if all_distances.size
            else None,
            "identity_photos": int(located.sum()),
            "detail_ratio_median": float(np.median(self.detail)),
            "detail_ratio_p05_p95": [float(np.percentile(self.detail, 5)), float(np.percentile(self.detail, 95))],
            "colour_shift_max": float(np.max(self.colour)),
            "colour_shift_mean": float(np.mean(self.colour)),
            "local_colour_change_mean": float(np.mean(self.local_colour)),
            "outside_unchanged": bool(all(self.outside_same)),
        }


def photo_folders(keys: list[str], index, skip: list[str]) -> tuple[list[str], dict[str, str]]:
    """The data folders of `keys` whose photos are edited, and why each other one of them is left out."""
    folders = sorted({key.split("/")[0] for key in keys})
    unknown = sorted(set(skip) - set(folders))
    if unknown:
        raise SystemExit(f"--skip-folder {', '.join(unknown)}: not a folder of the photos edited ({', '.join(folders)}).")
    first = {}
    for key, path in zip(index.keys, index.paths):
        first.setdefault(key.split("/")[0], path)
    left_out = {}
    for folder in folders:
        with Image.open(first[folder]) as image:
            size = image.size
        if folder in skip:
            left_out[folder] = "--skip-folder"
        elif min(size) < IMAGE_SIZE:
            left_out[folder] = f"its photos are {size[0]}x{size[1]}, smaller than the model's input: a downscaled copy"
    return [f for f in folders if f not in left_out], left_out


@dataclass(frozen=True)
class Judges:
    """What measures an edit, none of it trained on edits: the attribute judge, the face recogniser (dlib), the
    independent expression judge, and the real mouths the realism test compares made ones with (filled as
    photos go by)."""

    attribute: AttributeJudge
    identity: IdentityModel
    expression: ExpressionJudge
    mouths: RealMouths

    @classmethod
    def load(cls, judge_folder: Path) -> Judges:
        return cls(AttributeJudge.load(judge_folder), IdentityModel(), ExpressionJudge(), RealMouths())


@dataclass(frozen=True)
class Photo:
    """One held-out photo: its file, its gender x age cell, and its dataset label, which decides which real mouths
    it adds to and which of its edits the realism test compares ("more" of non-smilers, "less" of smilers)."""

    path: Path
    cell: str
    smiling: bool


@dataclass(frozen=True)
class Sweep:
    """What every photo is edited with: each variant at -+ each strength."""

    variants: dict[str, TransferSettings]
    strengths: list[float]


def measure_photo(editor: SmileEditor, judges: Judges, photo: Photo, sweep: Sweep) -> dict[tuple[str, float], Measures] | None:
    """The photo's measures per (variant, strength), or None when no face was found; its real mouths go to the judges'."""
    prepared = editor.prepare(photo.path)
    if not prepared.aligned.found:
        return None
    original = prepared.photo
    p_zero = float(judges.attribute.probabilities(to_tensor(np.asarray(prepared.crop))[None])[0, 0])
    independent_zero = bool(independent_verdicts(judges.expression, original[None], prepared)[0])
    judges.mouths.add(original, prepared.crop_to_photo, photo.smiling)
    identity = judges.identity
    face = identity.locate(original)
    reference = identity.descriptor(original, face) if face is not None else None
    region = face_region(prepared.crop_to_photo, (original.shape[1], original.shape[0]))
    base_energy = high_frequency_energy(original, region)
    measured: dict[tuple[str, float], Measures] = {}
    for name, transfer in sweep.variants.items():
        variant = editor.with_settings(editor.settings.replace(transfer=transfer))
        for strength in sweep.strengths:
            result = variant.edit(prepared, strength)
            edited = np.stack([result.more, result.less])
            p_smile = judges.attribute.probabilities(aligned_crops(edited, prepared))[:, 0].numpy()
            m = measured[(name, strength)] = Measures()
            m.p_smile["zero"].append(p_zero)
            m.cells.append(photo.cell)
            verdicts = independent_verdicts(judges.expression, edited, prepared)
            m.independent["zero"].append(independent_zero)
            m.independent["plus"].append(bool(verdicts[0]))
            m.independent["minus"].append(bool(verdicts[1]))
            for part, patch in region_patches(edited[1 if photo.smiling else 0], prepared.crop_to_photo).items():
                (m.made_less if photo.smiling else m.made_more)[part].append(patch)
            for side, k in (("plus", 0), ("minus", 1)):
                m.p_smile[side].append(float(p_smile[k]))
                m.distance[side].append(
                    identity.distance(reference, identity.descriptor(edited[k], face)) if face is not None else float("nan")
                )
                change = edited[k].astype(np.float32) - original
                m.colour.append(float(np.abs(change[region].mean(0)).max()))
                m.local_colour.append(local_colour_change(change, region))
                m.detail.append(high_frequency_energy(edited[k], region) / max(base_energy, 1e-6))
                m.outside_same.append(bool(np.array_equal(edited[k][~region], original[~region])))
    return measured


def measure_sweep(editor: SmileEditor, judges: Judges, photos: list[Photo], sweep: Sweep, part: str) -> tuple[dict, int]:
    """({variant: {strength: summary with the independent judge's flips and realism}}, photos with no face found)."""
    results = {(name, s): Measures() for name in sweep.variants for s in sweep.strengths}
    no_face = 0
    for photo in tqdm(photos, desc=f"Editing {part} photos", unit="photo"):
        measured = measure_photo(editor, judges, photo, sweep)
        if measured is None:
            no_face += 1
            continue
        for key, m in measured.items():
            results[key].extend(m)
    if no_face == len(photos):
        raise SystemExit(f"No face found in any of the {len(photos)} {part} photos: nothing to measure.")
    baselines = judges.mouths.baselines()
    table = {
        name: {s: with_realism(results[(name, s)], judges.mouths, baselines) for s in sweep.strengths} for name in sweep.variants
    }
    return table, no_face


def lower_face(image: np.ndarray, landmarks: np.ndarray, size: tuple[int, int] = (240, 180)) -> np.ndarray:
    """The lower face of `image` (an eye distance either side of the mouth, from below the eyes to below the chin),
    resized to `size` (w, h) for a grid."""
    mouth, eyes = landmarks[3:5].mean(0), float(np.linalg.norm(landmarks[1] - landmarks[0]))
    box = (mouth[0] - eyes, mouth[1] - 0.9 * eyes, mouth[0] + eyes, mouth[1] + 0.6 * eyes)
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS, box=box))


def write_grids(editor: SmileEditor, photos: list[Photo], folder: Path, rows: int = 8) -> list[Path]:
    """Grids of `rows` photos each: less / photo / more at the editor's settings, the lower face only (photos with no
    face found are left out). What a person sees, to look at beside the numbers."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for photo in tqdm(photos, desc="Editing photos to look at", unit="photo"):
        prepared = editor.prepare(photo.path)
        if prepared.aligned.landmarks is not None:
            result = editor.edit(prepared)
            lines.append(
                np.concatenate([lower_face(x, prepared.aligned.landmarks) for x in (result.less, prepared.photo, result.more)], 1)
            )
    written = []
    for k in range(0, len(lines), rows):
        written.append(atomic_save(Image.fromarray(np.concatenate(lines[k : k + rows], 0)), folder / f"grid_{k // rows:02d}.png"))
    return written


def part_keys(model_dir: Path, photos_of: str, part: str) -> list[str]:
    """The keys of the photos edited for `part`: the VAE's split's part, or the renderer's own held-out faces of that
    part less any the VAE trained on or holds in its other part (no photo plays a part in a choice and in the report)."""
    split = Split.load(model_dir)
    if photos_of == "model":
        return getattr(split, part)
    path = model_dir / RENDERER_SPLIT
    if not path.exists():
        raise SystemExit(f"--photos-of renderer: {path} is missing (python -m train.renderer writes it).")
    other = set(split.test if part == "validation" else split.validation) | set(split.train)
    return [k for k in json.loads(path.read_text())[part] if k not in other]


def published_figures(editor: SmileEditor, folder: Path, side: int = 320) -> None:
    """Faces that may be published, at photo level, one per row: less, the photo itself, more.
    `astronaut_photo.png`: the public-domain astronaut (NASA); `published_faces.png` adds two faces sampled
    from the model's prior (no one's photo), upscaled from 128 to 256 px, so they are as blurry as the VAE."""
    faces = [Image.open(Path(__file__).resolve().parents[1] / "assets" / "examples" / "astronaut.jpg").convert("RGB")]
    faces += [face.resize((256, 256), Image.Resampling.BICUBIC) for face in editor.sample(2, seed=3)]
    figure = Image.new("RGB", (3 * side, len(faces) * side))
    for row, face in enumerate(faces):
        prepared = editor.prepare(face)
        result = editor.edit(prepared)
        for column, panel in enumerate((result.less, prepared.photo, result.more)):
            figure.paste(Image.fromarray(panel).resize((side, side), Image.Resampling.LANCZOS), (column * side, row * side))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save(figure.crop((0, 0, 3 * side, side)), folder / "astronaut_photo.png")
    atomic_save(figure, folder / "published_faces.png")


def with_realism(measures: Measures, mouths: RealMouths, baselines: dict) -> dict:
    """One row's summary with the independent judge's flips and the realism test (and its baselines) added, per
    region; `realism.<region>.n` counts the real mouths of each class, the transplants and the made ones ("more"
    made from non-smilers)."""
    scores = mouths.scores(measures.made_more, measures.made_less)
    realism: dict = {
        region: {**scores[region], **baselines[region], "n": {**baselines[region]["n"], **scores[region]["n"]}}
        for region in REGIONS
    }
    realism["classifier"] = CLASSIFIER
    return {**measures.summary(), "independent_judge": measures.independent_summary(), "realism": realism}


def worst_independent_flip(summary: dict) -> float:
    flip = summary["independent_judge"]["flip"]
    return min(flip["plus"] or 0, flip["minus"] or 0)


def worst_realism(summary: dict) -> float:
    """The worse of "more" and "less" on the mouth region (the region the selection's target was set on)."""
    realism = summary["realism"]["mouth"]
    return max(realism["more"] or 1, realism["less"] or 1)


def meets(summary: dict) -> dict[str, bool]:
    """Which TARGETS a row meets."""
    return {
        "independent_flip": worst_independent_flip(summary) >= TARGETS["independent_flip"],
        "realism_auc": worst_realism(summary) <= TARGETS["realism_auc"],
        "identity_kept": (summary["identity_kept"] or 0) >= TARGETS["identity_kept"],
        "detail_ratio_median": summary["detail_ratio_median"] >= TARGETS["detail_ratio_median"],
        "colour_shift_max": summary["colour_shift_max"] <= TARGETS["colour_shift_max"],
    }


def choose(table: dict[str, dict[float, dict]]) -> tuple[str, float, bool]:
    """(variant, strength, every target met). Rows that keep the person, the detail and the colour come first;
    among them the one that meets more of the two judged targets (the independent judge's flips, realism),
    then the one whose worst margin to them is best (a new sample of photos moves both; a smaller strength is
    no merit of its own). Counting the targets met first keeps a row that meets one from losing to a row
    that meets neither on the other's noise (on validation every row once missed realism by about 0.3)."""

    def score(item):
        _, summary = item
        kept = meets(summary)
        keeps = kept["identity_kept"] and kept["detail_ratio_median"] and kept["colour_shift_max"]
        judged = kept["independent_flip"] + kept["realism_auc"]
        margin = min(
            worst_independent_flip(summary) - TARGETS["independent_flip"], TARGETS["realism_auc"] - worst_realism(summary)
        )
        return all(kept.values()), keeps, judged, margin

    rows = {(name, strength): summary for name, per_strength in table.items() for strength, summary in per_strength.items()}
    (name, strength), summary = max(rows.items(), key=score)
    return name, strength, all(meets(summary).values())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.photos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="model folder with split.json (e.g. assets)")
    p.add_argument("--judge", required=True, help="folder written by python -m evaluation.judge")
    p.add_argument(
        "--data", action="append", default=[], required=True, metavar="DIR", help="every folder the split was made from"
    )
    p.add_argument("--part", choices=("validation", "test"), default="test")
    p.add_argument(
        "--photos-of",
        choices=("model", "renderer"),
        default="model",
        help="whose held-out part is edited: the VAE's split (default), or the mouth renderer's own "
        "(<model>/renderer/split.json: faces neither model trained on, less those in the VAE's other held-out part)",
    )
    p.add_argument("--limit", type=int, default=400, help="photos (seeded sample of the part; 0 = all)")
    p.add_argument("--exclude", type=Path, help="file of keys to leave out (photos looked at while designing)")
    p.add_argument("--skip-folder", action="append", default=[], metavar="NAME", help="a data folder to leave out (repeatable)")
    p.add_argument("--select", action="store_true", help="compare variants and strengths; write the choice (validation only)")
    p.add_argument("--update-model", action="store_true", help="write the result into the model's evaluation.json / editor.json")
    p.add_argument(
        "--refiner",
        type=Path,
        help="a folder with a trained mouth refiner (python -m train.refiner) to compare and, if chosen, ship",
    )
    p.add_argument(
        "--renderer",
        type=Path,
        help="a folder with a trained mouth renderer (a copy of python -m train.renderer's, which goes on changing) to "
        "compare and, if chosen, ship",
    )
    p.add_argument("--strengths", type=float, nargs="+", default=list(STRENGTHS), help="with --select: the strengths compared")
    p.add_argument(
        "--variant",
        action="append",
        choices=COMPARED,
        metavar="NAME",
        help="with --select: compare only these variants (repeatable; default: every one the model folder can run)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--look",
        type=Path,
        metavar="DIR",
        help="instead of measuring, write grids of the photos as less / photo / more at the model's settings, cropped "
        "to the lower face, 8 rows each, to look at (CelebA: never commit them)",
    )
    args = p.parse_args(argv)
    if args.select and args.part != "validation":
        raise SystemExit("--select chooses on the validation part only: the test part is reported, never chosen on.")
    return args


def load_editor(model_dir: Path, refiner_folder: Path | None, renderer_folder: Path | None) -> SmileEditor:
    """The model folder's editor, with the refiner and the renderer of the folders given instead of its own."""
    editor = SmileEditor.from_pretrained(model_dir)
    refiner, renderer = editor.refiner, editor.renderer
    if refiner_folder is not None:
        refiner = MouthRefiner.load(refiner_folder)
        if refiner is None:
            raise SystemExit(f"--refiner {refiner_folder}: no {REFINER_WEIGHTS} there (train one with python -m train.refiner).")
    if renderer_folder is not None:
        renderer = MouthRenderer.load(renderer_folder)
        if renderer is None:
            raise SystemExit(
                f"--renderer {renderer_folder}: no {RENDERER_WEIGHTS} there (train one with python -m train.renderer)."
            )
    return SmileEditor(editor.model, editor.vectors, editor.settings, editor.aligner, refiner, renderer)


def held_out_photos(args: argparse.Namespace, model_dir: Path) -> tuple[list[Photo], dict]:
    """The photos of the part asked for (less the excluded, a seeded sample of --limit) and what the report says of
    how they were chosen."""
    index = load_index(args.data)
    keys = part_keys(model_dir, args.photos_of, args.part)
    position = {key: i for i, key in enumerate(index.keys)}
    if args.photos_of == "model":
        split = Split.load(model_dir)
        rows = getattr(split.rows(index), args.part)
        keys = [k for part in PARTS for k in getattr(split, part)]  # the split's folders, every part's
    elif set(keys) - set(position):
        raise SystemExit(f"The renderer's {args.part} faces are not all in --data: give every folder its split names.")
    else:
        rows = sorted(position[k] for k in keys)
    folders, left_out = photo_folders(keys, index, args.skip_folder)
    for folder, why in left_out.items():
        print(f"Leaving out {folder}: {why}")
    excluded = set(args.exclude.read_text().split()) if args.exclude else set()
    rows = [r for r in rows if index.keys[r].split("/")[0] in folders and index.keys[r] not in excluded]
    if not rows:
        raise SystemExit(
            f"No photos to edit: the {args.part} part has none from {', '.join(folders) or 'any folder'}"
            + (f" (left out: {', '.join(left_out)})" if left_out else "")
            + "."
        )
    if args.limit and len(rows) > args.limit:
        rows = sorted(np.random.default_rng(args.seed).choice(rows, args.limit, replace=False))
    male, young, smiling = (index.attribute(n) for n in ("Male", "Young", "Smiling"))
    photos = [
        Photo(index.paths[r], f"{'male' if male[r] else 'female'}_{'young' if young[r] else 'old'}", bool(smiling[r]))
        for r in rows
    ]
    chosen = {"excluded_while_designing": len(excluded), "folders": folders, "folders_left_out": left_out}
    return photos, chosen


def plan_sweep(editor: SmileEditor, args: argparse.Namespace) -> Sweep:
    """With --select, the compared variants (--variant, else all) the model folder can run, at each --strengths; else the
    shipped settings."""
    if not args.select:
        return Sweep({variant_name(editor.settings.transfer): editor.settings.transfer}, [editor.settings.default_strength])
    runnable = {
        n: VARIANTS[n]
        for n in args.variant or COMPARED
        if (editor.refiner is not None or not VARIANTS[n].refine_mouth)
        and (editor.renderer is not None or VARIANTS[n].render_mouth == "off")
    }
    if not runnable:
        raise SystemExit("No variant to compare: the ones named need a refiner or a renderer this model folder lacks.")
    return Sweep(runnable, list(args.strengths))


def print_table(table: dict[str, dict[float, dict]]) -> None:
    """One line per (variant, strength) with the numbers the choice rests on."""
    for name, per_strength in table.items():
        for s, summary in per_strength.items():
            shown = {
                k: summary[k] for k in ("flip", "identity_kept", "detail_ratio_median", "colour_shift_max", "outside_unchanged")
            }
            shown["independent_flip"] = summary["independent_judge"]["flip"]
            shown["realism"] = {
                region: {k: summary["realism"][region][k] for k in ("more", "less", "real_transplant", "nothing_edited")}
                for region in REGIONS
            }
            print(f"{name:32s} a={s:.1f}: " + json.dumps(shown))


def renderer_provenance(folder: Path) -> dict:
    """What the shipped renderer.json says of where its weights come from: the training step they were saved at."""
    config = json.loads((folder / "renderer.json").read_text())
    return {"step": config.get("step"), "chosen_from": str(folder)}


def select(table: dict[str, dict[float, dict]], common: dict) -> dict:
    """The validation report: every row, and the variant and strength `choose` takes."""
    name, strength, complete = choose(table)
    print(f"Chosen on validation: {name!r} at strength {strength}" + ("" if complete else " (no row met every target)"))
    return {
        **common,
        "chosen": {"variant": name, "strength": strength, "meets_every_target": complete},
        "targets": TARGETS,
        "table": {
            n: {
                str(s): {k: v for k, v in summary.items() if k not in ("flip_detail", "flip_by_group")}
                for s, summary in rows.items()
            }
            for n, rows in table.items()
        },
    }


def ship_choice(report: dict, editor: SmileEditor, model_dir: Path, args: argparse.Namespace) -> None:
    """Write the chosen variant and strength into the model folder: the app, the command line and the test report
    then use them. A refiner or renderer given with --refiner / --renderer ships with the model when chosen."""
    name, strength = report["chosen"]["variant"], report["chosen"]["strength"]
    merge_json(model_dir / EVALUATION_FILE, {"photo_selection": report})
    if VARIANTS[name].refine_mouth and args.refiner and args.refiner.resolve() != model_dir.resolve():
        editor.refiner.save(model_dir)
    if VARIANTS[name].render_mouth != "off" and args.renderer and args.renderer.resolve() != model_dir.resolve():
        editor.renderer.save(model_dir, extra=renderer_provenance(args.renderer))
    EditorSettings.load(model_dir).replace(default_strength=strength, transfer=VARIANTS[name]).save(model_dir)


def shipped_report(table: dict[str, dict[float, dict]], common: dict, editor: SmileEditor) -> dict:
    """The report on the model's own settings (the test part's, reported once)."""
    shipped, strength = variant_name(editor.settings.transfer), editor.settings.default_strength
    summary = table[shipped][strength]
    return {
        **common,
        "variant": shipped,
        "transfer": dataclasses.asdict(editor.settings.transfer),
        "strength": strength,
        **summary,
        "identity": {
            "measure": IdentityModel.measure,
            "threshold": IdentityModel.threshold,
            "kept": summary["identity_kept"],
            "photos": summary["identity_photos"],
        },
        "selection": {"subset": "validation", "key": "photo_selection"},
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    model_dir = resolve_model_dir(args.model)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    editor = load_editor(model_dir, args.refiner, args.renderer)
    photos, chosen = held_out_photos(args, model_dir)
    if args.look:
        grids = write_grids(editor, photos, args.look)
        print(f"Wrote {len(grids)} grids (less / photo / more) to {args.look}: look at them, never commit them (CelebA).")
        return {"grids": [str(g) for g in grids]}
    sweep = plan_sweep(editor, args)
    if args.photos_of == "model" and any(t.render_mouth != "off" for t in sweep.variants.values()):
        raise SystemExit(
            "The mouth renderer trained on faces of the VAE's held-out parts: measure a transfer that paints the mouth "
            "on the renderer's own held-out faces (--photos-of renderer)."
        )
    table, no_face = measure_sweep(editor, Judges.load(args.judge), photos, sweep, args.part)
    common = {
        "part": args.part,
        "photos_of": args.photos_of,
        "photos": len(photos) - no_face,
        "no_face_found": no_face,
        **chosen,
        "flip_definition": PHOTO_FLIP_DEFINITION,
        "command": "python -m evaluation.photos " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    print_table(table)
    if args.select:
        report = select(table, common)
        if args.update_model:
            ship_choice(report, editor, model_dir, args)
        return report
    report = shipped_report(table, common, editor)
    if args.update_model:
        merge_json(model_dir / EVALUATION_FILE, {"photo": report})
        published_figures(editor, model_dir / "figures")
    return report


if __name__ == "__main__":
    run_command(main)
