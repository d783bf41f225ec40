"""Ranking metrics beyond AUROC on a block of bootstrap weights, and the registry the report reads (`METRICS`).

Every metric here has one signature, `fn(scores, y, weights) -> values`: scores (n,), y (n,) in {0, 1} (known cells
only), weights (B, n) non-negative integer multiplicities (one row per patient-bootstrap resample; a row of ones is
the full data). `chestx.metrics.bootstrap.bootstrap_metric` takes any such function, so a new metric is one function
here and one line in `METRICS` (then its name in the report's `metrics=[...]`).

Both metrics below read the weighted cumulative counts of true and false positives at each distinct score (highest
first), as scikit-learn's `_binary_clf_curve` does; a weight of 0 leaves an image out. So each equals sklearn on the
materialised resample (`average_precision_score`, and `roc_curve(..., drop_intermediate=False)` for the sensitivity
at a specificity), which tests/metrics/test_ranking.py checks draw by draw.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
import numpy as np

from chestx.metrics.bootstrap import MetricFn, weighted_auroc

__all__ = ["METRICS", "Metric", "average_precision", "metric_names", "sensitivity_at_specificity"]

_SPEC_TOLERANCE = 1e-12  # 1 - 9/90 is 0.9000000000000000222: a specificity equal to the target counts as reached


def _cumulative_counts(scores: np.ndarray, y: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted true / false positives at each distinct score, highest first. -> tps, fps (B, T) float64."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")  # (n,) highest score first
    s = np.asarray(scores, np.float64)[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # (T,) last position of each distinct score
    w = np.asarray(weights, np.float64)[:, order]  # (B, n)
    pos = np.asarray(y, np.float64)[order] == 1.0  # (n,)
    tps = np.cumsum(np.where(pos[None], w, 0.0), axis=1)[:, last]  # (B, T)
    fps = np.cumsum(np.where(pos[None], 0.0, w), axis=1)[:, last]  # (B, T)
    return tps, fps


def average_precision(scores: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUPRC as sklearn's `average_precision_score`: sum over thresholds of (R_t - R_{t-1}) * P_t. -> (B,).

    NaN where a resample has no positive or no negative weight (as for AUROC, the resample is left out)."""
    tps, fps = _cumulative_counts(scores, y, weights)
    total_pos, total_neg = tps[:, -1], fps[:, -1]  # (B,)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)  # (B, T); a zero-weight group adds no recall
        recall = tps / total_pos[:, None]  # (B, T)
        gain = np.diff(recall, axis=1, prepend=0.0)  # (B, T)
        out = (gain * precision).sum(axis=1)
    out[(total_pos == 0) | (total_neg == 0)] = np.nan
    return out


def sensitivity_at_specificity(scores: np.ndarray, y: np.ndarray, weights: np.ndarray,
                               specificity: float = 0.9) -> np.ndarray:
    """Highest sensitivity (TPR) among the ROC points with specificity >= `specificity`, thresholds at the scores
    themselves plus "nothing positive" (TPR 0). -> (B,); NaN where a resample lacks a class."""
    if not 0.0 < specificity < 1.0:
        raise ValueError(f"specificity={specificity}: must be in (0, 1), e.g. 0.9")
    tps, fps = _cumulative_counts(scores, y, weights)
    total_pos, total_neg = tps[:, -1], fps[:, -1]  # (B,)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tps / total_pos[:, None]  # (B, T)
        fpr = fps / total_neg[:, None]  # (B, T)
    reached = (1.0 - fpr) >= specificity - _SPEC_TOLERANCE  # (B, T); TPR and FPR only grow along T
    out = np.where(reached, tpr, 0.0).max(axis=1)  # the "nothing positive" point gives 0
    out[(total_pos == 0) | (total_neg == 0)] = np.nan
    return out


@dataclass(frozen=True)
class Metric:
    """A metric the report can bootstrap: its function, its heading, and what its mean row is called."""

    fn: MetricFn
    title: str
    mean_name: str = "mean"
    delong: bool = False  # AUROC only: paired DeLong tests against the reference


# name -> Metric; a new metric is one function above and one line here (the report's `metrics=[...]` picks them)
METRICS: dict[str, Metric] = {
    "auroc": Metric(weighted_auroc, "AUROC", "mean", delong=True),
    "auprc": Metric(average_precision, "AUPRC (average precision)", "mAP"),
    "sens_at_spec90": Metric(partial(sensitivity_at_specificity, specificity=0.9), "Sensitivity at specificity 0.9"),
}


def metric_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """Check the report's `metrics=[...]`: known names, AUROC among them, no repeats; returns them in order."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"metrics={list(names)}: unknown {unknown}; choose from {sorted(METRICS)}")
    if "auroc" not in names:
        raise ValueError(f"metrics={list(names)}: the report is built on AUROC; keep auroc in the list")
    return list(dict.fromkeys(names))

