"""How this CPU runs the model, decided in one place for training, the photo path and the mirror.

bf16 is only ever tried where the CPU's own flags say it computes bf16 in hardware (avx512_bf16 or
amx_bf16). `torch.ops.mkldnn._is_mkldnn_bf16_supported()` also answers True on AVX-512 and AVX2 CPUs
without it, where oneDNN emulates bf16 10-100x slower than fp32 (one decode of two latents: 3,872 ms
against 46 ms on a 2-core AVX2 EPYC), and timing that path at every start cost the app ~20 s there.
Among the paths a CPU does run natively, callers time the candidates and keep the fastest.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
FLAGS_THAT_MATTER = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
BELOW_BF16_ISAS = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"})
CPUINFO = Path("/proc/cpuinfo")


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


@cache
def inference_precisions() -> tuple[str, ...]:
    """The precisions worth timing for inference on this CPU: fp32, and bf16 only where it is native."""
    return ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",)


def cpu_summary(cpuinfo: Path = CPUINFO) -> dict:
    """The CPU's model name and the flags that decide its path: what a benchmark prints beside its figures."""
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
    }
