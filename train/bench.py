"""Benchmark: `python -m train.bench` prints one JSON object as its last line.

Measured in one process, on this machine's CPU: training images/s of every path that
`--precision auto --channels-last auto` times (float32 NCHW and channels_last, and bf16 where the
CPU's flags say it is native), the path it keeps (the fastest) and `train_speedup`, the kept path
over plain float32 NCHW, which is therefore never below 1; cache-building images/s; encode(1 image)
and decode(2 latents) latency p50/p95; and, with `--app`, the real app over HTTP: upload (align +
encode + decode, `/prepare`) and slider move (decode only, `/render`) round trips p50/p95, a cached
`/edit`, slider moves/s with 4 concurrent clients (each with its own session), and the slider as a person
sees it in Chromium (release -> new image shown), when Debian's chromium and playwright are installed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from train.speed import SpeedPath, candidates, images_per_s
from vae.model import SmileVAE

ROOT = Path(__file__).resolve().parents[1]


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def train_rates(batch: int, steps: int) -> dict:
    """What `python -m train` does on this CPU: time each candidate path and keep the fastest."""
    x = torch.rand(batch, 3, 128, 128)
    torch.manual_seed(0)
    paths = candidates(torch.device("cpu"))
    rates = {path: images_per_s(path, x, steps) for path in paths}
    chosen = max(rates, key=rates.get)
    fp32 = rates[SpeedPath("fp32", False)]
    result = {"train_images_per_s": {p.name: round(r, 2) for p, r in rates.items()}, "fast_path": chosen.name,
              "train_fp32_images_per_s": round(fp32, 2), "train_fast_images_per_s": round(rates[chosen], 2),
              "train_speedup": round(rates[chosen] / fp32, 3)}
    if all(p.precision != "bf16" for p in paths):  # show why bf16 is not a candidate here (tiny run: it is slow)
        result["train_bf16_images_per_s"] = round(images_per_s(SpeedPath("bf16", True), x[:4], 1), 2)
    return result


def cache_rate(data: Path | None, count: int) -> float | None:
    """Images/s of building a fresh cache for `count` images of a real CelebA-layout folder."""
    from train.cache import build_cache
    from train.data import load_index

    if data is None or not (data / "list_attr_celeba.txt").exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / data.name
        (root / "img_align_celeba").mkdir(parents=True)
        lines = (data / "list_attr_celeba.txt").read_text().splitlines()
        rows = lines[2:2 + count]
        for row in rows:
            name = row.split()[0]
            os.symlink((data / "img_align_celeba" / name).resolve(), root / "img_align_celeba" / name)
        (root / "list_attr_celeba.txt").write_text(f"{len(rows)}\n{lines[1]}\n" + "\n".join(rows) + "\n")
        start = time.perf_counter()
        build_cache(load_index([root]), Path(tmp) / "cache")
        return len(rows) / (time.perf_counter() - start)


def latency(fn, repeats: int) -> dict:
    with torch.inference_mode():
        for _ in range(3):
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return percentiles(times)


def browser_slider_moves(url: str, photo: Path, moves: int) -> dict:
    """What a person waits for: Chromium from slider release until the new 'more' image is shown."""
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if not chromium:
        return {"browser_slider_move": "skipped: needs Debian's chromium and playwright"}
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        page = browser.new_page()
        page.goto(url)
        page.locator("#photo input[type=file]").set_input_files(str(photo))
        page.wait_for_function("() => document.querySelector('#more img')", timeout=60_000)
        slider = page.locator("#strength input[type=range]")
        for i in range(moves):
            old = page.locator("#more img").get_attribute("src")
            slider.fill(f"{1.0 + (i % 20) / 10:.1f}")
            start = time.perf_counter()
            slider.dispatch_event("pointerup")
            page.wait_for_function("""(old) => { const img = document.querySelector('#more img');
                                       return img && img.src !== old && img.complete; }""", arg=old, timeout=60_000)
            times.append(time.perf_counter() - start)
            page.wait_for_timeout(400)  # let the chained strip finish, as a person pausing between moves
        browser.close()
    return {"browser_slider_move": percentiles(times)}


def app_numbers(requests: int) -> dict:
    """Round trips through the real HTTP API of `python app.py` started here."""
    from gradio_client import Client, handle_file
    from PIL import Image
    from skimage.data import astronaut

    port = 7000 + os.getpid() % 1000
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = Path(tempfile.mkdtemp())
    try:
        url = f"http://127.0.0.1:{port}/"
        while True:
            try:
                client = Client(url, verbose=False)
                break
            except Exception:
                if proc.poll() is not None or time.perf_counter() - started > 180:
                    raise RuntimeError("app did not start")
                time.sleep(0.5)
        ready_s = time.perf_counter() - started
        base = astronaut()
        uploads, moves, edits = [], [], []
        for i in range(requests):
            photo = base.copy()
            photo[0, 0] = (i, i // 256, 7)  # new content: the server must align and encode again
            path = tmp / f"photo_{i}.png"
            Image.fromarray(photo).save(path)
            start = time.perf_counter()
            client.predict(handle_file(str(path)), api_name="/prepare")  # what the page does on upload
            uploads.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.predict(1.0 + (i % 20) / 10, api_name="/render")  # what the page does on slider release
            moves.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.predict(handle_file(str(path)), 2.5, api_name="/edit")  # a script: cached photo, new strength
            edits.append(time.perf_counter() - start)
        lean = Client(url, verbose=False, download_files=False)  # server round trip without fetching the images
        lean.predict(handle_file(str(tmp / "photo_0.png")), api_name="/prepare")
        no_download = []
        for i in range(requests):
            start = time.perf_counter()
            lean.predict(1.0 + (i % 20) / 10, api_name="/render")
            no_download.append(time.perf_counter() - start)
        empty = Client(url, verbose=False)  # a session with no photo: /render returns at once (framework overhead)
        overhead = []
        for i in range(requests):
            start = time.perf_counter()
            empty.predict(1.0, api_name="/render")
            overhead.append(time.perf_counter() - start)
        done, lock = [0], threading.Lock()

        def worker(k: int) -> None:
            c = Client(url, verbose=False)
            c.predict(handle_file(str(tmp / f"photo_{k}.png")), api_name="/prepare")
            for j in range(requests // 4 + 1):
                c.predict(0.5 + j / 10, api_name="/render")
                with lock:
                    done[0] += 1

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        throughput = done[0] / (time.perf_counter() - start)
        browser = browser_slider_moves(url, tmp / "photo_0.png", requests)
        return {"app_ready_s": round(ready_s, 1), **browser, "upload": percentiles(uploads), "slider_move": percentiles(moves),
                "edit_cached": percentiles(edits), "slider_move_without_image_download": percentiles(no_download),
                "empty_event_round_trip": percentiles(overhead), "slider_move_p50_ms": percentiles(moves)["p50_ms"],
                "upload_p50_ms": percentiles(uploads)["p50_ms"], "concurrent4_slider_moves_per_s": round(throughput, 2),
                "requests": requests}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "celeba-subset")
    p.add_argument("--cache-images", type=int, default=6000, help="includes starting the worker processes")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--app", action="store_true", help="also measure the app over HTTP")
    p.add_argument("--requests", type=int, default=30)
    args = p.parse_args(argv)
    result: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), **train_rates(args.batch_size, args.steps)}
    print(f"train {result['train_images_per_s']} img/s: keeps {result['fast_path']}", flush=True)
    rate = cache_rate(args.data, args.cache_images)
    result["cache_images_per_s"] = None if rate is None else round(rate, 1)
    model = SmileVAE.load(ROOT / "assets") if (ROOT / "assets" / "config.json").exists() else SmileVAE().eval()
    for layout in ("contiguous", "channels_last"):
        m = model.to(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
        x, z = torch.rand(1, 3, 128, 128), torch.randn(2, 64)
        result[f"encode1_{layout}"] = latency(lambda: m.encode(x), args.repeats)
        result[f"decode2_{layout}"] = latency(lambda: m.decode(z), args.repeats)
    result["decode2_p50_ms"] = result["decode2_channels_last"]["p50_ms"]  # what the app uses
    if args.app:
        result.update(app_numbers(args.requests))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
