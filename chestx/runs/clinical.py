"""Clinical read-out of a finished run: frozen operating points, calibration, Grad-CAM heatmaps.

Called by `chestx.train` after testing (`conf/clinical/default.yaml`, off with `clinical=none`) and
on an existing run folder with `python -m chestx.clinical run=<run folder> [method=f1]`:

1. thresholds per pathology chosen on the *validation* predictions (Youden's J, max F1 or a target
   sensitivity; `chestx.metrics.thresholds`), frozen, written to `thresholds.csv`;
2. operating points of the *test* predictions at those thresholds (`operating_points.csv`,
   `confusion_matrices.png`);
3. expected calibration error per pathology on test, before and after one temperature fitted on
   validation (Guo et al. 2017; `chestx.metrics.calibration`; logits are logit(prob) of the saved
   probabilities, clamped to [1e-7, 1 - 1e-7]), in `calibration.csv`, `reliability.csv`,
   `reliability.png`;
4. Grad-CAM heatmaps (`heatmaps/`) of the first `cams` test images that have a positive prediction,
   for their most probable positive pathologies (at most `max_cams_per_image`), with the best
   checkpoint through `chestx.inference.predictor`.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chestx.core.run_folder import (
    CALIBRATION_FILE, CONFUSION_FIGURE, HEATMAP_DIR, HEATMAP_INDEX, OPERATING_POINTS_FILE, PREDICTIONS_FILE,
    RELIABILITY_FIGURE, RELIABILITY_FILE, THRESHOLDS_FILE, VAL_PREDICTIONS_FILE, best_checkpoint, read_predictions,
)
from chestx.metrics.calibration import apply_temperature, expected_calibration_error, fit_temperature, reliability_bins
from chestx.metrics.thresholds import THRESHOLD_METHODS, operating_points, select_thresholds
from chestx.runs.figures import plot_confusion_matrices, plot_reliability

log = logging.getLogger(__name__)

LOGIT_EPS = 1e-7


def _logit(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def _read_pair(run_dir: Path) -> tuple[tuple, tuple]:
    files = [run_dir / VAL_PREDICTIONS_FILE, run_dir / PREDICTIONS_FILE]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"clinical read-out needs {missing}; train with test=true first")
    val, test = read_predictions(files[0]), read_predictions(files[1])
    if val[3] != test[3]:
        raise ValueError(f"{files[0]} and {files[1]} have different pathologies: {val[3]} vs {test[3]}")
    return val, test


def threshold_table(
    val_probs: np.ndarray, val_labels: np.ndarray, pathologies: list[str], method: str, target_sensitivity: float
) -> pd.DataFrame:
    """Thresholds chosen on validation, with the validation operating point they give."""
    thresholds = select_thresholds(val_probs, val_labels, method=method, target_sensitivity=target_sensitivity)
    val_points = operating_points(val_probs, val_labels, thresholds, pathologies)
    table = pd.DataFrame({
        "pathology": pathologies, "threshold": thresholds, "method": method,
        "target_sensitivity": target_sensitivity if method == "sensitivity" else np.nan,
        "val_sensitivity": val_points["sensitivity"], "val_specificity": val_points["specificity"],
        "val_n_pos": val_points["n_pos"], "val_n_neg": val_points["n_neg"],
    })
    undefined = table.loc[table["threshold"].isna(), "pathology"].tolist()
    if undefined:
        log.warning("No threshold for %s (one class only in validation): their operating points are NaN and "
                    "chestx.predict uses 0.5 for them", undefined)
    return table


def calibration_table(
    val: tuple, test: tuple, pathologies: list[str], temperature_scaling: bool, n_bins: int
) -> tuple[pd.DataFrame, pd.DataFrame, float | None]:
    """(calibration.csv, reliability.csv, T): test ECE per pathology before / after temperature scaling."""
    test_probs, test_labels = test[1], test[2]
    ece = expected_calibration_error(test_probs, test_labels, n_bins)  # (K,)
    n = (~np.isnan(test_labels)).sum(axis=0)
    table = pd.DataFrame({"pathology": pathologies, "n": n, "ece": ece})
    temperature = None
    if temperature_scaling:
        temperature = fit_temperature(_logit(val[1]), val[2])
        scaled = apply_temperature(_logit(test_probs), temperature)  # (N, K)
        table["ece_temperature_scaled"] = expected_calibration_error(scaled, test_labels, n_bins)
        table["temperature"] = temperature
    mean = {"pathology": "mean", "n": int(n.sum())}
    mean.update({c: table[c].mean() for c in table.columns if c not in mean})
    table = pd.concat([table, pd.DataFrame([mean])], ignore_index=True)
    bins = pd.concat(
        [reliability_bins(test_probs[:, k], test_labels[:, k], n_bins).assign(pathology=p)
         for k, p in enumerate(pathologies)], ignore_index=True,
    )
    return table, bins[["pathology", *[c for c in bins.columns if c != "pathology"]]], temperature


def run_clinical(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    method: str = "youden",
    target_sensitivity: float = 0.9,
    temperature_scaling: bool = True,
    n_bins: int = 15,
    cams: int = 8,
    max_cams_per_image: int = 3,
    target_layer: str | None = None,
    device: str = "auto",
    image_paths: Mapping[str, str | Path] | None = None,
    trust_checkpoint: bool = False,
) -> dict[str, Any]:
    """Write thresholds.csv, operating_points.csv, calibration.csv, reliability.csv, the figures and heatmaps.

    Reads the predictions of `run_dir` and writes into `out_dir` (default: `run_dir`). `image_paths`
    (image_id -> file) locates the test images for the heatmaps; without it none are drawn. `trust_checkpoint`: the
    run's checkpoint may need more than tensors and plain values (chestx.core.checkpoint_io; its code runs).
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"clinical.method={method!r} is not one of {list(THRESHOLD_METHODS)}")
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    val, test = _read_pair(run_dir)
    summary = write_operating_points(out, val, test, method, target_sensitivity)
    summary.update(write_calibration(out, val, test, temperature_scaling, n_bins))
    summary["heatmaps"] = 0
    if cams > 0 and image_paths is None:
        log.warning("No image paths given: no Grad-CAM heatmaps (chestx.clinical finds them through the run's "
                    "data config; chestx.predict cam=true draws them for any image)")
    elif cams > 0:
        try:
            summary["heatmaps"] = _test_heatmaps(run_dir, out, test, image_paths, cams, max_cams_per_image, target_layer,
                                                 device, trust_checkpoint)
        except Exception as err:  # a figure must not fail a finished training run; say why loudly
            log.error("Grad-CAM heatmaps of the run skipped: %s: %s (draw them with `python -m chestx.predict "
                      "ckpt=<run>/checkpoints/best.ckpt inputs=<images> cam=true`)", type(err).__name__, err)
    return summary


