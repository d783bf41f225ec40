"""`test_top_k=true`: every checkpoint a run's ModelCheckpoint kept (`callbacks.model_checkpoint.save_top_k=k`), tested
on the run's test split and written as a member run folder of its own, so that
`python -m chestx.ensemble runs=[<run>/top_k]` combines them like the seeds of a sweep (chestx.runs.ensemble).

    <run>/checkpoints/epoch004-step20.ckpt            the kept checkpoints (TOP_K_CHECKPOINT_NAME), best.ckpt a copy
                                                      of the best of them
    <run>/top_k/<checkpoint stem>/predictions.csv     that checkpoint on the run's test dataloader (plain pass)
    <run>/top_k/<checkpoint stem>/predictions_tta.csv its TTA pass, with the run's tta=hflip|tencrop (chestx.train)
    <run>/top_k/<checkpoint stem>/auroc.csv
    <run>/top_k/<checkpoint stem>/metrics.json        status ok, model, seed, checkpoint (its path), monitor,
                                                      monitor_mode, monitor_score (Lightning's best_k_models), epoch,
                                                      global_step, top_k_rank (1 = best), top_k_of (the run folder),
                                                      test/auroc_*, n_test, and the network's cost (params, MACs,
                                                      the run's measured test images/s)
    <run>/top_k/<checkpoint stem>/config.yaml         the run's config (the member was trained by it)

`chestx.train` reads the kept checkpoints from the callback right after fitting (a later
`trainer.validate/test(ckpt_path=...)` restores the callback's state saved in that checkpoint, which predates the
checkpoints kept after it), tests each with `trainer.test` and writes it with `write_member`.
"""
from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from chestx.core.checkpoint_io import load_checkpoint
from chestx.core.run_folder import (
    AUROC_FILE, BEST_CHECKPOINT, CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE, predictions_frame, top_k_member_dir,
    write_auroc, write_metrics, write_predictions,
)

log = logging.getLogger(__name__)

RAISE_TOP_K = ("raise callbacks.model_checkpoint.save_top_k (e.g. callbacks.model_checkpoint.save_top_k=3 "
               "test_top_k=true), and validate at least that many times (trainer.max_epochs; early stopping may end "
               "the run sooner)")


@dataclass(frozen=True)
class KeptCheckpoint:
    """One checkpoint of a ModelCheckpoint's top k."""

    path: Path
    score: float | None  # the monitored value Lightning ranked it by (None: NaN, ranked last by Lightning)
    rank: int           # 1 = the best


def kept_checkpoints(best_k_models: Mapping[str, Any], mode: str) -> list[KeptCheckpoint]:
    """Lightning's `ModelCheckpoint.best_k_models` ({path: monitored value}) -> the kept checkpoints, best first
    (`mode` max: highest value first; min: lowest). A NaN, which Lightning stored as -inf / +inf, ranks last."""
    if mode not in ("max", "min"):
        raise ValueError(f"ModelCheckpoint mode={mode!r}: expected max or min")
    values = [(Path(str(p)), float(v)) for p, v in best_k_models.items()]
    values.sort(key=lambda item: -item[1] if mode == "max" else item[1])  # stable: ties keep Lightning's order
    return [KeptCheckpoint(path, value if math.isfinite(value) else None, rank)
            for rank, (path, value) in enumerate(values, start=1)]


def copy_best(best_model_path: str | Path, checkpoint_dir: Path) -> Path:
    """`checkpoints/best.ckpt` as a copy of the best kept checkpoint, so everything that reads best.ckpt (evaluate,
    the clinical heatmaps, the model card, a two-stage recipe) finds the best one. A copy, not a link: Lightning
    rewrites a checkpoint file in place, which would change a hard link's other name too."""
    target = Path(checkpoint_dir) / BEST_CHECKPOINT
    source = Path(best_model_path)
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)
    return target


def few_kept_message(kept: list[KeptCheckpoint], save_top_k: int) -> str | None:
    """The warning of a run that kept fewer than 2 checkpoints (no top-k ensemble possible); None otherwise."""
    if len(kept) >= 2:
        return None
    return (f"test_top_k=true: the run kept {len(kept)} checkpoint{'' if len(kept) == 1 else 's'} "
            f"(callbacks.model_checkpoint.save_top_k={save_top_k}): an ensemble of its top-k checkpoints needs 2 or "
            f"more; {RAISE_TOP_K}")


def checkpoint_position(path: Path, trust: bool = False) -> tuple[int | None, int | None]:
    """(epoch, global_step) a Lightning checkpoint was written at (memory-mapped: the weights are not read)."""
    content = load_checkpoint(path, trust=trust, mmap=True)
    return content.get("epoch"), content.get("global_step")


def write_member(run_dir: Path, kept: KeptCheckpoint, ids: pd.DataFrame, index: np.ndarray, probs: np.ndarray,
                 targets: np.ndarray, pathologies: list[str], info: dict[str, Any], trust: bool = False
                 ) -> dict[str, Any]:
    """One kept checkpoint's test into `<run>/top_k/<checkpoint stem>/`; returns its metrics.json content.

    ids: image_id, patient_id (+ metadata) of the test split in dataset row order; index (N,), probs (N, K),
    targets (N, K): the test epoch's outputs (`chestx.models.module.EpochOutputs`); info: what the member shares with
    its run (model, seed, data, monitor, cost).
    """
    out = top_k_member_dir(run_dir, kept.path)
    out.mkdir(parents=True, exist_ok=True)
    rows = ids.iloc[index].reset_index(drop=True)
    write_predictions(out / PREDICTIONS_FILE, predictions_frame(rows, probs, targets, pathologies))
    table = write_auroc(out / AUROC_FILE, probs, targets, pathologies)
    if (Path(run_dir) / CONFIG_FILE).is_file():
        shutil.copyfile(Path(run_dir) / CONFIG_FILE, out / CONFIG_FILE)
    epoch, step = checkpoint_position(kept.path, trust)
    per = dict(zip(table["pathology"], table["auroc"]))
    metrics = {"status": "ok", "error": None, **info, "top_k_of": str(run_dir), "checkpoint": str(kept.path),
               "monitor_score": kept.score, "top_k_rank": kept.rank, "epoch": epoch, "global_step": step,
               "tta": "none", "test/auroc_mean": per.pop("mean"), **{f"test/auroc/{p}": v for p, v in per.items()},
               "n_test": len(rows)}
    write_metrics(out / METRICS_FILE, metrics)
    log.info("top-k member %d (%s %s, epoch %s): test mean AUROC %.4f -> %s", kept.rank, info.get("monitor"),
             "n/a" if kept.score is None else f"{kept.score:.4f}", epoch, metrics["test/auroc_mean"], out)
    return metrics
