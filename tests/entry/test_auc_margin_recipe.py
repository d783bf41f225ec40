"""The two-stage AUC-M recipe as one command (experiment=auc_margin_sample, chestx._stages) on the embedded real NIH
sample: both stages' run folders, the class priors in the checkpoint, PESG's epoch decay, the report's two columns;
and a SIGKILL in each stage followed by `ckpt_path=last`, which finishes the run without training anything twice.

timm's 0.4 M-parameter `test_resnet` at 32 px: these runs check the recipe's machinery, not a backbone.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from chestx.comparison.build import build_report
from chestx.core.run_folder import STAGE_ONE_DIR
from chestx.models.auc_margin import class_priors
from chestx.runs.discover import label_runs, load_runs
from chestx.train import train

pytestmark = pytest.mark.slow

TINY_NET = ("model=timm", "model.name=test_resnet", "data.image_size=32")
TIMEOUT_S = 600


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_two_stage_recipe_end_to_end_and_in_the_report(compose, tiny_overrides, tmp_path: Path) -> None:
    cfg = compose([*tiny_overrides, "experiment=auc_margin_sample", *TINY_NET, "stage_two.trainer.max_epochs=2",
                   "clinical=none"], tmp_path)
    metrics = train(cfg)
    stage_one = tmp_path / STAGE_ONE_DIR
    first = json.loads((stage_one / "metrics.json").read_text())
    assert first["status"] == "ok" and first["stage"] == "pretrain" and first["init_from"] is None
    assert metrics["status"] == "ok" and metrics["stage"] == "finetune"
    assert metrics["init_from"] == first["best_checkpoint"] == str(stage_one / "checkpoints" / "best.ckpt")
    assert (tmp_path / "predictions.csv").is_file() and (stage_one / "predictions.csv").is_file()
    assert "stage_two" not in (tmp_path / "config.yaml").read_text()
    assert "PESGEpochDecay" in (tmp_path / "config.yaml").read_text()
    assert "MaskedBCELoss" in (stage_one / "config.yaml").read_text()

    # the class priors: the training split's known labels, in the checkpoint (chestx entry and state dict)
    data = instantiate(cfg.data)
    data.prepare()
    split = pd.read_csv(tmp_path / "split.csv")
    assert sorted(data.split_frame("train")["image_id"]) == sorted(split.loc[split["split"] == "train", "image_id"])
    expected = class_priors(data.train_labels())
    last = _ckpt(tmp_path / "checkpoints" / "last.ckpt")
    np.testing.assert_allclose(last["chestx"]["class_priors"], expected, rtol=1e-6)
    np.testing.assert_allclose(last["state_dict"]["loss_fn.libauc_loss.p"].numpy(), expected, rtol=1e-6)
    assert "class_priors" not in _ckpt(stage_one / "checkpoints" / "last.ckpt")["chestx"]
    # PESG: lr 0.05 divided by 10 after each of the 2 epochs, alpha moved by the ascent
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.05 / 100)
    assert float(last["state_dict"]["loss_fn.libauc_loss.alpha"].abs().sum()) > 0

    # re-scoring the AUC-M model without training (fit=false) and with the default loss: its test AUROC again
    tiny = [o for o in tiny_overrides if not o.startswith("clinical.")]  # this run switches the clinical step off
    rescored = train(compose([*tiny, *TINY_NET, "fit=false", f"ckpt_path={metrics['best_checkpoint']}",
                              "clinical=none", "subgroups=none"], tmp_path / "rescored"))
    assert float(rescored["test/auroc_mean"]) == pytest.approx(float(metrics["test/auroc_mean"]), abs=1e-6)

    runs = load_runs([tmp_path])
    label_runs(runs)
    assert sorted(r.label for r in runs) == ["test_resnet stage=finetune", "test_resnet stage=pretrain"]
    report = build_report([tmp_path], tmp_path / "report", n_resamples=20)
    table = (tmp_path / "report" / "auroc_table.md").read_text()
    assert "test_resnet stage=finetune" in table and "test_resnet stage=pretrain" in table
    assert report is not None


RUN = ("experiment=auc_margin_sample", *TINY_NET, "loader.batch_size=8", "data.ratios=[0.4,0.1,0.5]",
       "loader.num_workers=0", "trainer.max_epochs=1", "stage_two.trainer.max_epochs=1", "trainer.accelerator=cpu",
       "logger=none", "clinical=none", "subgroups=none",
       "callbacks.time_checkpoint.train_time_interval.minutes=0.0067")  # a mid-epoch last.ckpt every 0.4 s


def _command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "chestx.train", *RUN, *extra, f"hydra.run.dir={run_dir}"]


def _steps(ckpt: Path) -> int:
    return int(_ckpt(ckpt)["global_step"])


def _kill_when(proc: subprocess.Popen, ckpt: Path, ready=lambda c: True) -> None:
    """SIGKILL `proc` as soon as `ckpt` exists and satisfies `ready`."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before {ckpt} was seen"
        try:
            if ckpt.is_file() and ready(ckpt):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                return
        except (EOFError, RuntimeError, OSError):  # caught while being written
            pass
        time.sleep(0.05)
    pytest.fail(f"no {ckpt} within {TIMEOUT_S} s")


