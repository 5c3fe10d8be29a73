"""How this CPU runs the model, decided in one place for training, the photo path and the mirror.

bf16 is only ever tried where the CPU's own flags say it computes bf16 in hardware (avx512_bf16 or
amx_bf16). `torch.ops.mkldnn._is_mkldnn_bf16_supported()` also answers True on AVX-512 and AVX2 CPUs
without it, where oneDNN emulates bf16 10-100x slower than fp32 (one decode of two latents: 3,872 ms
against 46 ms on a 2-core AVX2 EPYC), and timing that path at every start cost the app ~20 s there.
Among the paths a CPU does run natively, callers time the candidates and keep the fastest.

How torch's OpenMP threads wait is decided here too, before torch loads (`wait_briefly_for_work`): by
default an idle thread spins 300,000 times before it sleeps, and on two cores with anything else running
(another process, a browser, a busy neighbour on a shared host) the spinning and the barriers made the
page's path 4-10x slower than on a quiet machine. Spinning 20,000 times costs a quiet machine nothing
and a busy one about 2x (3x on the first look); spinning less would halve that again but costs every
quiet call 15-30% (python -m bench.openmp). Several requests in one process need nothing: libgomp spins
briefly by itself when its own threads outnumber the cores.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import cache
from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
FLAGS_THAT_MATTER = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
BELOW_BF16_ISAS = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"})
CPUINFO = Path("/proc/cpuinfo")
OPENMP_SPIN_COUNT = "20000"  # chosen with python -m bench.openmp
LIBGOMP_SPIN_COUNT = "300000"  # libgomp's own default (OMP_WAIT_POLICY and GOMP_SPINCOUNT unset)
OPENMP_WAIT_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")  # what says how libgomp's idle threads wait
# What holds a library below the CPU's own instructions (e.g. an AVX-512 Xeon standing in for an AVX2-only CPU:
# oneDNN, ATen, MKL and numpy each read their own): a benchmark's figures are that CPU class's only with them.
INSTRUCTION_CAPS = (
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ATEN_CPU_CAPABILITY",
    "MKL_ENABLE_INSTRUCTIONS",
    "NPY_DISABLE_CPU_FEATURES",
    "NPY_ENABLE_CPU_FEATURES",
)
_openmp_wait: str | None = None  # what wait_briefly_for_work found or set in this process


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags, as the kernel lists them (empty where there is no /proc/cpuinfo)."""
    if not cpuinfo.exists():
        return frozenset()
    return frozenset(flag for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for flag in line.split())


def cpu_has_native_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """True when the CPU's own flags say it computes bf16 in hardware (not what oneDNN claims), and oneDNN
    is not held below the instructions that do it (ONEDNN_MAX_CPU_ISA, e.g. AVX2: then bf16 is emulated)."""
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper() in BELOW_BF16_ISAS
    return bool(cpu_flags(cpuinfo) & NATIVE_BF16_FLAGS) and not capped


def wait_briefly_for_work() -> str:
    """Let idle OpenMP threads spin only briefly before they sleep (GOMP_SPINCOUNT), unless the environment
    already says how they wait. libgomp reads this once, when torch loads it: call before importing torch.
    Returns the setting in effect (`openmp_wait` answers it later)."""
    global _openmp_wait
    if _openmp_wait is not None:  # called before in this process: its own setting is not "from the environment"
        return _openmp_wait
    if "torch" in sys.modules:
        _openmp_wait = f"too late: torch was loaded first (GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')})"
    elif any(name in os.environ for name in OPENMP_WAIT_VARIABLES):
        _openmp_wait = " ".join(f"{k}={os.environ[k]}" for k in OPENMP_WAIT_VARIABLES if k in os.environ)
        _openmp_wait += " (from the environment)"
    else:
        os.environ["GOMP_SPINCOUNT"] = OPENMP_SPIN_COUNT
        _openmp_wait = f"GOMP_SPINCOUNT={OPENMP_SPIN_COUNT}"
    return _openmp_wait


def openmp_wait() -> str:
    """How this process's OpenMP threads wait, as `wait_briefly_for_work` left it: what benchmarks and the app's log report."""
    return _openmp_wait or "not set: wait_briefly_for_work() was not called"


@cache
def inference_precisions() -> tuple[str, ...]:
    """The precisions worth timing for inference on this CPU: fp32, and bf16 only where it is native."""
    return ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",)


def cpu_summary(cpuinfo: Path = CPUINFO) -> dict:
    """The CPU's model name, the flags that decide its path and any instruction caps in the environment: what a
    benchmark prints beside its figures."""
    name = platform.processor() or "unknown"
    if cpuinfo.exists():
        name = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")), name
        )
    flags = cpu_flags(cpuinfo)
    return {
        "model": name,
        "flags": {flag: flag in flags for flag in FLAGS_THAT_MATTER},
        "native_bf16": cpu_has_native_bf16(cpuinfo),
        "instruction_caps": {cap: os.environ[cap] for cap in INSTRUCTION_CAPS if cap in os.environ},
    }
