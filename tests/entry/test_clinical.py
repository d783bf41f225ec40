"""The clinical step of a real run: thresholds frozen on validation, test operating points, calibration, heatmaps.

Every number is re-derived here from the run's own predictions files with plain numpy.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.runs.clinical import run_clinical
from chestx.runs.files import read_predictions
from clinical_run import tiny_clinical_run
from conftest import compose_train


@pytest.fixture(scope="module")
def run_dir() -> Path:
    return tiny_clinical_run()


def _youden(p: np.ndarray, y: np.ndarray) -> float:
    """Brute force: every observed score as threshold, highest of the best."""
    best, best_t = -np.inf, np.nan
    for t in np.unique(p):
        pred = p >= t
        j = (pred & (y == 1)).sum() / (y == 1).sum() - (pred & (y == 0)).sum() / (y == 0).sum()
        if j >= best - 1e-12:
            best, best_t = j, t
    return best_t


def _ece(p: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    return sum(abs(y[idx == b].mean() - p[idx == b].mean()) * (idx == b).sum() for b in range(n_bins) if (idx == b).any()) / len(p)


def test_run_writes_the_clinical_files(run_dir: Path) -> None:
    for name in ["thresholds.csv", "operating_points.csv", "calibration.csv", "reliability.csv",
                 "confusion_matrices.png", "reliability.png"]:
        assert (run_dir / name).stat().st_size > 0, name
    heat = pd.read_csv(run_dir / "heatmaps" / "heatmaps.csv")
    assert 1 <= len(heat) <= 3 * 2 and heat["positive"].all()
    assert all(Path(f).is_file() for f in heat["file"])


def test_thresholds_are_youden_on_validation(run_dir: Path) -> None:
    _, probs, labels, names = read_predictions(run_dir / "predictions_val.csv")
    table = pd.read_csv(run_dir / "thresholds.csv")
    assert table["pathology"].tolist() == names and (table["method"] == "youden").all()
    for k, name in enumerate(names):
        y = labels[:, k]
        if len(np.unique(y[~np.isnan(y)])) < 2:
            assert np.isnan(table["threshold"][k])
            continue
        assert table["threshold"][k] == pytest.approx(_youden(probs[:, k], y), abs=1e-9), name


def test_operating_points_match_test_predictions(run_dir: Path) -> None:
    _, probs, labels, names = read_predictions(run_dir / "predictions.csv")
    thresholds = pd.read_csv(run_dir / "thresholds.csv")["threshold"].to_numpy()
    points = pd.read_csv(run_dir / "operating_points.csv")
    for k, row in points.iterrows():
        if np.isnan(thresholds[k]):
            continue
        y, pred = labels[:, k], probs[:, k] >= thresholds[k]
        tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
        fn, tn = int((~pred & (y == 1)).sum()), int((~pred & (y == 0)).sum())
        assert (row.tp, row.fp, row.fn, row.tn) == (tp, fp, fn, tn), names[k]
        if tp + fn:
            assert row.sensitivity == pytest.approx(tp / (tp + fn), abs=1e-5)
        if tn + fp:
            assert row.specificity == pytest.approx(tn / (tn + fp), abs=1e-5)


def test_calibration_before_and_after_temperature(run_dir: Path) -> None:
    _, probs, labels, names = read_predictions(run_dir / "predictions.csv")
    _, vprobs, vlabels, _ = read_predictions(run_dir / "predictions_val.csv")
    table = pd.read_csv(run_dir / "calibration.csv").set_index("pathology")
    assert list(table.index) == [*names, "mean"]
    for k, name in enumerate(names):
        assert table.loc[name, "ece"] == pytest.approx(_ece(probs[:, k], labels[:, k]), abs=1e-5), name
    t = float(table["temperature"].iloc[0])

    def nll(temp: float) -> float:
        z = np.log(np.clip(vprobs, 1e-7, 1 - 1e-7)) - np.log1p(-np.clip(vprobs, 1e-7, 1 - 1e-7))
        return float(np.mean(np.logaddexp(0, z / temp) - vlabels * z / temp))

    assert nll(t) <= nll(1.0) + 1e-9, "the fitted temperature must not worsen the validation NLL"
    z = np.log(np.clip(probs, 1e-7, 1 - 1e-7)) - np.log1p(-np.clip(probs, 1e-7, 1 - 1e-7))
    scaled = 1 / (1 + np.exp(-z / t))
    for k, name in enumerate(names):
        assert table.loc[name, "ece_temperature_scaled"] == pytest.approx(_ece(scaled[:, k], labels[:, k]), abs=1e-4)


@pytest.mark.slow
def test_target_sensitivity_method_on_a_copy(run_dir: Path, tmp_path: Path) -> None:
    for name in ["predictions.csv", "predictions_val.csv"]:
        shutil.copy(run_dir / name, tmp_path)
    summary = run_clinical(tmp_path, method="sensitivity", target_sensitivity=0.9, temperature_scaling=False, cams=0)
    assert summary["temperature"] is None and summary["heatmaps"] == 0
    table = pd.read_csv(tmp_path / "thresholds.csv")
    defined = table.dropna(subset=["threshold"])
    assert len(defined) and (defined["val_sensitivity"] >= 0.9).all()
    assert "ece_temperature_scaled" not in pd.read_csv(tmp_path / "calibration.csv").columns


def test_missing_predictions_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="predictions_val.csv"):
        run_clinical(tmp_path)


def test_clinical_none_switches_it_off(tmp_path: Path) -> None:
    assert compose_train([], tmp_path).clinical.method == "youden"
    assert not compose_train(["clinical=none"], tmp_path).get("clinical")
    assert compose_train(["~clinical"], tmp_path).get("clinical") is None


@pytest.mark.slow
def test_cli_reruns_on_a_run_folder(run_dir: Path, tmp_path: Path) -> None:
    """`python -m chestx.clinical run=<folder> method=f1`: the files are rewritten in the run folder, the
    test images found through the run's own data config, and the run's .hydra/ left alone."""
    import subprocess
    import sys

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    hydra_before = (copy / ".hydra" / "config.yaml").read_bytes() if (copy / ".hydra").exists() else None
    done = subprocess.run([sys.executable, "-m", "chestx.clinical", f"run={copy}", "method=f1", "cams=2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(pd.read_csv(copy / "thresholds.csv")["method"]) == {"f1"}
    drawn = pd.read_csv(copy / "heatmaps" / "heatmaps.csv")
    assert 1 <= drawn["image_id"].nunique() <= 2
    if hydra_before is not None:
        assert (copy / ".hydra" / "config.yaml").read_bytes() == hydra_before
