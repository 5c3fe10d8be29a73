"""Decoder levers: `python -m bench.decoder_levers` prints one JSON object as its last line.

The decoder is most of an edit's time (the page decodes 19 latents per photo, the mirror 2 per encoded frame).
In one process on this CPU, each way of running the shipped decoder against the one the app keeps (fp32
eager; bf16 where the CPU has it natively, `vae.runtime`): milliseconds for 2 and 19 latents (median of
`--repeats`, after a call of each size), the time its first call took (building kernels), and how far its
images are from fp32's in 8-bit levels (largest and mean over 19 latents drawn from the prior). A variant
that fails to build or run here is reported as failed, with the error. Pause any background training
while it runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vae.runtime import cpu_summary, inference_precisions, openmp_wait, wait_briefly_for_work

wait_briefly_for_work()  # as the app does, before torch loads
import torch  # noqa: E402

from vae.editor import SmileEditor  # noqa: E402
from vae.model import SmileVAE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

Decode = Callable[[torch.Tensor], torch.Tensor]


def median_ms(decode: Decode, z: torch.Tensor, repeats: int) -> float:
    decode(z)  # a compiled variant builds its kernels for each batch size on its first call of it
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decode(z)
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 2)


def static_int8(model: SmileVAE, calibration: torch.Tensor) -> Decode:
    """Post-training static int8 of the dense layer and every convolution (FX graph mode, the x86 backend),
    its activation ranges calibrated on decodes of latents from the prior."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    decoder = torch.nn.Sequential(copy.deepcopy(model.decoder_input), *copy.deepcopy(model.decoder)).eval()
    prepared = prepare_fx(decoder, get_default_qconfig_mapping("x86"), (calibration[:2],))
    with torch.no_grad():  # not inference mode: the observers record the ranges in their buffers
        prepared(calibration)
    return convert_fx(prepared)


def dynamic_int8(model: SmileVAE) -> Decode:
    """int8 weights for the dense layer only, quantised per call (the convolutions stay fp32)."""
    quantised = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    return quantised.decode


def variants(model: SmileVAE, calibration: torch.Tensor) -> dict[str, Callable[[], Decode]]:
    """name -> a builder of the decode function (built lazily: a failure is that variant's, not the run's)."""
    found: dict[str, Callable[[], Decode]] = {"fp32 eager (kept)": lambda: model.decode}
    if "bf16" in inference_precisions():
        bf16 = copy.deepcopy(model).to(torch.bfloat16)
        found["bf16 copy (kept where native)"] = lambda: lambda z: bf16.decode(z.to(torch.bfloat16))
    found["fp32, torch.compile (inductor)"] = lambda: torch.compile(model.decode)
    found["dynamic int8, dense layer"] = lambda: dynamic_int8(model)
    found["static int8, dense layer and convolutions (FX, x86)"] = lambda: static_int8(model, calibration)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "assets"))
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = SmileEditor.from_pretrained(args.model).model  # as the app runs it (channels_last weights)
    calibration = torch.randn(64, model.latent_dim)
    z19, z2 = torch.randn(19, model.latent_dim), torch.randn(2, model.latent_dim)
    result: dict = {
        "cpu": cpu_summary(),
        "openmp_wait": openmp_wait(),
        "threads": torch.get_num_threads(),
        "compiler": shutil.which("c++") or shutil.which("gcc"),
    }
    with torch.inference_mode():
        reference = model.decode(z19).float()
        for name, build in variants(model, calibration).items():
            try:
                start = time.perf_counter()
                decode = build()
                first = decode(z19).float()
                built_s = time.perf_counter() - start
            except Exception as error:  # a lever that fails here (no compiler, an unsupported layer) is a result too
                result[name] = {"failed": f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"}
                continue
            levels = (first - reference).abs() * 255
            result[name] = {
                "decode2_ms": median_ms(decode, z2, args.repeats),
                "decode19_ms": median_ms(decode, z19, args.repeats),
                "first_call_s": round(built_s, 2),
                "max_levels": round(float(levels.max()), 2),
                "mean_levels": round(float(levels.mean()), 3),
            }
            print(name, result[name], flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