def write_operating_points(out: Path, val: tuple, test: tuple, method: str, target_sensitivity: float) -> dict:
    """thresholds.csv (chosen on validation), operating_points.csv (the test split at them), confusion matrices."""
    pathologies = test[3]
    thresholds = threshold_table(val[1], val[2], pathologies, method, target_sensitivity)
    thresholds.to_csv(out / THRESHOLDS_FILE, index=False, float_format="%.9g")
    points = operating_points(test[1], test[2], thresholds["threshold"].to_numpy(), pathologies)
    points.to_csv(out / OPERATING_POINTS_FILE, index=False, float_format="%.6g")
    plot_confusion_matrices(points, out / CONFUSION_FIGURE)
    log.info("Test operating points at %s thresholds chosen on validation:\n%s", method, format_points(points))
    return {"method": method}


def write_calibration(out: Path, val: tuple, test: tuple, temperature_scaling: bool, n_bins: int) -> dict:
    """calibration.csv (ECE before / after temperature scaling fitted on validation), reliability.csv and .png."""
    calibration, bins, temperature = calibration_table(val, test, test[3], temperature_scaling, n_bins)
    calibration.to_csv(out / CALIBRATION_FILE, index=False, float_format="%.6g")
    bins.to_csv(out / RELIABILITY_FILE, index=False, float_format="%.6g")
    ece = dict(zip(calibration["pathology"], calibration["ece"]))
    plot_reliability({p: g for p, g in bins.groupby("pathology", sort=False)}, ece, out / RELIABILITY_FIGURE)
    summary = {"temperature": temperature, "ece_mean": float(calibration["ece"].iloc[-1]),
               "ece_mean_temperature_scaled": float(calibration["ece_temperature_scaled"].iloc[-1]) if temperature
               else None}
    log.info("ECE (test, %d bins) mean %.4f%s", n_bins, summary["ece_mean"],
             f"; after temperature scaling (T={temperature:.3f}) {summary['ece_mean_temperature_scaled']:.4f}"
             if temperature else "")
    return summary


