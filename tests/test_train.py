import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT
from train.train import main as train_main

FAST = ["--batch-size", "8", "--eval-images", "8", "--workers", "1"]


def run_args(data, cache_dir, out, *extra):
    return ["--data", str(data), "--cache-dir", str(cache_dir), "--out", str(out), *FAST, *extra]


def test_a_few_steps_write_log_grid_checkpoint_and_model(tiny_celeba, tmp_path):
    out = train_main(run_args(tiny_celeba, tmp_path / "cache", tmp_path / "run", "--epochs", "2", "--save-fp16"))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(r["test_psnr"] > 5 and r["test_kl"] >= 0 and r["images_per_s"] > 0 for r in log)
    assert log[1]["train_loss"] < log[0]["train_loss"] * 1.5
    assert (out / "grid_0002.png").stat().st_size > 1000
    assert (out / "model" / "config.json").exists()
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 2 and state["step_in_epoch"] == 0
    assert next(iter(load_file(out / "model" / "model.safetensors").values())).dtype == torch.float16


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tiny_celeba, tmp_path):
    # 38 train images / batch 8 = 4 steps an epoch: stopping at 3 resumes mid-epoch, 6 crosses an epoch
    whole = train_main(run_args(tiny_celeba, tmp_path / "cache", tmp_path / "whole", "--max-steps", "6"))
    train_main(run_args(tiny_celeba, tmp_path / "cache", tmp_path / "parts", "--max-steps", "3"))
    parts = train_main(run_args(tiny_celeba, tmp_path / "cache", tmp_path / "parts", "--max-steps", "6", "--resume"))
    a = load_file(whole / "model" / "model.safetensors")
    b = load_file(parts / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_is_a_clear_error(tiny_celeba, tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint"):
        train_main(run_args(tiny_celeba, tmp_path / "cache", tmp_path / "none", "--resume"))


def test_two_process_ddp_run_with_torchrun(tiny_celeba, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m", "train",
           *run_args(tiny_celeba, tmp_path / "cache", tmp_path / "ddp", "--epochs", "1", "--batch-size", "4")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    args = json.loads((tmp_path / "ddp" / "args.json").read_text())
    assert args["world_size"] == 2
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert log[0]["images_seen"] == 4 * 2 * (38 // 2 // 4)  # each rank takes its own half of the epoch
    assert (tmp_path / "ddp" / "model" / "model.safetensors").exists()
