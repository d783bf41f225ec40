"""Cross-dataset evaluation: a model trained on one dataset scored on another dataset's test split.

Only the findings both datasets define are scored (the vocabulary `chestx.data.labels.table.FINDINGS`: the same name,
or synonyms such as NIH `Effusion` = CheXpert `Pleural Effusion`; docs/datasets/findings.md), each under the model's own name, with
the other dataset's ground truth as every metric reads it (`evaluation_targets`: uncertain and soft
cells unknown). Images are preprocessed exactly as the model was trained (size, channels,
normalisation from the checkpoint), in float32 per image on the loader side (`Predictor.transform`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from chestx.core.run_folder import META_COLUMNS  # the label file's metadata carried into predictions.csv (subgroups)
from chestx.data.loading.dataset import FileSource, XrayDataset
from chestx.data.labels.table import DataError, evaluation_targets, shared_pathologies
from chestx.data.datasets.base import ChestXData
from chestx.inference.predictor import Predictor

log = logging.getLogger(__name__)


@dataclass
class ExternalScores:
    """Predictions of one model on another dataset's split, on the shared findings."""

    dataset: str  # e.g. "CheXpertData"
    ids: pd.DataFrame  # (N, ...) image_id, patient_id and the label file's metadata
    probs: np.ndarray  # (N, K_shared) float64
    targets: np.ndarray  # (N, K_shared) float32 1/0/NaN
    pathologies: list[str]  # the model's names of the shared findings
    data_names: list[str]  # the same findings as the other dataset names them
    images_per_s: float | None = None  # the scoring pass, loading included (this machine)


def score_external(predictor: Predictor, data: ChestXData, split: str = "test", batch_size: int = 64,
                   num_workers: int = 0, tta: bool = False) -> ExternalScores:
    """Run `predictor` over `data`'s `split` (labels, split and files resolved as training would); `tta=True`:
    the predictor's test-time augmentation (`Predictor.tta_probabilities`, its `tta` mode) instead of one pass."""
    data.prepare()
    assert data.table is not None and data.split is not None
    pairs = shared_pathologies(predictor.pathologies, data.pathologies)
    if not pairs:
        raise DataError(
            f"the model predicts {predictor.pathologies} and {type(data).__name__} labels {data.pathologies}: no "
            "finding in common (chestx.data.labels.table.FINDINGS, docs/datasets/findings.md), nothing to score; for "
            "CheXpert pass "
            "findings=all to score all 7 shared findings"
        )
    model_idx, data_idx = (np.array(ix) for ix in zip(*pairs))
    rows = np.flatnonzero(data.split == split)
    table = data.table
    targets = evaluation_targets(table.labels[rows], table.uncertain[rows])[:, data_idx]  # (N, K_shared)
    frame = table.frame.iloc[rows]
    ids = frame[["image_id", "patient_id", *[c for c in META_COLUMNS if c in frame.columns]]].reset_index(drop=True)
    dataset = XrayDataset(FileSource([data.paths[i] for i in rows], data.dicom_window), targets, targets, np.zeros_like(targets, bool),
                          predictor.tta_transform if tta else predictor.transform)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    score = predictor.tta_probabilities if tta else predictor.probabilities
    started = time.perf_counter()
    probs = np.concatenate([score(batch["image"]) for batch in loader])[:, model_idx]
    seconds = time.perf_counter() - started
    names = [predictor.pathologies[k] for k in model_idx]
    data_names = [data.pathologies[j] for j in data_idx]
    log.info("Scored %s on %d %s images of %s, on %d shared findings: %s", predictor.model_name, len(rows), split,
             type(data).__name__, len(names),
             ", ".join(n if n == d else f"{n} = {d}" for n, d in zip(names, data_names)))
    return ExternalScores(type(data).__name__, ids, probs, targets, names, data_names, len(rows) / max(seconds, 1e-9))


def checkpoint_device() -> str:
    """Where a scoring pass runs: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"