def test_sigkill_in_each_stage_then_resume(repo_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    one_last = run / STAGE_ONE_DIR / "checkpoints" / "last.ckpt"
    two_last = run / "checkpoints" / "last.ckpt"
    per_epoch = 31  # 248 training images in batches of 8

    proc = subprocess.Popen(_command(run), cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _kill_when(proc, one_last, lambda c: 0 < _steps(c) < per_epoch - 5)  # stage one, mid-epoch
    finally:
        proc.kill()
    killed_at = _steps(one_last)
    assert not (run / STAGE_ONE_DIR / "metrics.json").exists() and not two_last.exists()

    proc = subprocess.Popen(_command(run, "ckpt_path=last"), cwd=repo_root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _kill_when(proc, two_last, lambda c: 0 < _steps(c) < per_epoch - 5)  # stage two, mid-epoch
    finally:
        proc.kill()
    assert json.loads((run / STAGE_ONE_DIR / "metrics.json").read_text())["status"] == "ok"
    assert _steps(one_last) == per_epoch  # stage one went on from step `killed_at` to its end
    log = (run / "train.log").read_text()
    assert f"Resuming in the middle of epoch 0: {killed_at} of {per_epoch} batches" in log

    done = subprocess.run(_command(run, "ckpt_path=last"), cwd=repo_root, timeout=TIMEOUT_S, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (run / "train.log").read_text()
    assert "Stage one (pretrain) finished earlier" in log  # not trained again
    assert _steps(one_last) == per_epoch and _steps(two_last) == per_epoch  # stage two: its own steps, none twice
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["stage"] == "finetune"
    assert metrics["init_from"] == str(run / STAGE_ONE_DIR / "checkpoints" / "best.ckpt")


def test_loss_policies_sweep_crosses_losses_with_policies_in_one_report(repo_root: Path, chexpert_tree: Path,
                                                                        tmp_path: Path) -> None:
    """experiment=loss_policies as a real Hydra multirun (2 objectives x 2 policies of its 3 x 3, tiny settings) on
    real CheXpert rows: every job trains with its loss and optimizer, and the report has one column per cell."""
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        [sys.executable, "-m", "chestx.train", "-m", "experiment=loss_policies", f"data.root={chexpert_tree}",
         "objective=bce,auc_margin", "data.uncertainty=zeros,ones", *TINY_NET, "trainer.max_epochs=1",
         "trainer.limit_train_batches=2", "loader.num_workers=0", "loader.eval_batch_size=64", "trainer.accelerator=cpu",
         "logger=none", "clinical=none", "subgroups=none", f"hydra.sweep.dir={sweep}"],
        cwd=repo_root, timeout=TIMEOUT_S, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    configs = {p.parent.name: (p.read_text()) for p in sweep.glob("*/config.yaml")}
    assert len(configs) == 4
    for text in configs.values():  # AUC-M trains with PESG, BCE with Adam at uncertainty_policies' lr
        assert ("auc_margin.pesg" in text) == ("auc_margin.auc_margin" in text) != ("MaskedBCELoss" in text)
    build_report([sweep], tmp_path / "report", n_resamples=20)
    table = (tmp_path / "report" / "auroc_table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| pathology"))
    for objective in ("bce", "auc_margin"):
        for policy in ("zeros", "ones"):
            assert f"uncertainty={policy} objective={objective}" in header, header
    assert "differing between columns: loss, lr, optimizer" in table  # not the first column's as if shared