def _test_heatmaps(
    run_dir: Path, out: Path, test: tuple, image_paths: Mapping[str, str | Path], n_images: int, per_image: int,
    target_layer: str | None, device: str, trust_checkpoint: bool = False,
) -> int:
    """Heatmaps of the first `n_images` test images with a positive prediction; returns the number drawn."""
    import torch

    from chestx.inference.predictor import load_for_inference, load_images, write_heatmaps

    ckpt = best_checkpoint(run_dir)
    if ckpt is None:
        log.warning("No checkpoint in %s/checkpoints (fast_dev_run?): no Grad-CAM heatmaps", run_dir)
        return 0
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    predictor = load_for_inference(ckpt, thresholds=out / THRESHOLDS_FILE, device=dev, trust=trust_checkpoint)
    chosen = _first_positive_rows(test[1], predictor.thresholds, n_images)
    if not len(chosen):
        log.info("No test image is positive at the frozen thresholds: no Grad-CAM heatmaps")
        return 0
    files, name_of = _heatmap_files(test[0]["image_id"].iloc[chosen].tolist(), image_paths)
    ok, images, _ = load_images(files, dicom_window=predictor.dicom_window)
    if not ok:
        log.warning("Grad-CAM: none of the chosen test images could be read")
        return 0
    x = predictor.preprocess(images)  # (B, C, S, S)
    fresh = predictor.probabilities(x)  # (B, K): the model's own, equal to predictions.csv up to float noise
    classes = _classes_to_explain(fresh, predictor.thresholds, per_image)
    drawn = write_heatmaps(predictor, [name_of[p] for p in ok], images, x, fresh, out / HEATMAP_DIR, classes,
                           target_layer)
    drawn.to_csv(out / HEATMAP_DIR / HEATMAP_INDEX, index=False, float_format="%.6g")
    return len(drawn)


def _first_positive_rows(probs: np.ndarray, thresholds: np.ndarray, n_images: int) -> np.ndarray:
    """Rows of (N, K) `probs` positive for some pathology at the (K,) `thresholds`, the first `n_images` of them."""
    margin = probs - thresholds[None, :]  # (N, K)
    return np.flatnonzero((margin >= 0).any(axis=1))[:n_images]


def _heatmap_files(wanted: list[str], image_paths: Mapping[str, str | Path]) -> tuple[list[Path], dict[Path, str]]:
    """The files of the `wanted` image ids that have one (in order; the rest warned about), and file -> heatmap name."""
    by_id = {i: Path(image_paths[i]) for i in wanted if i in image_paths}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        log.warning("Grad-CAM: %d of %d test images have no known file (first: %s)", len(missing), len(wanted),
                    missing[0])
    name_of = {Path(p): str(i).replace("/", "_") for i, p in by_id.items()}  # CheXpert ids are paths
    return [by_id[i] for i in wanted if i in by_id], name_of


def _classes_to_explain(probs: np.ndarray, thresholds: np.ndarray, per_image: int) -> list[list[int]]:
    """Per row of (B, K) `probs`, its positive classes by margin over the threshold, at most `per_image`."""
    classes = []
    for row in probs:
        positive = np.flatnonzero(row >= thresholds)
        classes.append(list(positive[np.argsort(-(row - thresholds)[positive])][:per_image]))
    return classes


def format_points(points: pd.DataFrame) -> str:
    """Plain-text operating-point table for the terminal."""
    cols = ["threshold", "sensitivity", "specificity", "ppv", "npv", "f1", "auprc"]
    lines = [f"{'pathology':<20} " + " ".join(f"{c[:11]:>11}" for c in cols) + f" {'tp/fp/tn/fn':>15}"]
    for row in points.itertuples():
        vals = " ".join(f"{getattr(row, c):11.3f}" for c in cols)
        counts = "n/a" if np.isnan(row.threshold) else f"{int(row.tp)}/{int(row.fp)}/{int(row.tn)}/{int(row.fn)}"
        lines.append(f"{row.pathology:<20} {vals} {counts:>15}")
    return "\n".join(lines)
