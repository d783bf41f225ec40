"""Scoring predictions made elsewhere against a dataset's labels and split (`chestx.evaluate`).

The CSV holds an image-id column and one probability column per pathology, named
`<prefix><pathology>`. The id column is the first of `image_id` (chestx's predictions.csv),
`Image Index` (NIH) and `Path` (CheXpert) that the CSV has, unless `id_column` names another.
Evaluation labels follow training's rule (`chestx.data.labels.table.evaluation_targets`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chestx.core.run_folder import (
    AUROC_FILE, META_COLUMNS, METRICS_FILE, PREDICTIONS_FILE, PROB_PREFIX, SPLIT_FILE, VAL_PREDICTIONS_FILE,
    format_auroc_table, predictions_frame, write_auroc, write_metrics, write_predictions,
)
from chestx.data.labels.table import LabelTable, evaluation_targets
from chestx.data.labels.splits import save_split

log = logging.getLogger(__name__)


# image-id columns recognised without `id_column=`, in this order: chestx's predictions.csv, NIH, CheXpert
ID_COLUMNS = ("image_id", "Image Index", "Path")


class EvaluationError(ValueError):
    """A predictions file that cannot be scored; the message names the column / ids / value and the fix."""


def find_id_column(path: Path, columns: list[str], id_column: str | None = None) -> str:
    """`id_column` when given (it must exist), else the first of ID_COLUMNS among `columns`."""
    if id_column is not None:
        if id_column not in columns:
            raise EvaluationError(
                f"predictions CSV {path} has no image-id column id_column={id_column!r} (columns: {columns}); "
                f"set id_column=<its name>, or id_column=null for the first of {list(ID_COLUMNS)} present")
        return id_column
    found = [c for c in ID_COLUMNS if c in columns]
    if not found:
        raise EvaluationError(
            f"predictions CSV {path} has none of the image-id columns {list(ID_COLUMNS)} that id_column=null "
            f"recognises (columns: {columns}); set id_column=<the name of its image-id column>")
    return found[0]


def read_prediction_csv(path: Path, id_column: str | None, prefix: str,
                        pathologies: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """ids (M,) str and probabilities (M, K) in `pathologies` order, after checking columns and values.

    `id_column=None` picks the first of ID_COLUMNS the CSV has.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"predictions={str(path)!r} does not exist: pass the CSV of the model's outputs")
    id_column = find_id_column(path, list(pd.read_csv(path, nrows=0).columns), id_column)
    log.info("Image ids from column %r of %s", id_column, path)
    # ids stay text as written ("NA", "None" are ids, not missing values); an empty cell is missing everywhere
    frame = pd.read_csv(path, dtype={id_column: str}, keep_default_na=False, na_values=[""])
    wanted = [prefix + p for p in pathologies]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise EvaluationError(
            f"predictions CSV {path} lacks {len(missing)} of {len(wanted)} probability columns: {missing}; "
            f"columns are named <prefix><pathology> with prefix={prefix!r}; found {list(frame.columns)}; "
            "set prefix= to the CSV's prefix (prefix='' for bare pathology names)")
    blank = frame[id_column].isna() | (frame[id_column].str.strip() == "")
    if blank.any():
        raise EvaluationError(f"predictions CSV {path}: {int(blank.sum())} rows have an empty {id_column!r} (first "
                              f"at lines {[int(i) + 2 for i in np.flatnonzero(blank.to_numpy())[:5]]}); every row "
                              "needs its image id")
    ids = frame[id_column].str.strip().to_numpy(dtype=object)
    duplicated = pd.Series(ids).duplicated()
    if duplicated.any():
        raise EvaluationError(f"predictions CSV {path}: {int(duplicated.sum())} image ids appear twice "
                              f"(first: {ids[duplicated.to_numpy()][0]}); one row per image")
    values = frame[wanted].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)  # (M, K)
    bad = ~np.isfinite(values) | (values < 0.0) | (values > 1.0)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raw = frame[wanted[col]].iloc[row]
        raise EvaluationError(
            f"predictions CSV {path}: {int(bad.sum())} probabilities are missing, not numbers or outside [0, 1] "
            f"(first: image {ids[row]}, column {wanted[col]}, value {raw!r}); pass probabilities, not logits "
            "(apply a sigmoid first)")
    return ids, values


