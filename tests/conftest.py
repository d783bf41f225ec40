"""Shared fixtures: where the real data lives (skips when it is absent), config composition, tiny runs.

Tests get everything here as fixtures; no test module imports this file. The collection hook below sets the
order in which pytest-xdist hands the test files to its workers.
"""
from __future__ import annotations

import os
import shutil
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

# pytest-xdist (`make test`: -n auto --dist loadfile --no-loadscope-reorder): one test file is one unit of work (its
# module fixtures are built once); a worker takes the next file when it runs out, in collection order, which the hook
# below changes so that the heaviest files come first (CPU seconds measured with `make test` on the 2-core VM, all
# others after them in their usual order): the last files to start are short, and the workers finish together
# (list scheduling). (--dist loadgroup would also allow units of several files, but it ignores xdist_group marks
# under pytest >= 9.2: pytest-dev/pytest-xdist#1386.) Session fixtures that train are shared by the workers: the
# first that needs one builds it under a file lock (`_built_once`).
HEAVY_FIRST = (
    "tests/data/datasets/test_label_conformance.py",  # about 90 s
    "tests/models/test_compiling.py",
    "tests/comparison/test_report.py",
    "tests/entry/test_experiments.py",
    "tests/entry/test_ddp.py",
    "tests/core/test_checkpoint_safety.py",
    "tests/entry/test_resume_mid_epoch.py",
    "tests/data/datasets/test_padchest.py",
    "tests/entry/test_kfold_sweep.py",
    "tests/data/datasets/test_nih_expert.py",
    "tests/comparison/test_report_cells.py",
    "tests/throughput/test_epoch.py",
    "tests/entry/test_train.py",
    "tests/runs/test_clinical.py",
    "tests/models/test_backbones.py",
    "tests/throughput/test_perf.py",
    "tests/inference/test_onnx.py",
    "tests/entry/test_train_chexpert.py",
    "tests/entry/test_scaleout_configs.py",
    "tests/data/datasets/test_merge.py",  # about 10 s; the files not listed take less
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist: the files of HEAVY_FIRST first, in that order (stable sort: each file's tests keep theirs)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {path: k for k, path in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


_REPO = Path(__file__).resolve().parents[1]
_SHARED_DATA = _REPO.parent / "shared" / "data"
_SAMPLE_ROOT = _REPO / "data" / "nih_sample"
_FIXTURES = Path(__file__).resolve().parent / "data"

# A tiny but real run: embedded NIH sample, 64 px, a few batches, CPU, no loggers.
_TINY = (
    "data.image_size=64",
    "loader.num_workers=0",
    "loader.batch_size=8",
    "loader.eval_batch_size=64",
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


def _built_once(name: str, tmp_path_factory: pytest.TempPathFactory, build: Callable[[Path], None]) -> Path:
    """The folder `build(folder)` fills, built once per test session: under pytest-xdist in the folder the workers
    share, by the first worker that asks (the others wait on the lock, then reuse it); `build` writes `done` last."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the basetemp of this xdist run, shared by its workers
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock"), timeout=1800):
        if not done.is_file():
            if folder.exists():
                shutil.rmtree(folder)  # a build that failed half-way
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def clinical_run_dir(compose: Callable, tiny_overrides: tuple[str, ...], tmp_path_factory) -> Path:
    """Run folder of one tiny real `chestx.train` run with the clinical step (resnet18, 96 px, 2 batches, up
    to 2 heatmaps for each of 3 images), shared by the clinical / predict / export / external tests: trained once
    per test session (once for all xdist workers). Tests copy it before they change anything in it."""
    from chestx.train import train

    def build(out: Path) -> None:
        metrics = train(compose([*tiny_overrides, "model=resnet18", "data.image_size=96", "clinical.cams=3",
                                 "clinical.max_cams_per_image=2"], out))
        assert metrics["status"] == "ok"

    return _built_once("clinical_run", tmp_path_factory, build)


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


@pytest.fixture(scope="session")
def check_subgroup_rates() -> Callable:
    """`check(table, run, thresholds)`: every row of a subgroups.csv table recounted from the run's predictions.csv
    (its sex / age / view columns) at `thresholds` (K,): n_pos, the threshold, TPR; NaN thresholds give NaN rates."""
    import numpy as np
    import pandas as pd

    from chestx.core.run_folder import read_predictions

    def check(table: "pd.DataFrame", run: Path, thresholds: "np.ndarray") -> None:
        ids, probs, labels, names = read_predictions(run / "predictions.csv")
        band = pd.cut(ids["age"], [0, 20, 40, 60, 80, np.inf], right=False,
                      labels=["0-20", "20-40", "40-60", "60-80", "80+"]).astype(str)
        member = {"all": lambda g: np.ones(len(ids), bool), "sex": lambda g: (ids["sex"] == g).to_numpy(),
                  "age": lambda g: (band == g).to_numpy(), "view": lambda g: (ids["view"] == g).to_numpy()}
        checked = 0
        for row in table.itertuples():
            k = names.index(row.pathology)
            mask = member[row.attribute](row.group) & (labels[:, k] == 1)
            assert row.n_pos == mask.sum(), (row.attribute, row.group, row.pathology)
            if np.isnan(thresholds[k]):  # one class in validation
                assert np.isnan(row.threshold) and np.isnan(row.tpr)
                continue
            assert row.threshold == pytest.approx(thresholds[k], rel=1e-5)
            if not np.isnan(row.tpr):
                assert row.tpr == pytest.approx((probs[mask, k] >= thresholds[k]).mean(), abs=1e-6)
                checked += 1
        assert checked >= len(names)

    return check
