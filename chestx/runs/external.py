"""`external/<dataset>/` of a run folder: the model scored on another dataset's test split.

    <run>/external/chexpert/predictions.csv   image_id, patient_id, sex, age, view, prob_<P>, label_<P>
    <run>/external/chexpert/auroc.csv         the shared findings, under the model's names, and `mean`
    <run>/external/chexpert/thresholds.csv    the run's validation-frozen thresholds (when it has them)
    <run>/external/chexpert/subgroups.csv     subgroups of the other dataset, at those thresholds
    <run>/external/chexpert/mapping.csv       model name -> the other dataset's name of each finding

Written by `chestx.train ... test_data=[chexpert]` after the usual test and by
`chestx.evaluate ckpt=... data=chexpert`; `chestx.report` reads them into its train x test matrix.
metrics.json gets `external_<dataset>/auroc_mean` and `external_<dataset>/auroc/<P>`.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from chestx.core.run_folder import (
    AUROC_FILE, MAPPING_FILE, PREDICTIONS_FILE, THRESHOLDS_FILE, predictions_frame, write_auroc, write_predictions,
)

log = logging.getLogger(__name__)


def write_external(out_dir: Path, scores: Any, thresholds: np.ndarray | None = None,
                   subgroups: Callable[[Path], Any] | None = None) -> dict[str, float]:
    """Write one `ExternalScores` into `out_dir`; `thresholds` (K_shared,) frozen on the training dataset's
    validation split (None: TPR / FNR of the subgroups stay empty). Returns the metrics.json entries."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_predictions(out / PREDICTIONS_FILE, predictions_frame(scores.ids, scores.probs, scores.targets,
                                                                scores.pathologies))
    table = write_auroc(out / AUROC_FILE, scores.probs, scores.targets, scores.pathologies)
    pd.DataFrame({"pathology": scores.pathologies, "dataset_name": scores.data_names}).to_csv(out / MAPPING_FILE,
                                                                                            index=False)
    if thresholds is not None:
        pd.DataFrame({"pathology": scores.pathologies, "threshold": thresholds,
                      "method": "frozen on the training dataset's validation split"}).to_csv(out / THRESHOLDS_FILE,
                                                                                            index=False)
    if subgroups is not None:
        subgroups(out)
    stage = f"external_{out.name}"
    metrics = {f"{stage}/auroc_mean" if row.pathology == "mean" else f"{stage}/auroc/{row.pathology}":
               float(row.auroc) if not math.isnan(row.auroc) else float("nan") for row in table.itertuples()}
    metrics[f"{stage}/n_images"] = len(scores.ids)
    log.info("External test on %s (%d images): mean AUROC %.3f over %d shared findings -> %s", scores.dataset,
             len(scores.ids), metrics[f"{stage}/auroc_mean"], len(scores.pathologies), out)
    return metrics


def thresholds_for(predictor: Any, pathologies: list[str]) -> np.ndarray | None:
    """The predictor's frozen thresholds of `pathologies`, or None when it only has the 0.5 default."""
    if str(predictor.threshold_source).startswith("default"):
        return None
    return np.array([predictor.thresholds[predictor.pathologies.index(p)] for p in pathologies])
