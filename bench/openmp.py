"""How torch's OpenMP threads wait for work, against the page's path: `python -m bench.openmp`.

Runs `python -m bench.stages` in a fresh process per variant (libgomp reads how to wait once, when torch
loads), on a quiet machine and with one core taken by another process (`--busy`: a second visitor's
edit, the upload checks or a browser on the same two cores), and prints each variant's medians in ms:
the first look (upload to the first edited face, in process) and the whole path. Variants: libgomp's
default (idle threads spin 300,000 times before sleeping), the app's (nothing set, so
`vae.runtime.wait_briefly_for_work` decides: `vae.runtime.OPENMP_SPIN_COUNT`), 1,000 spins, passive (no
spinning) and one thread (spinning as the app's). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from vae.runtime import LIBGOMP_SPIN_COUNT, OPENMP_WAIT_VARIABLES, cpu_summary

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "libgomp default": {"GOMP_SPINCOUNT": LIBGOMP_SPIN_COUNT},
    "app": {},  # nothing set: vae.runtime.wait_briefly_for_work decides, as in the app
    "spin 1,000": {"GOMP_SPINCOUNT": "1000"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one thread": {"OMP_NUM_THREADS": "1"},
}
SHOWN = ("detect_and_align", "first_look_total", "decode_all_strengths", "live_frame_views", "total")


def stages_under(env: dict[str, str], busy: bool, sides: list[int], repeats: int) -> dict:
    """bench.stages' medians in a fresh process with `env` added to this one's (minus any earlier OpenMP say)."""
    base = {k: v for k, v in os.environ.items() if k not in (*OPENMP_WAIT_VARIABLES, "OMP_NUM_THREADS")}
    command = [sys.executable, "-m", "bench.stages", "--repeats", str(repeats), "--sides", *map(str, sides)]
    done = subprocess.run(command + ["--busy"] * busy, cwd=ROOT, env={**base, **env}, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.openmp", description=__doc__)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sides", type=int, nargs="*", default=[512, 2048])
    args = p.parse_args(argv)
    result: dict = {"cpu": cpu_summary(), "cores": os.cpu_count(), "variants": VARIANTS, "ms": {}}
    print(f"{'':40}" + "".join(f"{name:>22}" for name in SHOWN))
    for busy in (False, True):
        for name, env in VARIANTS.items():
            run = stages_under(env, busy, args.sides, args.repeats)
            for side, stages in run["stages_ms"].items():
                label = f"{name}, {'one core busy' if busy else 'quiet'}, {side}"
                result["ms"][label] = {stage: stages[stage] for stage in SHOWN}
                print(f"{label:40}" + "".join(f"{stages[stage]:>22.0f}" for stage in SHOWN), flush=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
