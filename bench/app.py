"""App benchmark: `python -m bench.app` prints one JSON object as its last line.

Starts the real app (`python app.py`, offline, its own upload folder) and measures what a person feels,
in Debian's Chromium driven by Playwright on this same machine:
- upload -> first edited photo shown (the live view's first look, a few strengths, or the "more" photo,
  whichever comes first), and upload -> every live frame loaded (`data-ready="1"`), p50/p95 over several
  distinct photos;
- live slider: `input` event -> the new frame decoded and painted (two animation frames later), p50/p95
  over many moves, and how many requests left the page while sliding (the target is none);
and over HTTP: /prepare's first and last answers read off its own event stream (httpx), then (gradio_client)
the /edit round trip, and the server's memory (RSS) after many distinct
uploads, against a bound that a free 2-vCPU / 16 GB Space holds with several users. The app's CPU and
how its OpenMP threads wait are read off its log (GOMP_SPINCOUNT=300000 in the environment gives
libgomp's own default; `python -m bench.openmp` says why the app spins less). The first look's time is
broken down in the page: until the upload is answered, until the edit is requested (the page shows its
own preview first); the rest is the server's first look (over HTTP below) and the page showing it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.appserver import CHROMIUM_ARGS, AppServer, call_events, upload
from vae.runtime import cpu_summary

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "examples" / "astronaut.jpg"
RSS_BOUND_MB = 2048  # per server; a 16 GB Space keeps room for the OS, Gradio's queue and several users
SLIDE_JS = """async (values) => {
  const range = document.querySelector('#strength input[type=range]');
  const img = document.querySelector('#live img.live-frame');
  const frame = () => new Promise((done) => requestAnimationFrame(() => done()));
  const times = [];
  for (const v of values) {
    const before = img.src;
    const start = performance.now();
    range.value = String(v);
    range.dispatchEvent(new Event('input', { bubbles: true }));
    if (img.src === before) continue;
    await img.decode();
    await frame(); await frame();
    times.push(performance.now() - start);
  }
  return times;
}"""

PAGE_STEPS_JS = """() => {
  const since = (t) => Math.round(t - window.benchStart);
  const entries = performance.getEntriesByType('resource');
  const upload = entries.find((e) => e.name.includes('/gradio_api/upload?'));
  const join = entries.find((e) => e.name.includes('/gradio_api/queue/join'));
  return {
    upload_answered: upload ? since(upload.responseEnd) : null,
    edit_requested: join ? since(join.startTime) : null,
  };
}"""


def percentiles(ms: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1), "n": len(ms)}


def distinct_photo(k: int, folder: Path, side: int = 512) -> Path:
    """The astronaut, made distinct by a shift and a brightness step (new content for the server); `side`
    other than its own 512 px gives a 4:3 photo that wide (2048: a 12-megapixel phone photo's working size)."""
    image = Image.open(PHOTO).convert("RGB")
    if side != image.width:  # the square photo scaled to the height of a 4:3 one, on grey at its sides
        height = side * 3 // 4
        photo = Image.new("RGB", (side, height), (128, 128, 128))
        photo.paste(image.resize((height, height), Image.Resampling.BICUBIC), ((side - height) // 2, 0))
        image = photo
    shifted = Image.new("RGB", image.size, (128, 128, 128))
    shifted.paste(image.point(lambda v: min(255, v + k % 7)), (k % 13 - 6, k // 13 % 13 - 6))
    path = folder / f"photo_{k:04d}.jpg"
    shifted.save(path, quality=92)
    return path


def browser_numbers(url: str, photos: list[Path], moves: int) -> dict:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"browser": "skipped: pip install playwright"}
    if not shutil.which("chromium"):
        return {"browser": "skipped: apt-get install chromium"}
    first, ready, slide, requests = [], [], [], []
    steps: dict[str, list[float]] = {}

    def count(request) -> None:
        requests.append(request.url)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        for photo in photos:
            page.goto(url)  # a fresh visit per photo: nothing of the last photo can satisfy a wait
            page.wait_for_selector("#photo input[type=file]", state="attached")
            page.evaluate("() => { performance.clearResourceTimings(); window.benchStart = performance.now(); }")
            start = time.perf_counter()
            page.locator("#photo input[type=file]").set_input_files(str(photo))
            page.wait_for_function(
                "() => document.querySelector('#live img.live-frame:not([hidden])') || "
                "(document.querySelector('#more img') && document.querySelector('#more img').complete)",
                timeout=120_000,
            )
            first.append((time.perf_counter() - start) * 1000)
            for name, ms in page.evaluate(PAGE_STEPS_JS).items():
                if ms is not None:  # a request the page's resource timings did not keep is left out, and n says so
                    steps.setdefault(name, []).append(ms)
            page.wait_for_selector("#live [data-ready='1']", state="attached", timeout=120_000)
            ready.append((time.perf_counter() - start) * 1000)
            page.wait_for_function(
                "() => { const img = document.querySelector('#strip img'); return img && img.complete; }", timeout=120_000
            )  # the strip is the page's last download: no request may be in flight
            page.wait_for_timeout(300)
            page.on("request", count)
            values = [round(float(v), 1) for v in np.random.default_rng(len(first)).uniform(-4, 4, moves)]
            slide += page.evaluate(SLIDE_JS, values)
            page.remove_listener("request", count)
        browser.close()
    return {
        "upload_to_first_edit": percentiles(first),
        "upload_to_first_edit_steps": {name: percentiles(ms) for name, ms in steps.items()},
        "upload_to_all_frames_ready": percentiles(ready),
        "slider_input_to_frame_shown": percentiles(slide),
        "requests_while_sliding": len(requests),
    }


def prepare_answers(url: str, path: str) -> tuple[float, float]:
    """Milliseconds from calling /prepare on an uploaded `path` to its first answer and to its last (the same
    where it answers once), read off its event stream."""
    start = time.perf_counter()
    answers = []
    for kind, payload in call_events(url, "prepare", [{"path": path, "meta": {"_type": "gradio.FileData"}}, True, None]):
        if kind in ("error", "refused"):
            raise RuntimeError(f"/prepare failed: {payload}")
        if kind in ("generating", "complete"):
            answers.append((time.perf_counter() - start) * 1000)
    return answers[0], answers[-1]


def http_numbers(url: str, photos: list[Path], uploads: int, server: AppServer, folder: Path, side: int) -> dict:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    times = []
    for photo in photos:
        start = time.perf_counter()
        client.predict(handle_file(str(photo)), 2.0, api_name="/edit")
        times.append((time.perf_counter() - start) * 1000)
    first_look, complete = [], []
    for k in range(len(photos)):  # the page's own event over plain HTTP (no browser, no client downloading files)
        first, done = prepare_answers(url, upload(url, distinct_photo(200 + k, folder, side)))
        first_look.append(first)
        complete.append(done)
    rss_before = server.rss_mb()
    for k in range(uploads):
        client.predict(handle_file(str(distinct_photo(1000 + k, folder))), 2.0, api_name="/edit")
    rss_after = server.rss_mb()
    return {
        "edit_round_trip_new_photo": percentiles(times),
        "prepare_first_look_http": percentiles(first_look),
        "prepare_complete_http": percentiles(complete),
        "rss_mb_before": round(rss_before),
        "rss_mb_after_uploads": round(rss_after),
        "distinct_uploads": uploads,
        "rss_bound_mb": RSS_BOUND_MB,
        "rss_within_bound": rss_after <= RSS_BOUND_MB,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m bench.app", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--photos", type=int, default=5, help="distinct uploads timed in the browser and over HTTP")
    p.add_argument("--moves", type=int, default=60, help="slider moves per photo")
    p.add_argument("--uploads", type=int, default=200, help="distinct /edit uploads before reading the server's RSS")
    p.add_argument("--side", type=int, default=512, help="the photos' width in px (the astronaut's own 512, or 2048)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, AppServer() as server:
        folder = Path(tmp)
        result = {"cpu": cpu_summary(), "cores": os.cpu_count(), "app_start_s": round(server.start_s, 1), "side": args.side}
        photos = [distinct_photo(k, folder, args.side) for k in range(args.photos)]
        result |= browser_numbers(server.url, photos, args.moves)
        result |= http_numbers(
            server.url,
            [distinct_photo(100 + k, folder, args.side) for k in range(args.photos)],
            args.uploads,
            server,
            folder,
            args.side,
        )
        logged = re.search(r" app: CPU: .*; OpenMP: (.*)$", server.log.read_text(), re.MULTILINE)
        result["app_openmp_wait"] = logged.group(1) if logged else "not in the app's log"
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
