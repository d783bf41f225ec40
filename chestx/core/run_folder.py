"""The files every run writes to its folder, and reading them back.

`predictions.csv` (one row per image: image_id, patient_id, the label file's metadata sex, age, view
(and frontal_lateral for CheXpert) when known, then prob_<P> and label_<P> for every pathology, the label
empty when unknown), `auroc.csv` (pathology, auroc, n_pos, n_neg, and a
`mean` row) and `metrics.json`. `chestx.train`, `chestx.evaluate` and `chestx.report` all use these
functions, so the column names live here only.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import traceback
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from chestx.metrics.auroc import masked_auroc

log = logging.getLogger(__name__)

PROB_PREFIX = "prob_"
LABEL_PREFIX = "label_"
PREDICTIONS_FILE = "predictions.csv"
VAL_PREDICTIONS_FILE = "predictions_val.csv"
AUROC_FILE = "auroc.csv"
METRICS_FILE = "metrics.json"
OPERATING_POINTS_FILE = "operating_points.csv"  # written by the clinical step (chestx.runs.clinical)
# label-file metadata carried by predictions files (subgroup attributes, `chestx.metrics.subgroups`)
META_COLUMNS = ("sex", "age", "view", "frontal_lateral")


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def predictions_frame(ids: pd.DataFrame, probs: np.ndarray, labels: np.ndarray, pathologies: list[str]) -> pd.DataFrame:
    """ids: image_id, patient_id and any META_COLUMNS (N rows); probs, labels: (N, K)."""
    assert probs.shape == labels.shape == (len(ids), len(pathologies)), (probs.shape, labels.shape, len(ids))
    columns: dict[str, Any] = {"image_id": ids["image_id"].to_numpy(), "patient_id": ids["patient_id"].to_numpy()}
    columns.update({c: ids[c].to_numpy() for c in META_COLUMNS if c in ids.columns})
    for k, name in enumerate(pathologies):
        columns[PROB_PREFIX + name] = probs[:, k]
        columns[LABEL_PREFIX + name] = pd.array(
            np.where(np.isnan(labels[:, k]), np.nan, labels[:, k]), dtype="Int64"
        ) if np.all(np.isin(labels[:, k][~np.isnan(labels[:, k])], (0.0, 1.0))) else labels[:, k]
    return pd.DataFrame(columns)


def write_predictions(path: Path, frame: pd.DataFrame) -> None:
    _atomic_write_text(path, frame.to_csv(index=False, float_format="%.9g"))


def read_predictions(path: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, list[str]]:
    """Inverse of write_predictions: (ids frame, probs (N,K), labels (N,K), pathologies).

    The ids frame holds image_id, patient_id and the META_COLUMNS the file has.
    """
    frame = pd.read_csv(path, dtype={"image_id": str, "patient_id": str, "sex": str, "view": str,
                                     "frontal_lateral": str})
    pathologies = [c[len(PROB_PREFIX):] for c in frame.columns if c.startswith(PROB_PREFIX)]
    probs = frame[[PROB_PREFIX + p for p in pathologies]].to_numpy(dtype=np.float64)
    labels = frame[[LABEL_PREFIX + p for p in pathologies]].to_numpy(dtype=np.float64)
    return frame[["image_id", "patient_id", *[c for c in META_COLUMNS if c in frame.columns]]], probs, labels, pathologies


def with_metadata(ids: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """`ids` (image_id, patient_id, in its own row order) with the META_COLUMNS of `frame` (a LabelTable
    frame, one row per image) looked up by image_id."""
    meta = frame.drop_duplicates("image_id").set_index("image_id")
    missing = ~ids["image_id"].isin(meta.index)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} image ids have no row in the label table (first: "
                         f"{ids['image_id'][missing].iloc[0]}): the split and the label table disagree")
    extra = meta.loc[ids["image_id"], [c for c in META_COLUMNS if c in meta.columns]].reset_index(drop=True)
    return pd.concat([ids.reset_index(drop=True), extra], axis=1)


def write_auroc(path: Path, probs: np.ndarray, labels: np.ndarray, pathologies: list[str]) -> pd.DataFrame:
    table = masked_auroc(probs, labels, pathologies)
    _atomic_write_text(path, table.to_csv(index=False, float_format="%.6f"))
    return table


def write_run_predictions(run_dir: Path, ids: dict[str, pd.DataFrame], outputs: dict[str, Any],
                          pathologies: list[str]) -> pd.DataFrame:
    """predictions_val.csv, predictions.csv and auroc.csv of a trained run; returns the AUROC table.

    ids: per stage ("val", "test") the image_id / patient_id of the split in dataset row order;
    outputs: per stage an object with `index` (N,), `probs` (N, K) and `targets` (N, K)
    (`chestx.models.module.EpochOutputs`).
    """
    for stage, filename in (("val", VAL_PREDICTIONS_FILE), ("test", PREDICTIONS_FILE)):
        out = outputs[stage]
        rows = ids[stage].iloc[out.index].reset_index(drop=True)
        write_predictions(Path(run_dir) / filename, predictions_frame(rows, out.probs, out.targets, pathologies))
    test = outputs["test"]
    table = write_auroc(Path(run_dir) / AUROC_FILE, test.probs, test.targets, pathologies)
    log.info("Test AUROC per pathology (%d images, best checkpoint):\n%s", len(test.index), format_auroc_table(table))
    return table


def _clean(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if hasattr(value, "item") and callable(value.item):
        return _clean(value.item())
    return value


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """metrics.json; NaN becomes null so the file is valid JSON."""
    _atomic_write_text(path, json.dumps({k: _clean(v) for k, v in metrics.items()}, indent=2, sort_keys=True))


def read_metrics(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def format_auroc_table(table: pd.DataFrame) -> str:
    """Plain-text table for the terminal."""
    lines = [f"{'pathology':<20} {'AUROC':>7} {'n_pos':>6} {'n_neg':>6}"]
    for row in table.itertuples():
        auc = "   n/a" if math.isnan(row.auroc) else f"{row.auroc:7.3f}"
        lines.append(f"{row.pathology:<20} {auc:>7} {int(row.n_pos):>6} {int(row.n_neg):>6}")
    return "\n".join(lines)


ERROR_FILE = "error.txt"


@contextlib.contextmanager
def failure_recorded(run_dir: Path, **fields: Any) -> Iterator[None]:
    """Run the body; if it raises, write metrics.json with status "failed" (the error and `fields`, e.g.
    model and seed) and the traceback to error.txt, log where, and re-raise. A success clears an old
    error.txt of an earlier attempt in the same folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        yield
    except Exception as error:
        write_metrics(run_dir / METRICS_FILE, {"status": "failed", "error": f"{type(error).__name__}: {error}",
                                               **fields})
        (run_dir / ERROR_FILE).write_text(traceback.format_exc())
        log.error("Run failed: %s: %s (details in %s)", type(error).__name__, error, run_dir / ERROR_FILE)
        raise
