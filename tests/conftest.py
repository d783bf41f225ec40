"""Shared fixtures: where the real data lives, and skips when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one test process per core already: torch's and OpenCV's thread pools would only oversubscribe
    # the cores (also for the subprocesses that tests start, which inherit the environment)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_ROOT = REPO / "data" / "nih_sample"
FIXTURES = Path(__file__).resolve().parent / "data"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path}: clone chestx beside the shared/ data folder to run this test")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout (CI has it; a user's clone may not)."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def nih_dir(shared_data: Path) -> Path:
    return _require(shared_data / "nih")


@pytest.fixture(scope="session")
def chexpert_dir(shared_data: Path) -> Path:
    return _require(shared_data / "chexpert")


@pytest.fixture(scope="session")
def sample_root() -> Path:
    """The 621 real NIH images at 256 px embedded in the project."""
    return SAMPLE_ROOT


@pytest.fixture(scope="session")
def fullres_fixtures() -> Path:
    """Two untouched 1024 px NIH originals (one RGBA, one L) embedded in tests/data."""
    return FIXTURES / "nih_fullres"


def compose_train(overrides: list[str], output_dir: Path, config_name: str = "train"):
    """Compose the real config as `python -m chestx.train` would, writing into `output_dir`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from chestx._hydra import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=[f"paths.output_dir={output_dir}", *overrides])


# A tiny but real run: embedded NIH sample, 64 px, a few batches, CPU, no loggers.
TINY = [
    "data.image_size=64",
    "data.num_workers=0",
    "data.batch_size=8",
    "data.eval_batch_size=64",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.accelerator=cpu",
    "logger=none",
    "clinical.cams=0",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


def build_chexpert_tree(chexpert_dir: Path, dest: Path, n_train: int = 200, size: int = 64) -> Path:
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
    sources = sorted((SAMPLE_ROOT / "images").glob("*.png"))
    for i, rel in enumerate(pd.concat([train["Path"], valid["Path"]])):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(sources[i % len(sources)]).convert("L").resize((size, size)).save(target, quality=90)
    return dest


@pytest.fixture(scope="session")
def chexpert_tree(chexpert_dir: Path, tmp_path_factory) -> Path:
    return build_chexpert_tree(chexpert_dir, tmp_path_factory.mktemp("chexpert"))
