"""Shared fixtures: where the real data lives (skips when it is absent), config composition, tiny runs.

Tests get everything here as fixtures; no test module imports this file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one test process per core already: torch's and OpenCV's thread pools would only oversubscribe
    # the cores (also for the subprocesses that tests start, which inherit the environment)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

_REPO = Path(__file__).resolve().parents[1]
_SHARED_DATA = _REPO.parent / "shared" / "data"
_SAMPLE_ROOT = _REPO / "data" / "nih_sample"
_FIXTURES = Path(__file__).resolve().parent / "data"

# A tiny but real run: embedded NIH sample, 64 px, a few batches, CPU, no loggers.
_TINY = (
    "data.image_size=64",
    "data.num_workers=0",
    "data.batch_size=8",
    "data.eval_batch_size=64",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.accelerator=cpu",
    "logger=none",
    "clinical.cams=0",
)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path}: clone chestx beside the shared/ data folder to run this test")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout (the working directory of the `python -m chestx.*` subprocesses tests start)."""
    return _REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout (CI has it; a user's clone may not)."""
    return _require(_SHARED_DATA)


@pytest.fixture(scope="session")
def nih_dir(shared_data: Path) -> Path:
    return _require(shared_data / "nih")


@pytest.fixture(scope="session")
def chexpert_dir(shared_data: Path) -> Path:
    return _require(shared_data / "chexpert")


@pytest.fixture(scope="session")
def sample_root() -> Path:
    """The 621 real NIH images at 256 px embedded in the project."""
    return _SAMPLE_ROOT


@pytest.fixture(scope="session")
def fullres_fixtures() -> Path:
    """Two untouched 1024 px NIH originals (one RGBA, one L) embedded in tests/data."""
    return _FIXTURES / "nih_fullres"


def _compose(overrides: list[str] | tuple[str, ...], output_dir: Path, config_name: str = "train",
             hydra_config: bool = False):
    """Compose the real config as `python -m chestx.<config_name>` would, writing into `output_dir`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from chestx._hydra import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=[f"paths.output_dir={output_dir}", *overrides],
                       return_hydra_config=hydra_config)


@pytest.fixture(scope="session")
def compose() -> Callable:
    """`compose(overrides, output_dir, config_name="train", hydra_config=False)`: the real config as the
    entry point composes it, with `paths.output_dir=output_dir` (and the `hydra` node if asked)."""
    return _compose


@pytest.fixture(scope="session")
def tiny_overrides() -> tuple[str, ...]:
    """Overrides of a tiny but real run: embedded NIH sample, 64 px, 2 training batches, CPU, no loggers."""
    return _TINY


@pytest.fixture(scope="session")
def clinical_run_dir(compose: Callable, tiny_overrides: tuple[str, ...], tmp_path_factory) -> Path:
    """Run folder of one tiny real `chestx.train` run with the clinical step (resnet18, 96 px, 2 batches, up
    to 2 heatmaps for each of 3 images), shared by the clinical / predict / export tests: trained once per
    pytest process."""
    from chestx.train import train

    out = tmp_path_factory.mktemp("clinical_run")
    metrics = train(compose([*tiny_overrides, "model=resnet18", "data.image_size=96", "clinical.cams=3",
                             "clinical.max_cams_per_image=2"], out))
    assert metrics["status"] == "ok"
    return out


def _build_chexpert_tree(chexpert_dir: Path, dest: Path, n_train: int = 200, size: int = 64) -> Path:
    """A CheXpert-v1.0-small folder with the real CSV rows and small real X-ray JPEGs at their paths.

    The first `n_train` rows of the real train.csv and all of valid.csv; pixels come from the
    embedded NIH sample (CheXpert images may not be shipped), re-encoded as JPEG.
    """
    import pandas as pd
    from PIL import Image

    folder = dest / "CheXpert-v1.0-small"
    folder.mkdir(parents=True, exist_ok=True)
    train = pd.read_csv(chexpert_dir / "train.csv", nrows=n_train)
    valid = pd.read_csv(chexpert_dir / "valid.csv")
    train.to_csv(folder / "train.csv", index=False)
    valid.to_csv(folder / "valid.csv", index=False)
    sources = sorted((_SAMPLE_ROOT / "images").glob("*.png"))
    for i, rel in enumerate(pd.concat([train["Path"], valid["Path"]])):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(sources[i % len(sources)]).convert("L").resize((size, size)).save(target, quality=90)
    return dest


@pytest.fixture(scope="session")
def chexpert_tree(chexpert_dir: Path, tmp_path_factory) -> Path:
    """CheXpert's real first 200 train.csv rows and valid.csv, with small real X-ray JPEGs at their paths."""
    return _build_chexpert_tree(chexpert_dir, tmp_path_factory.mktemp("chexpert"))


@pytest.fixture(scope="session")
def brute_force_youden() -> Callable:
    """Independent reference of Youden's J threshold: every observed score tried, the highest of the best."""
    import numpy as np

    def youden(p, y) -> float:
        best, best_t = -np.inf, np.nan
        for t in np.unique(p):
            pred = p >= t
            j = (pred & (y == 1)).sum() / (y == 1).sum() - (pred & (y == 0)).sum() / (y == 0).sum()
            if j >= best - 1e-12:
                best, best_t = j, t
        return best_t

    return youden
