"""Benchmark: `python -m bench.model` prints one JSON object as its last line.

Measured in one process, on this machine's CPU: training images/s of every path that
`--precision auto --channels-last auto` times (float32 NCHW and channels_last, and bf16 where the
CPU's flags say it is native), the path it keeps (the fastest) and `train_speedup`, the kept path
over plain float32 NCHW, which is therefore never below 1; cache-building images/s; encode(1 image)
and decode(2 latents) latency p50/p95. The app as a person feels it: `python -m bench.app`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
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
    result = {
        "train_images_per_s": {p.name: round(r, 2) for p, r in rates.items()},
        "fast_path": chosen.name,
        "train_fp32_images_per_s": round(fp32, 2),
        "train_fast_images_per_s": round(rates[chosen], 2),
        "train_speedup": round(rates[chosen] / fp32, 3),
    }
    if all(p.precision != "bf16" for p in paths):  # show why bf16 is not a candidate here (tiny run: it is slow)
        result["train_bf16_images_per_s"] = round(images_per_s(SpeedPath("bf16", True), x[:4], 1), 2)
    return result


def cache_rate(data: Path | None, count: int) -> float | None:
    """Images/s of building a fresh cache for `count` images of a real CelebA-layout folder."""
    from celeba.cache import build_cache
    from celeba.reader import load_index

    if data is None or not (data / "list_attr_celeba.txt").exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / data.name
        (root / "img_align_celeba").mkdir(parents=True)
        lines = (data / "list_attr_celeba.txt").read_text().splitlines()
        rows = lines[2 : 2 + count]
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m bench.model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "celeba-subset")
    p.add_argument("--cache-images", type=int, default=6000, help="includes starting the worker processes")
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args(argv)
    result: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), **train_rates(args.batch_size, args.steps)}
    print(f"train {result['train_images_per_s']} img/s: keeps {result['fast_path']}", flush=True)
    rate = cache_rate(args.data, args.cache_images)
    result["cache_images_per_s"] = None if rate is None else round(rate, 1)
    if rate is None:  # say why the figure is missing and how to get it
        result["cache_images_per_s_missing"] = (
            f"no CelebA-layout folder at {args.data} (list_attr_celeba.txt): "
            "give one with --data DIR to time building the image cache"
        )
        print(f"cache_images_per_s: not measured: {result['cache_images_per_s_missing']}", flush=True)
    model = SmileVAE.load(ROOT / "assets") if (ROOT / "assets" / "config.json").exists() else SmileVAE().eval()
    for layout in ("contiguous", "channels_last"):
        m = model.to(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
        x, z = torch.rand(1, 3, 128, 128), torch.randn(2, 64)
        result[f"encode1_{layout}"] = latency(lambda: m.encode(x), args.repeats)
        result[f"decode2_{layout}"] = latency(lambda: m.decode(z), args.repeats)
    result["decode2_p50_ms"] = result["decode2_channels_last"]["p50_ms"]  # what the app uses
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
