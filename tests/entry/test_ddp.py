"""DDP correctness on 2 CPU processes (gloo): scoring one checkpoint with `trainer=ddp_cpu` gives the
same predictions.csv (every image once, same probabilities) and the same AUROC as one process.

The split ratios give 93 validation and 155 test images of the real embedded NIH sample: odd, so
the DistributedSampler pads each split with a repeated image, and with eval batches of 8 neither
is a multiple of world size x batch. Lightning's ddp launcher re-executes the command line, so the
DDP run is a subprocess of `python -m chestx.train fit=false ckpt_path=...`; it reads pixels from
the cache (`data.cache=true`, built under a file lock by whichever rank comes first), the
single-process run decodes files, so the comparison also checks cached == uncached pixels.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.runs.files import read_predictions
from chestx.train import train
SPLIT = ["data.ratios=[0.6,0.15,0.25]", "data.eval_batch_size=8", "clinical=none"]
WORLD = 2
# variables a distributed run reads: none may leak into the DDP subprocess from another test of this worker
DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "GLOBAL_RANK", "WORLD_SIZE", "RANK")


@pytest.mark.slow
def test_ddp_scoring_equals_single_process(compose, tiny_overrides, repo_root: Path, tmp_path: Path) -> None:
    tiny = [o for o in tiny_overrides if not o.startswith("clinical.")]  # these runs switch the clinical step off
    single = tmp_path / "single"
    metrics = train(compose([*tiny, *SPLIT, "model=resnet18"], single))
    n_test, n_val = metrics["n_test"], metrics["n_val"]
    assert n_test % WORLD and n_val % WORLD, "sizes must force DistributedSampler padding"
    assert n_test % (WORLD * 8) and n_val % (WORLD * 8)
    ckpt = single / "checkpoints" / "best.ckpt"
    assert ckpt.is_file()

    ddp = tmp_path / "ddp"
    args = [
        sys.executable, "-m", "chestx.train", "fit=false", f"ckpt_path={ckpt}", "trainer=ddp_cpu",
        *[o for o in tiny if not o.startswith("trainer.accelerator")], *SPLIT, "model=resnet18",
        "data.cache=true", f"data.cache_dir={tmp_path / 'cache'}",  # both ranks share one pixel cache
        f"hydra.run.dir={ddp}",
    ]
    # a clean rendezvous: no MASTER_* / rank variables inherited from another test of this worker
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV and not k.startswith("SLURM_")}
    proc = subprocess.run(args, cwd=repo_root, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 1
    assert "world_size=2" in proc.stderr or "MEMBER: 2/2" in proc.stderr + proc.stdout, "the run must really use 2 processes"

    for name, n in (("predictions.csv", n_test), ("predictions_val.csv", n_val)):
        ids_1, probs_1, labels_1, _ = read_predictions(single / name)
        ids_2, probs_2, labels_2, _ = read_predictions(ddp / name)
        assert len(ids_2) == n and ids_2["image_id"].is_unique, f"{name}: every image exactly once"
        pd.testing.assert_frame_equal(ids_1.reset_index(drop=True), ids_2.reset_index(drop=True))
        np.testing.assert_allclose(probs_2, probs_1, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(np.isnan(labels_1), np.isnan(labels_2))
        np.testing.assert_array_equal(np.nan_to_num(labels_1), np.nan_to_num(labels_2))

    saved_1 = json.loads((single / "metrics.json").read_text())
    saved_2 = json.loads((ddp / "metrics.json").read_text())
    assert saved_2["status"] == "ok"
    for key in [k for k in saved_1 if k.startswith(("test/auroc", "val/auroc"))]:
        if saved_1[key] is None or np.isnan(saved_1[key]):
            assert saved_2[key] is None or np.isnan(saved_2[key]), key
        else:
            assert saved_2[key] == pytest.approx(saved_1[key], abs=1e-6), key
    auroc_1 = pd.read_csv(single / "auroc.csv")
    auroc_2 = pd.read_csv(ddp / "auroc.csv")
    pd.testing.assert_frame_equal(auroc_1, auroc_2, atol=1e-6, check_exact=False)
