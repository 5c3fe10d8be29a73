"""Benchmark: `python -m bench.decode` prints one JSON object as its last line.

What one large photo costs the server, per accepted format: a flat 40-megapixel picture (6400x6250;
WebP at its 16-megapixel bound) is written in each format, then, each in a fresh process so that peak
memory is its own, loaded at the working size (`load_image`, 2048 px) and prepared and edited as /edit
does it with alignment off (the whole photo is the face region: the most an edit can touch). It prints
seconds and peak RSS above the process's idle size for the load and for the whole edit, and the CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from vae.runtime import cpu_summary

ROOT = Path(__file__).resolve().parents[1]
SIZE = (6400, 6250)
WEBP_SIZE = (4000, 4000)
FILES = {  # name: (format, mode, size, save options)
    "JPEG": ("JPEG", "RGB", SIZE, {"quality": 85}),
    "PNG RGB": ("PNG", "RGB", SIZE, {"compress_level": 1}),
    "PNG RGBA": ("PNG", "RGBA", SIZE, {"compress_level": 1}),
    "PNG 16-bit grey": ("PNG", "I;16", SIZE, {"compress_level": 1}),
    "GIF palette": ("GIF", "P", SIZE, {}),
    "WebP (16 MP)": ("WEBP", "RGB", WEBP_SIZE, {"quality": 80}),
    "TIFF": ("TIFF", "RGB", SIZE, {}),
    "BMP": ("BMP", "RGB", SIZE, {}),
}
MEASURE = """
import json, sys, threading, time
from vae.editor import SmileEditor
from vae.image_file import load_image
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
editor = SmileEditor.from_pretrained("assets")
data = open(sys.argv[1], "rb").read()
peak, done = [rss()], []
def sample():
    while not done:
        peak[0] = max(peak[0], rss()); time.sleep(0.005)
idle = rss()
threading.Thread(target=sample, daemon=True).start()
started = time.perf_counter()
load_image(data, max_side=2048, min_side=32)
load_s, load_mb = time.perf_counter() - started, peak[0] - idle
started = time.perf_counter()
editor.edit(editor.prepare(data, align=False), 2.0)
edit_s = time.perf_counter() - started
done.append(1)
print(json.dumps({"load_s": round(load_s, 2), "load_peak_mb": round(load_mb), "prepare_and_edit_s": round(edit_s, 2),
                  "peak_mb_over_idle": round(peak[0] - idle)}))
"""


def flat_file(fmt: str, mode: str, size: tuple[int, int], options: dict) -> bytes:
    """A picture with a gentle gradient (so that no encoder stores it as nothing), in `mode` and `fmt`."""
    grey = Image.linear_gradient("L").resize(size)
    image = Image.fromarray(np.asarray(grey, np.uint16) * 257) if mode == "I;16" else grey.convert("RGB").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__)
    p.add_argument("--formats", nargs="*", default=list(FILES), help="names from: " + ", ".join(FILES))
    args = p.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.formats:
            fmt, mode, size, options = FILES[name]
            path = Path(tmp) / f"photo.{fmt.lower()}"
            path.write_bytes(flat_file(fmt, mode, size, options))
            out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], cwd=ROOT, capture_output=True, text=True)
            if out.returncode:
                rows[name] = {"error": out.stderr.strip().splitlines()[-1]}
            else:
                rows[name] = {"megapixels": round(size[0] * size[1] / 1e6, 1), "file_mb": round(path.stat().st_size / 2**20, 1)}
                rows[name] |= json.loads(out.stdout.strip().splitlines()[-1])
            print(name, json.dumps(rows[name]), flush=True)
    result = {"cpu": cpu_summary(), "formats": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
