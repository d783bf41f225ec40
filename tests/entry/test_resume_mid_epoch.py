"""kill -9 in the middle of an epoch, `ckpt_path=last`: the run goes on from the saved batch and ends
with the same files as a run that was never interrupted.

Real runs of `python -m chestx.train` (timm's 0.4 M-parameter `test_resnet`, 32 px, the embedded
real NIH sample with 248 training images, 2 epochs of 31 batches) with the time-based checkpoint every 0.4 s. The interrupted run is killed with SIGKILL as
soon as a mid-epoch `last.ckpt` of its second epoch exists; the resumed run must log where it goes
on, make exactly the optimiser steps that were left, and write byte-identical predictions (test and
validation) and AUROC tables.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

RUN = ("model=timm", "model.name=test_resnet", "data.image_size=32", "loader.batch_size=8", "data.ratios=[0.4,0.1,0.5]",
       "loader.num_workers=0", "trainer.max_epochs=2",
       "trainer.accelerator=cpu", "logger=none", "clinical=none", "subgroups=none", "callbacks.early_stopping=null",
       "callbacks.time_checkpoint.train_time_interval.minutes=0.0067")  # 0.4 s
FILES = ("predictions.csv", "predictions_val.csv", "auroc.csv", "split.csv")
TIMEOUT_S = 600


def _command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "chestx.train", *RUN, *extra, f"hydra.run.dir={run_dir}"]


def _position(ckpt: Path) -> tuple[int, int, int]:
    """(epoch of the loader, batches trained in it, global step) saved in a checkpoint."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    loader = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    return loader["epoch"], loader["batches_done"], state["global_step"]


def _kill_mid_epoch(run_dir: Path, repo_root: Path, epoch: int) -> tuple[int, int, int]:
    """Start a run, SIGKILL it once last.ckpt is in the middle of `epoch`; returns the position it left."""
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(_command(run_dir), cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, seen = time.monotonic() + TIMEOUT_S, None
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before a mid-epoch checkpoint of its second epoch was seen"
            stamp = last.stat().st_mtime_ns if last.exists() else None
            if stamp is not None and stamp != seen:
                seen = stamp
                at_epoch, done, _ = _position(last)
                if at_epoch == epoch and 0 < done < 25:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=60)
                    assert proc.returncode == -signal.SIGKILL
                    return _position(last)  # a later save may have landed before the kill: read it again
            time.sleep(0.05)
        pytest.fail(f"no mid-epoch checkpoint of epoch {epoch} within {TIMEOUT_S} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(repo_root: Path, tmp_path: Path) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run(_command(whole), cwd=repo_root, check=True, timeout=TIMEOUT_S, capture_output=True)
    steps = torch.load(whole / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    per_epoch = steps // 2
    assert per_epoch == 31  # 248 training images in batches of 8

    epoch, done, step = _kill_mid_epoch(cut, repo_root, epoch=1)
    assert epoch == 1 and 0 < done < per_epoch and step == per_epoch + done, (epoch, done, step)
    assert not (cut / "predictions.csv").exists()

    resumed = subprocess.run(_command(cut, "ckpt_path=last"), cwd=repo_root, timeout=TIMEOUT_S,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (cut / "train.log").read_text()
    assert f"Resuming in the middle of epoch 1: {done} of {per_epoch} batches were trained on, continuing with " \
           f"batch {done + 1}" in log
    assert "not resumable" not in resumed.stderr  # Lightning sees a resumable loader
    final = torch.load(cut / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["global_step"] == steps  # exactly the steps that were left, none twice
    for name in FILES:
        assert (cut / name).read_bytes() == (whole / name).read_bytes(), f"{name} differs after the resume"
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (whole, cut))
    assert a["best_epoch"] == b["best_epoch"] and a["test/auroc_mean"] == b["test/auroc_mean"]
