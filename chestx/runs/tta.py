"""A run folder's test-time-augmentation pass: predictions_tta.csv and auroc_tta.csv beside the plain pass's files.

Written by `chestx.train tta=hflip|tencrop` (after the plain test, with the best checkpoint) and by `chestx.evaluate
ckpt=... tta=...` (into `external/<dataset>/`). metrics.json gets `tta` (the mode), `tta_views` (forward passes per
image), `test_tta/auroc_mean`, `test_tta/auroc/<P>` and `tta_infer_images_per_s` (the TTA pass, loading included).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chestx.core.run_folder import (
    AUROC_TTA_FILE, PREDICTIONS_TTA_FILE, format_auroc_table, predictions_frame, write_auroc, write_predictions,
)
from chestx.inference.tta import n_views

log = logging.getLogger(__name__)


def write_tta(out_dir: Path, scores: Any, mode: str, stage: str = "test_tta") -> dict[str, Any]:
    """Write one TTA `ExternalScores` (chestx.inference.external) into `out_dir`; returns the metrics.json entries."""
    return write_tta_pass(out_dir, scores.ids, scores.probs, scores.targets, scores.pathologies, mode,
                          scores.images_per_s, stage)


def write_tta_pass(out_dir: Path, ids: pd.DataFrame, probs: np.ndarray, targets: np.ndarray, pathologies: list[str],
                   mode: str, images_per_s: float | None, stage: str = "test_tta") -> dict[str, Any]:
    """predictions_tta.csv and auroc_tta.csv of one TTA pass (ids: image_id, patient_id (+ metadata) per row; probs,
    targets (N, K)) into `out_dir`; returns the metrics.json entries (tta, tta_views, <stage>/auroc_*, images/s)."""
    out = Path(out_dir)
    write_predictions(out / PREDICTIONS_TTA_FILE, predictions_frame(ids, probs, targets, pathologies))
    table = write_auroc(out / AUROC_TTA_FILE, probs, targets, pathologies)
    log.info("Test AUROC with tta=%s (%d views per image, %d images):\n%s", mode, n_views(mode), len(ids),
             format_auroc_table(table))
    metrics: dict[str, Any] = {"tta": mode, "tta_views": n_views(mode), "tta_infer_images_per_s": images_per_s}
    for row in table.itertuples():
        key = f"{stage}/auroc_mean" if row.pathology == "mean" else f"{stage}/auroc/{row.pathology}"
        metrics[key] = float(row.auroc) if not math.isnan(row.auroc) else float("nan")
    return metrics


def copy_tta(source_dir: Path, out_dir: Path, metrics: dict[str, Any], stage: str = "test_tta") -> dict[str, Any]:
    """The TTA pass already written into `source_dir` (its files, and its entries of `metrics`, that folder's
    metrics.json content) copied into `out_dir`, for a folder whose checkpoint is the same one (a top-k member that
    is the run's tested checkpoint). Returns the metrics.json entries, as `write_tta` does."""
    import shutil

    for name in (PREDICTIONS_TTA_FILE, AUROC_TTA_FILE):
        shutil.copyfile(Path(source_dir) / name, Path(out_dir) / name)
    keys = ("tta", "tta_views", "tta_infer_images_per_s")
    return {k: v for k, v in metrics.items() if k in keys or k.startswith(f"{stage}/")}
