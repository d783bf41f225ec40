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
from chestx.core.run_folder import read_predictions


def _ece(p: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    return sum(abs(y[idx == b].mean() - p[idx == b].mean()) * (idx == b).sum() for b in range(n_bins) if (idx == b).any()) / len(p)


CLINICAL_FILES = ["thresholds.csv", "operating_points.csv", "calibration.csv", "reliability.csv",
                  "confusion_matrices.png", "reliability.png", "heatmaps"]


def test_run_writes_the_clinical_files(clinical_run_dir: Path) -> None:
    from PIL import Image

    for name in ["confusion_matrices.png", "reliability.png"]:
        with Image.open(clinical_run_dir / name) as figure:
            assert figure.format == "PNG" and min(figure.size) >= 200, (name, figure.size)
            figure.verify()
    heat = pd.read_csv(clinical_run_dir / "heatmaps" / "heatmaps.csv")
    assert 1 <= len(heat) <= 3 * 2 and heat["positive"].all()
    assert all(Path(f).is_file() for f in heat["file"])


def test_reliability_bins_of_the_test_predictions(clinical_run_dir: Path) -> None:
    """reliability.csv: 15 equal-width bins per pathology, recounted from predictions.csv."""
    _, probs, labels, names = read_predictions(clinical_run_dir / "predictions.csv")
    bins = pd.read_csv(clinical_run_dir / "reliability.csv")
    assert bins["pathology"].unique().tolist() == names
    edges = np.linspace(0, 1, 16)
    for k, name in enumerate(names):
        table = bins[bins["pathology"] == name].reset_index(drop=True)
        np.testing.assert_allclose(table[["lower", "upper"]].to_numpy(), np.stack([edges[:-1], edges[1:]], 1),
                                   atol=1e-6)
        seen = ~np.isnan(labels[:, k])
        p, y = probs[seen, k], labels[seen, k]
        which = np.searchsorted(edges[1:-1], p)  # bin b holds (b/15, (b+1)/15], as sklearn's calibration_curve
        assert table["count"].tolist() == [int((which == b).sum()) for b in range(15)], name
        for b in np.flatnonzero(table["count"].to_numpy()):
            assert table["mean_confidence"][b] == pytest.approx(p[which == b].mean(), abs=1e-5), (name, b)
            assert table["fraction_positive"][b] == pytest.approx(y[which == b].mean(), abs=1e-5), (name, b)


def test_thresholds_are_youden_on_validation(clinical_run_dir: Path, brute_force_youden) -> None:
    _, probs, labels, names = read_predictions(clinical_run_dir / "predictions_val.csv")
    table = pd.read_csv(clinical_run_dir / "thresholds.csv")
    assert table["pathology"].tolist() == names and (table["method"] == "youden").all()
    for k, name in enumerate(names):
        y = labels[:, k]
        if len(np.unique(y[~np.isnan(y)])) < 2:
            assert np.isnan(table["threshold"][k])
            continue
        assert table["threshold"][k] == pytest.approx(brute_force_youden(probs[:, k], y), abs=1e-9), name


def test_operating_points_match_test_predictions(clinical_run_dir: Path) -> None:
    _, probs, labels, names = read_predictions(clinical_run_dir / "predictions.csv")
    thresholds = pd.read_csv(clinical_run_dir / "thresholds.csv")["threshold"].to_numpy()
    points = pd.read_csv(clinical_run_dir / "operating_points.csv")
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


def test_calibration_before_and_after_temperature(clinical_run_dir: Path) -> None:
    _, probs, labels, names = read_predictions(clinical_run_dir / "predictions.csv")
    _, vprobs, vlabels, _ = read_predictions(clinical_run_dir / "predictions_val.csv")
    table = pd.read_csv(clinical_run_dir / "calibration.csv").set_index("pathology")
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
def test_target_sensitivity_method_on_a_copy(clinical_run_dir: Path, tmp_path: Path) -> None:
    for name in ["predictions.csv", "predictions_val.csv"]:
        shutil.copy(clinical_run_dir / name, tmp_path)
    summary = run_clinical(tmp_path, method="sensitivity", target_sensitivity=0.9, temperature_scaling=False, cams=0)
    assert summary["temperature"] is None and summary["heatmaps"] == 0
    table = pd.read_csv(tmp_path / "thresholds.csv")
    defined = table.dropna(subset=["threshold"])
    assert len(defined) and (defined["val_sensitivity"] >= 0.9).all()
    assert "ece_temperature_scaled" not in pd.read_csv(tmp_path / "calibration.csv").columns


def test_missing_predictions_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="predictions_val.csv"):
        run_clinical(tmp_path)


@pytest.mark.parametrize("switch", ["clinical=none", "~clinical"])
def test_clinical_switched_off_writes_no_clinical_files(switch: str, compose, tiny_overrides,
                                                         clinical_run_dir: Path, tmp_path: Path) -> None:
    """Re-scoring the run's checkpoint (fit=false) without the clinical step writes the same predictions and
    none of the clinical files (which the run itself, with the default clinical step, wrote: tests above)."""
    from chestx.train import train

    overrides = [o for o in tiny_overrides if not o.startswith("clinical.")]
    metrics = train(compose([*overrides, "model=resnet18", "data.image_size=96", switch, "fit=false",
                             f"ckpt_path={clinical_run_dir / 'checkpoints' / 'best.ckpt'}"], tmp_path))
    assert metrics["status"] == "ok"
    for name in ("predictions.csv", "predictions_val.csv"):
        np.testing.assert_allclose(read_predictions(tmp_path / name)[1], read_predictions(clinical_run_dir / name)[1],
                                   atol=1e-6)
    assert all((clinical_run_dir / name).exists() for name in CLINICAL_FILES)
    assert [name for name in CLINICAL_FILES if (tmp_path / name).exists()] == []


@pytest.mark.slow
def test_cli_reruns_on_a_run_folder(clinical_run_dir: Path, tmp_path: Path, check_subgroup_rates) -> None:
    """`python -m chestx.clinical run=<folder> method=f1` (a real subprocess): the files are rewritten in the run
    folder, the test images found through the run's own data config, the run's .hydra/ left alone, and
    subgroups.csv follows the new thresholds."""
    import subprocess
    import sys

    from chestx.runs.subgroups import read_subgroups

    copy = tmp_path / "run"
    shutil.copytree(clinical_run_dir, copy)
    hydra_before = (copy / ".hydra" / "config.yaml").read_bytes() if (copy / ".hydra").exists() else None
    done = subprocess.run([sys.executable, "-m", "chestx.clinical", f"run={copy}", "method=f1", "cams=2",
                           "subgroups.resamples=100"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    thresholds = pd.read_csv(copy / "thresholds.csv")
    assert set(thresholds["method"]) == {"f1"}
    drawn = pd.read_csv(copy / "heatmaps" / "heatmaps.csv")
    assert 1 <= drawn["image_id"].nunique() <= 2
    if hydra_before is not None:
        assert (copy / ".hydra" / "config.yaml").read_bytes() == hydra_before
    check_subgroup_rates(read_subgroups(copy / "subgroups.csv"), copy, thresholds["threshold"].to_numpy())
