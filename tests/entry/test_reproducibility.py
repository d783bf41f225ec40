"""One config, one seed, one machine: byte-identical run files, with DataLoader workers on.

Also the regression test of a stall: a loader worker forked from a process whose OpenCV thread
pool was running hung for ever in `cv2.setNumThreads` (see
`chestx.data.loading.datamodule._stop_opencv_threads_before_fork`). Both tests start OpenCV's pool in this
process first, as earlier tests in the same pytest worker do, so they cover it in any test order.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from torch.utils.data import DataLoader

from chestx.data.loading.datamodule import worker_init
from chestx.data.loading.dataset import FileSource, XrayDataset
from chestx.data.images.read import load_grayscale
from chestx.data.loading.transforms import build_transform
from chestx.train import train

# the files a run writes that must not change between two runs (metrics.json holds wall times)
SAME_BYTES = ["predictions.csv", "predictions_val.csv", "auroc.csv", "split.csv"]


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.fixture
def opencv_pool_running(sample_root: Path):
    """OpenCV's pthreads pool started in this process (two threads, whatever the core count) by a real augmentation."""
    if not Path("/proc/self/task").is_dir():
        pytest.skip("counts threads through Linux /proc")
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)  # stops any pool an earlier test left, so the count below starts from none
    idle = _threads()
    cv2.setNumThreads(2)
    image = load_grayscale(next((sample_root / "images").glob("*.png")))
    augment = build_transform(128, train=True, seed=0)
    for _ in range(3):
        augment(image)
    assert _threads() > idle, "the augmentation should have started OpenCV's worker thread in this process"
    yield
    cv2.setNumThreads(before)


def test_loader_worker_starts_after_opencv_ran_here(opencv_pool_running, sample_root: Path) -> None:
    """A worker forked while OpenCV's pool runs here gets through worker_init (it used to hang in a futex)."""
    paths = sorted((sample_root / "images").glob("*.png"))[:8]
    labels = np.zeros((len(paths), 14), np.float32)
    dataset = XrayDataset(FileSource(paths), labels, labels, labels.astype(bool), build_transform(32, train=True, seed=0))
    # timeout: a hung worker fails the test (RuntimeError) instead of stalling the suite
    loader = DataLoader(dataset, batch_size=4, num_workers=1, worker_init_fn=worker_init, timeout=60)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 32, 32)
    assert cv2.getNumThreads() == 2, "the parent keeps its OpenCV thread count across the fork"


@pytest.mark.slow
@pytest.mark.timeout(300)  # a stalled loader worker fails the test instead of holding the suite
def test_same_seed_same_bytes_with_workers(compose, tiny_overrides, tmp_path: Path, opencv_pool_running) -> None:
    """Two in-process runs with 2 persistent loader workers (augmentation on) write identical files, and so
    does a run without workers: each image's augmentation is seeded from (seed, epoch, image), not per worker.
    Another seed changes the run (the seed reaches the split, the weights and the augmentation)."""
    overrides = [o for o in tiny_overrides if not o.startswith(("loader.num_workers", "clinical."))]
    overrides += ["loader.num_workers=2", "model=timm", "model.name=test_resnet", "data.image_size=32", "clinical=none"]
    for name in ("a", "b"):
        train(compose(overrides, tmp_path / name))
    train(compose([*overrides, "loader.num_workers=0"], tmp_path / "none"))
    train(compose([*overrides, "loader.num_workers=0", "seed=1"], tmp_path / "seed1"))
    assert "num_workers: 2" in (tmp_path / "a" / "config.yaml").read_text()
    for filename in SAME_BYTES:
        first, second = (tmp_path / "a" / filename).read_bytes(), (tmp_path / "b" / filename).read_bytes()
        assert first == second, f"{filename} differs between two runs with one seed and 2 loader workers"
        assert (tmp_path / "none" / filename).read_bytes() == first, f"{filename}: 0 workers differ from 2"
    first = pd.read_csv(tmp_path / "a" / "predictions.csv")
    probs = first.filter(like="prob_").to_numpy()
    assert np.isfinite(probs).all() and probs.std() > 0
    assert not first.equals(pd.read_csv(tmp_path / "seed1" / "predictions.csv")), "another seed must change the run"
