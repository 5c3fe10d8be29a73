"""Where an upload's first edit goes: the page's /prepare handler, stage by stage, in this process.

`python -m bench.stages` prints one JSON object as its last line: for photos of a few sizes (the
astronaut at 512 px, a 12-megapixel phone photo's working size), the median milliseconds of each stage
— reading the file, face detection and alignment, the encode; the first look `SmileApp.prepare` yields
first (three strengths' face views, decoded, painted and sent as JPEG) and its total; then the rest of
it: the decode of every live strength, the decoder's flow and the change, the full-size less / more
photos, the live frames' face views, their JPEG data URIs, and the PNG files written for the page (side
by side, as the app does, and one by one, the path it replaced) — and the CPU's flags. `--busy` keeps
one core taken by another process meanwhile (as a second visitor's edit or a browser would); torch's
OpenMP waits as the app's does unless GOMP_SPINCOUNT / OMP_WAIT_POLICY say otherwise (`python -m
bench.openmp` compares them). `python -m bench.app` measures the same path as a person sees it, in Chromium.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from vae.runtime import cpu_summary, openmp_wait, wait_briefly_for_work

wait_briefly_for_work()  # as the app does, before torch loads
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from vae.editor import SmileEditor  # noqa: E402
from vae.image_file import load_image  # noqa: E402
from vae.preprocess import crop_and_resize, to_tensor  # noqa: E402
from web.live import frames_json, live_strengths  # noqa: E402
from web.server.results import ResultFiles  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "examples" / "astronaut.jpg"


def photo_bytes(side: int, seed: int) -> bytes:
    """The astronaut at `side` px on the longer side as a JPEG, nudged by `seed` so that nothing is cached."""
    image = Image.open(PHOTO).convert("RGB").resize((side, side * 3 // 4 if side > 1024 else side), Image.Resampling.BICUBIC)
    image = image.point(lambda v: min(255, v + seed % 5))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def stages(editor: SmileEditor, data: bytes, results: ResultFiles) -> dict[str, float]:
    """Milliseconds of each stage of the page's first edit of `data`, in the order the handler runs them."""
    times: dict[str, float] = {}

    def timed(name: str, fn):
        start = time.perf_counter()
        out = fn()
        times[name] = (time.perf_counter() - start) * 1000
        return out

    settings = editor.settings
    strength = settings.default_strength
    frames = live_strengths(settings.max_strength)
    photo = timed("read_photo", lambda: load_image(data, max_side=2048, min_side=32))
    aligned = timed("detect_and_align", lambda: editor.aligner.align(photo))
    crop = timed("crop", lambda: crop_and_resize(aligned.frame))
    with torch.inference_mode():
        timed("encode", lambda: editor.model.encode(to_tensor(crop)[None].contiguous(memory_format=torch.channels_last)))
    prepared = editor.prepare(data)  # the same again, as one call, for the stages after it
    few = [-strength, 0.0, strength]  # the first look SmileApp.prepare yields
    timed("first_look", lambda: frames_json(few, editor.decode_strengths(prepared, few).views(few), complete=False))
    edits = timed("decode_all_strengths", lambda: editor.decode_strengths(prepared, sorted(set(frames) | {-strength, strength})))
    timed("flow_and_change", lambda: edits.changes)
    less, more = timed("less_and_more_photos", lambda: edits.photos([-strength, strength]))
    views = timed("live_frame_views", lambda: edits.views(frames))
    timed("live_frames_jpeg", lambda: frames_json(frames, views))
    timed("png_files_one_by_one", lambda: [results.image(image, name) for image, name in ((less, "less"), (more, "more"))])
    timed("png_files", lambda: results.images([(less, "less"), (more, "more")]))
    times["first_look_total"] = sum(times[name] for name in ("read_photo", "detect_and_align", "crop", "encode", "first_look"))
    skipped = ("png_files_one_by_one", "first_look", "first_look_total")
    times["total"] = sum(value for name, value in times.items() if name not in skipped)  # the page's path before the first look
    return times


@contextlib.contextmanager
def one_core_taken(busy: bool) -> Iterator[None]:
    """Another process spinning on one core meanwhile, when `busy`."""
    if not busy:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sides", type=int, nargs="*", default=[512, 2048])
    p.add_argument("--busy", action="store_true", help="another process spins on one core while stages are timed")
    args = p.parse_args(argv)
    editor = SmileEditor.from_pretrained(ROOT / "assets")
    editor.aligner.warm_up()
    result: dict = {
        "cpu": cpu_summary(),
        "openmp_wait": openmp_wait(),
        "threads": torch.get_num_threads(),
        "busy": args.busy,
        "stages_ms": {},
    }
    with tempfile.TemporaryDirectory() as tmp, one_core_taken(args.busy):
        results = ResultFiles(Path(tmp))
        for side in args.sides:
            runs = [stages(editor, photo_bytes(side, seed), results) for seed in range(args.repeats + 1)][1:]
            result["stages_ms"][f"{side}px"] = {name: round(statistics.median(r[name] for r in runs), 1) for name in runs[0]}
            print(side, json.dumps(result["stages_ms"][f"{side}px"]), flush=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
