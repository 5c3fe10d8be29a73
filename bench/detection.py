"""Face detection on a large photo: how small a copy MTCNN may see, and how coarse a search, against the
landmarks it finds.

`python -m bench.detection` pastes real faces (a seeded sample of --data's images, never saved) at several
sizes into a 2048x1536 photo over a textured background, and finds them with each variant of
`vae.align.FaceAligner`: a list of detection sides (the photo's longer side scaled down to each in turn until
a face is found), searched with MTCNN's whole pyramid or coarse first (`coarse_first`). The reference is the
whole pyramid on the whole 2048-px photo. For each variant and face size: how many faces are found where the
reference finds them, the landmarks' distance from the reference's in eye distances (median and p95 over the
five points of every face), for a coarse-first variant the largest shift of its landmarks from the whole
pyramid's at the same sides (eye distances), how many are within 1e-3 of them and how many searches the
coarse search answered alone (elsewhere the whole pyramid's answer is returned), and the median
milliseconds. The last line is one JSON object; the CPU's flags are in it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from vae.runtime import cpu_summary, openmp_wait, wait_briefly_for_work

wait_briefly_for_work()  # as the app does, before torch loads
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from vae.align import FaceAligner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "celebahq-256-more" / "img_align_celeba"
PHOTO_SIZE = (2048, 1536)
VARIANTS = {  # name: (detection sides, coarse first)
    "1024, coarse first (the app's)": ((1024,), True),
    "1024, whole pyramid": ((1024,), False),
    "640, coarse first": ((640,), True),
    "640, whole pyramid": ((640,), False),
}
WHOLE_TWIN = {"1024, coarse first (the app's)": "1024, whole pyramid", "640, coarse first": "640, whole pyramid"}
FACE_SIDES = (128, 192, 256, 384, 512, 1024)  # the pasted 256-px image's side in the photo (the face is about half of it)


def background(rng: np.random.Generator) -> Image.Image:
    """A textured, non-face background: smooth colour blobs with fine noise over them."""
    coarse = rng.uniform(40, 215, (12, 16, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize(PHOTO_SIZE, Image.Resampling.BICUBIC), float)
    return Image.fromarray(np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8))


def pasted(face: Image.Image, side: int, rng: np.random.Generator) -> Image.Image:
    """`face` scaled to `side` px and pasted at a random place into a 2048x1536 photo."""
    photo = background(rng)
    x = int(rng.integers(0, PHOTO_SIZE[0] - side))
    y = int(rng.integers(0, PHOTO_SIZE[1] - side))
    photo.paste(face.resize((side, side), Image.Resampling.BICUBIC), (x, y))
    return photo


def landmark_error(found: list[np.ndarray], reference: np.ndarray) -> np.ndarray | None:
    """Each of the five points' distance from the reference's in eye distances, for the found face nearest the
    reference face (None when nothing was found within one eye distance of it)."""
    eyes = float(np.linalg.norm(reference[1] - reference[0]))
    errors = [np.linalg.norm(points - reference, axis=1) / eyes for points in found]
    best = min(errors, key=lambda e: e.mean(), default=None)
    return best if best is not None and best.mean() < 1.0 else None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.detection", description=__doc__)
    p.add_argument("--data", type=Path, default=DATA, help="a folder of face images (CelebA-HQ 256 px)")
    p.add_argument("--faces", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    images = sorted(args.data.glob("*.jpg"))
    if not images:
        raise SystemExit(f"No face images in {args.data}: give --data a folder of .jpg faces.")
    rng = np.random.default_rng(args.seed)
    chosen = [images[i] for i in sorted(rng.choice(len(images), min(args.faces, len(images)), replace=False))]
    reference = FaceAligner(detect_sides=(max(PHOTO_SIZE),), coarse_first=False)
    aligners = {name: FaceAligner(detect_sides=sides, coarse_first=coarse) for name, (sides, coarse) in VARIANTS.items()}
    reference.warm_up()
    for aligner in aligners.values():
        aligner.warm_up()
    rows: dict[str, dict] = {}
    for side in FACE_SIDES:
        errors = {name: [] for name in VARIANTS}
        missed = dict.fromkeys(VARIANTS, 0)
        times = {name: [] for name in VARIANTS}
        shifts = {name: [] for name in WHOLE_TWIN}
        kept_before = {name: aligners[name].coarse_kept for name in WHOLE_TWIN}
        references = 0
        placing = np.random.default_rng([args.seed, side])  # each size's photos the same whatever sizes run before it
        for path in chosen:
            photo = pasted(Image.open(path).convert("RGB"), side, placing)
            truth = reference.landmarks(photo)
            if not truth:
                continue
            references += 1
            founds = {}
            for name, aligner in aligners.items():
                start = time.perf_counter()
                founds[name] = found = aligner.landmarks(photo)
                times[name].append((time.perf_counter() - start) * 1000)
                error = landmark_error(found, truth[0])
                if error is None:
                    missed[name] += 1
                else:
                    errors[name].extend(error.tolist())
            for name, other in WHOLE_TWIN.items():
                if founds[name] and founds[other]:
                    shift = np.linalg.norm(founds[name][0] - founds[other][0], axis=1).max()
                    shifts[name].append(float(shift / np.linalg.norm(truth[0][1] - truth[0][0])))
        for name in VARIANTS:
            row = {
                "faces_in_reference": references,
                "found": references - missed[name],
                "error_median": round(float(np.median(errors[name])), 4) if errors[name] else None,
                "error_p95": round(float(np.percentile(errors[name], 95)), 4) if errors[name] else None,
                "ms_median": round(statistics.median(times[name]), 1) if times[name] else None,
            }
            if shifts.get(name):
                row["shift_from_whole_pyramid_max"] = round(max(shifts[name]), 4)
                row["within_1e-3_of_whole_pyramid"] = sum(shift < 1e-3 for shift in shifts[name])
                row["coarse_search_kept"] = aligners[name].coarse_kept - kept_before[name]
            rows[f"{name} / face image {side} px"] = row
            print(f"{name:>30} / face image {side:>4} px: {row}", flush=True)
    result = {
        "cpu": cpu_summary(),
        "openmp_wait": openmp_wait(),
        "photo": PHOTO_SIZE,
        "faces": len(chosen),
        "seed": args.seed,
        "rows": rows,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
