"""The training path is chosen by timing candidates that the CPU really runs natively; OpenMP's waiting is
set before torch loads."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.model import train_rates
from train.speed import SpeedPath, candidates, fastest
from vae.runtime import (
    INSTRUCTION_CAPS,
    LIBGOMP_SPIN_COUNT,
    OPENMP_SPIN_COUNT,
    OPENMP_WAIT_VARIABLES,
    cpu_has_native_bf16,
    cpu_summary,
)

ROOT = Path(__file__).resolve().parents[1]


def test_speed_trial_times_every_path_without_touching_the_run():
    x = torch.rand(2, 3, 128, 128)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    paths = [SpeedPath("fp32", False), SpeedPath("fp32", True)]
    chosen, rates = fastest(paths, x, steps=1)
    assert torch.equal(torch.get_rng_state(), before)  # the real run's random draws are unchanged
    assert set(rates) == {"fp32", "fp32+channels_last"} and all(r > 0 for r in rates.values())
    assert rates[chosen.name] == max(rates.values())
    assert fastest(paths[:1], x) == (paths[0], {})  # nothing to choose: nothing timed


def test_bf16_is_a_candidate_only_where_the_cpu_flags_say_it_is_native(tmp_path):
    xeon = tmp_path / "cpuinfo"
    xeon.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n")
    assert not cpu_has_native_bf16(xeon)  # oneDNN says "supported" on such a CPU, and bf16 runs ~3x slower there
    xeon.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_has_native_bf16(xeon)
    assert not cpu_has_native_bf16(tmp_path / "missing")


def test_a_cpu_held_to_avx2_says_so_beside_the_figures(tmp_path, monkeypatch):
    amx = tmp_path / "cpuinfo"
    amx.write_text("processor\t: 0\nmodel name\t: A Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n")
    for name in INSTRUCTION_CAPS:
        monkeypatch.delenv(name, raising=False)
    assert cpu_summary(amx)["native_bf16"] and cpu_summary(amx)["instruction_caps"] == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    summary = cpu_summary(amx)
    assert summary["instruction_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    assert summary["flags"]["amx_bf16"] and not summary["native_bf16"]  # the flags are the CPU's; the path is fp32


def test_bench_times_exactly_the_paths_training_chooses_from_on_this_cpu():
    result = train_rates(batch=2, steps=1)
    rates = result["train_images_per_s"]
    trained = {path.name for path in candidates(torch.device("cpu"))}
    assert set(rates) == trained  # the bench's figures are the choices `python -m train --precision auto` has here
    assert ("bf16+channels_last" in rates or "bf16" in rates) == cpu_has_native_bf16()
    assert all(r > 0 for r in rates.values()) and result["fast_path"] in trained
    assert result["train_speedup"] == pytest.approx(rates[result["fast_path"]] / rates["fp32"], rel=0.02)


def _openmp_wait_in_a_fresh_process(env: dict[str, str], torch_first: bool = False) -> tuple[str, str]:
    """What `wait_briefly_for_work` answers in a new interpreter, and GOMP_SPINCOUNT in its environment once torch is loaded."""
    code = (
        ("import torch\n" if torch_first else "")
        + "import os\nfrom vae.runtime import wait_briefly_for_work\nsaid = wait_briefly_for_work()\nprint(said)\n"
        + "assert wait_briefly_for_work() == said\n"  # a second call reports this process's own choice, not the environment's
        + "import torch\nprint(os.environ.get('GOMP_SPINCOUNT', 'unset'))\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in OPENMP_WAIT_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, check=True
    )
    said, seen = done.stdout.strip().splitlines()
    return said, seen


def test_openmp_threads_spin_briefly_unless_the_environment_or_an_early_torch_says_otherwise():
    assert _openmp_wait_in_a_fresh_process({}) == (f"GOMP_SPINCOUNT={OPENMP_SPIN_COUNT}", OPENMP_SPIN_COUNT)
    said, seen = _openmp_wait_in_a_fresh_process({"GOMP_SPINCOUNT": LIBGOMP_SPIN_COUNT})
    assert seen == LIBGOMP_SPIN_COUNT and "from the environment" in said  # a benchmark's baseline is honoured
    said, seen = _openmp_wait_in_a_fresh_process({"OMP_WAIT_POLICY": "PASSIVE"})
    assert seen == "unset" and said == "OMP_WAIT_POLICY=PASSIVE (from the environment)"
    said, seen = _openmp_wait_in_a_fresh_process({}, torch_first=True)
    assert said.startswith("too late") and seen == "unset"  # libgomp has read its settings already: nothing pretends