def align_predictions(
    ids: np.ndarray, probs: np.ndarray, table: LabelTable, split: np.ndarray, stage: str = "test",
    allow_missing: bool = False, unknown_ids: str = "error",
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows of `stage`: (image_id, patient_id + metadata frame, probs (N, K), evaluation labels (N, K)).

    Evaluation labels follow training's rule: uncertain and soft labels are unknown (NaN).
    """
    known = pd.Index(table.frame["image_id"].astype(str))
    unknown = ~pd.Index(ids).isin(known)
    if unknown.any() and unknown_ids == "ignore":  # a dataset that relabels a subset of the model's images
        log.info("%d of %d predictions are of images outside the label file: not scored", int(unknown.sum()), len(ids))
    elif unknown.any():
        raise EvaluationError(
            f"{int(unknown.sum())} of {len(ids)} image ids in the predictions are not in the dataset's label file "
            f"(first: {list(ids[unknown][:5])}); check id_column and data= / data.root=")
    rows = np.flatnonzero(split == stage)  # dataset rows of the stage
    position = pd.Series(np.arange(len(ids)), index=ids)
    stage_ids = known[rows]
    present = stage_ids.isin(position.index)
    if not present.all():
        shown = list(stage_ids[~present][:5])
        message = (f"{int((~present).sum())} of {len(rows)} {stage} images have no prediction (first: {shown})")
        if not allow_missing:
            raise EvaluationError(message + "; score them all, or set allow_missing=true to score the rest "
                                  "(the AUROC is then not comparable with runs scored on the whole split)")
        log.warning("%s: scoring the %d that have one", message, int(present.sum()))
        rows, stage_ids = rows[present], stage_ids[present]
    order = position.loc[stage_ids].to_numpy()
    labels = evaluation_targets(table.labels[rows], table.uncertain[rows]).astype(np.float64)  # (N, K)
    frame = table.frame.iloc[rows][["image_id", "patient_id"]].astype(str).reset_index(drop=True)
    meta = [c for c in META_COLUMNS if c in table.frame.columns]  # sex, age, view: subgroups of external models
    frame[meta] = table.frame.iloc[rows][meta].reset_index(drop=True)
    return frame, probs[order], labels


def evaluate(
    predictions: Path, table: LabelTable, split: np.ndarray, run_dir: Path, prefix: str = PROB_PREFIX,
    id_column: str | None = None, name: str | None = None, allow_missing: bool = False,
    extra: dict[str, Any] | None = None, unknown_ids: str = "error",
) -> dict[str, Any]:
    """Score `predictions` on the test split and write the run folder; returns metrics.json's content."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pathologies = list(table.pathologies)
    ids, probs = read_prediction_csv(predictions, id_column, prefix, pathologies)
    save_split(run_dir / SPLIT_FILE, table.frame, split)
    frame, test_probs, test_labels = align_predictions(ids, probs, table, split, "test", allow_missing, unknown_ids)
    write_predictions(run_dir / PREDICTIONS_FILE, predictions_frame(frame, test_probs, test_labels, pathologies))
    try:  # validation predictions only when the CSV covers the whole validation split
        val = align_predictions(ids, probs, table, split, "val", allow_missing=False, unknown_ids=unknown_ids)
        write_predictions(run_dir / VAL_PREDICTIONS_FILE, predictions_frame(*val, pathologies))
    except EvaluationError:
        log.info("The predictions do not cover the validation split: no %s", VAL_PREDICTIONS_FILE)
    auroc = write_auroc(run_dir / AUROC_FILE, test_probs, test_labels, pathologies)
    log.info("Test AUROC of %s (%d images):\n%s", name, len(frame), format_auroc_table(auroc))
    per = dict(zip(auroc["pathology"], auroc["auroc"]))
    metrics: dict[str, Any] = {
        "status": "ok", "error": None, "model": name or Path(predictions).stem, "predictions": str(predictions),
        "test/auroc_mean": per.pop("mean"), **{f"test/auroc/{p}": v for p, v in per.items()},
        "n_test": len(frame), "wall_time_s": time.perf_counter() - started,
        "params": None, "macs": None, "train_images_per_s": None, "infer_images_per_s": None,
        "peak_memory_mb": None, "epochs": None, "best_epoch": None,
    }
    metrics.update(extra or {})
    write_metrics(run_dir / METRICS_FILE, metrics)
    return metrics
