import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file

from celeba.split import Split
from train.checkpoint import load_checkpoint
from train.train import main as train_main

# fixed numerics: --precision auto would time the paths and could pick another one per run
FAST = ["--batch-size", "8", "--eval-images", "8", "--workers", "1", "--precision", "fp32", "--channels-last", "on"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def run_args(data, cache_dir, out, *extra):
    return ["--data", str(data), "--cache-dir", str(cache_dir), "--out", str(out), *FAST, *extra]


def test_epochs_write_log_grid_checkpoint_split_and_the_best_validation_model(tiny_celeba, tmp_path):
    out = train_main(run_args(tiny_celeba, tmp_path / "cache", tmp_path / "run", "--epochs", "3", "--save-fp16"))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    for r in log:
        assert r["validation_psnr"] > 5 and r["train_psnr"] > 5 and r["validation_kl"] >= 0 and r["images_per_s"] > 0
        # PSNR has one definition: per image from mu, averaged, so it is never below the PSNR of the mean MSE
        assert r["validation_psnr"] >= -10 * np.log10(r["validation_mse"]) - 1e-6
    best = min(log, key=lambda r: r["validation_loss"])["epoch"]
    assert log[-1]["best_epoch"] == best
    state = load_checkpoint(out / "checkpoint.pt", torch.device("cpu"))
    assert state["epoch"] == 3 and state["step_in_epoch"] == 0 and state["best"]["epoch"] == best
    assert (out / "grid_0003.png").stat().st_size > 1000
    split = Split.load(out)
    assert split.counts() == {"train": 38, "validation": 5, "test": 5}
    assert Split.load(out / "model") == split  # travels with the model
    saved = load_file(out / "model" / "model.safetensors")
    assert next(iter(saved.values())).dtype == torch.float16
    last_is_best = all(torch.equal(saved[k], v.half()) for k, v in state["model"].items())
    assert last_is_best == (best == 3)


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tiny_celeba, tmp_path):
    # 38 train images / batch 8 = 4 steps an epoch: stopping at 3 resumes mid-epoch, 6 crosses an epoch
    whole = train_main(run_args(tiny_celeba, tmp_path / "cache", tmp_path / "whole", "--max-steps", "6"))
    train_main(run_args(tiny_celeba, tmp_path / "cache", tmp_path / "parts", "--max-steps", "3"))
    # a resumed run reads its own split back: other split flags change nothing
    parts = train_main(
        run_args(
            tiny_celeba,
            tmp_path / "cache",
            tmp_path / "parts",
            "--max-steps",
            "6",
            "--resume",
            "--seed",
            "0",
            "--test-fraction",
            "0.5",
        )
    )
    a = load_checkpoint(whole / "checkpoint.pt", torch.device("cpu"))
    b = load_checkpoint(parts / "checkpoint.pt", torch.device("cpu"))
    assert a["global_step"] == b["global_step"] == 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert Split.load(whole) == Split.load(parts)


def test_resume_without_checkpoint_is_a_clear_error(tiny_celeba, tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint"):
        train_main(run_args(tiny_celeba, tmp_path / "cache", tmp_path / "none", "--resume"))


def train_process(data, cache_dir, out, *extra) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "train", *run_args(data, cache_dir, out, "--epochs", "2", *extra)]
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigint_mid_epoch_stops_at_a_step_boundary_and_resumes_to_the_same_parameters(tiny_celeba, tmp_path):
    whole = train_process(tiny_celeba, tmp_path / "cache", tmp_path / "whole")
    assert whole.wait(timeout=600) == 0, whole.stderr.read()[-3000:]
    cut = train_process(tiny_celeba, tmp_path / "cache", tmp_path / "cut")
    seen = bytearray()

    def read_stderr() -> None:
        for byte in iter(lambda: cut.stderr.read(1), b""):
            seen.extend(byte)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    deadline = time.time() + 300
    while not re.search(rb"epoch 1/2: +\d+%\|[^|]*\| [12]/4", bytes(seen)):  # the progress bar shows step 1 or 2 done
        assert cut.poll() is None and time.time() < deadline, bytes(seen)[-3000:]
        time.sleep(0.01)
    cut.send_signal(signal.SIGINT)
    assert cut.wait(timeout=300) == 0
    reader.join(timeout=10)
    stopped = load_checkpoint(tmp_path / "cut" / "checkpoint.pt", torch.device("cpu"))
    assert stopped["epoch"] == 0 and 0 < stopped["step_in_epoch"] < 4  # mid-epoch, on a step boundary
    assert stopped["global_step"] == stopped["step_in_epoch"]
    resumed = train_process(tiny_celeba, tmp_path / "cache", tmp_path / "cut", "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt", torch.device("cpu"))
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt", torch.device("cpu"))
    assert a["global_step"] == b["global_step"] == 8
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(x, y) for x, y in zip(a["optimizer"]["state"][0].values(), b["optimizer"]["state"][0].values()))


def test_two_process_ddp_run_with_torchrun(tiny_celeba, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        "-m",
        "train",
        *run_args(tiny_celeba, tmp_path / "cache", tmp_path / "ddp", "--epochs", "1", "--batch-size", "4"),
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    args = json.loads((tmp_path / "ddp" / "args.json").read_text())
    assert args["world_size"] == 2
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert log[0]["images_seen"] == 4 * 2 * (38 // 2 // 4)  # each rank takes its own half of the epoch
    assert (tmp_path / "ddp" / "model" / "model.safetensors").exists()


def test_resume_with_another_batch_size_is_refused_by_name_and_args_json_keeps_the_first_command(tiny_celeba, tmp_path):
    first = run_args(tiny_celeba, tmp_path / "cache", tmp_path / "run", "--max-steps", "1")
    train_main([*first, "--batch-size", "16"])  # after FAST's --batch-size 8: argparse keeps the last
    with pytest.raises(SystemExit, match=r"--batch-size 16 \(now 64\)"):
        train_main([*first, "--batch-size", "64", "--resume"])
    with pytest.raises(SystemExit, match="needs the data.*--data " + re.escape(str(tiny_celeba))):
        train_main(["--out", str(tmp_path / "run"), *FAST, "--batch-size", "16", "--resume"])
    train_main(
        [*run_args(tiny_celeba, tmp_path / "cache", tmp_path / "run", "--max-steps", "3"), "--batch-size", "16", "--resume"]
    )
    recorded = json.loads((tmp_path / "run" / "args.json").read_text())
    assert recorded["batch_size"] == 16 and recorded["max_steps"] == 3 and recorded["resumed"][0]["step"] == 1
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["images_seen"] for r in log] == [2 * 16]  # 38 train images: 2 steps of 16 an epoch
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt", torch.device("cpu"))["images_seen"] == 3 * 16
