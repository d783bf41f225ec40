"""Ranking metrics beyond AUROC on a block of bootstrap weights, and the registry the report reads (`METRICS`).

Every metric here has one signature, `fn(scores, y, weights) -> values`: scores (n,), y (n,) in {0, 1} (known cells
only), weights (B, n) non-negative integer multiplicities (one row per patient-bootstrap resample; a row of ones is
the full data). `chestx.metrics.bootstrap.bootstrap_metric` takes any such function, so a new metric is one function
here and one line in `METRICS` (then its name in the report's `metrics=[...]`).

Both metrics below read the weighted cumulative counts of true and false positives at each distinct score (highest
first), as scikit-learn's `_binary_clf_curve` does, at the scores that hold a positive (only there can recall or
sensitivity change); a weight of 0 leaves an image out. So each equals sklearn on the
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


def _counts_at_positives(scores: np.ndarray, y: np.ndarray, weights: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted true / false positives at each distinct score that holds a positive, highest score first.

    -> tps, fps (B, G) float64 and the totals of positive / negative weight (B,). Between two such scores only false
    positives grow, so precision-recall steps and the best sensitivity at a specificity are all read at these G
    points (G <= n_pos); the negatives are summed per stretch between them (one pass, `np.add.reduceat`).
    """
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="stable")  # (n,) highest score first
    s, pos = scores[order], np.asarray(y, np.float64)[order] == 1.0  # (n,)
    group = np.r_[0, np.cumsum(np.diff(s) != 0)]  # (n,) distinct-score group of each sorted position
    ends = np.searchsorted(group, np.unique(group[pos]), side="right")  # (G,) end (exclusive) of each positive group
    w = np.asarray(weights)[:, order]  # (B, n)
    # integer sums are exact in float32 below 2**24 (a factor-2 margin kept): half the memory traffic
    dtype = np.float32 if w.size == 0 or w.sum(axis=1).max() < 2**23 else np.float64
    w_pos = w[:, pos].astype(dtype)  # (B, n_pos)
    w_neg = w[:, ~pos].astype(dtype)  # (B, n_neg)
    pos_before = np.cumsum(pos)  # (n,) positives at or before each sorted position
    pos_cut = pos_before[ends - 1]  # (G,) positives up to the end of each positive group
    neg_cut = ends - pos_cut  # (G,) negatives up to the end of each positive group
    tps = np.cumsum(w_pos, axis=1, dtype=np.float64)[:, pos_cut - 1]  # (B, G)
    total_neg = w_neg.sum(axis=1, dtype=np.float64)  # (B,)
    if w_neg.shape[1] == 0:
        fps = np.zeros_like(tps)
    else:
        starts = np.r_[0, neg_cut]  # (G + 1,) stretches of negatives; reduceat needs in-range, increasing starts
        valid = starts < w_neg.shape[1]
        sums = np.zeros((w.shape[0], starts.size))
        sums[:, valid] = np.add.reduceat(w_neg, starts[valid], axis=1, dtype=np.float64)
        sums[:, valid] *= np.r_[np.diff(starts) > 0, True][valid]  # an empty stretch reads one element: zero it
        fps = np.cumsum(sums, axis=1)[:, :-1]  # (B, G) negatives above or tied with each positive group's score
    return tps, fps, tps[:, -1] if tps.shape[1] else np.zeros(w.shape[0]), total_neg


def average_precision(scores: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUPRC as sklearn's `average_precision_score`: sum over thresholds of (R_t - R_{t-1}) * P_t. -> (B,).

    NaN where a resample has no positive or no negative weight (as for AUROC, the resample is left out)."""
    tps, fps, total_pos, total_neg = _counts_at_positives(scores, y, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)  # (B, G); a zero-weight group adds no recall
        gain = np.diff(tps, axis=1, prepend=0.0) / total_pos[:, None]  # (B, G) recall steps
        out = (gain * precision).sum(axis=1)
    out[(total_pos == 0) | (total_neg == 0)] = np.nan
    return out


def sensitivity_at_specificity(scores: np.ndarray, y: np.ndarray, weights: np.ndarray,
                               specificity: float = 0.9) -> np.ndarray:
    """Highest sensitivity (TPR) among the ROC points with specificity >= `specificity`, thresholds at the scores
    themselves plus "nothing positive" (TPR 0). -> (B,); NaN where a resample lacks a class."""
    if not 0.0 < specificity < 1.0:
        raise ValueError(f"specificity={specificity}: must be in (0, 1), e.g. 0.9")
    tps, fps, total_pos, total_neg = _counts_at_positives(scores, y, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tps / total_pos[:, None]  # (B, G)
        fpr = fps / total_neg[:, None]  # (B, G)
    # TPR only grows at the G points, so the best point within the specificity is one of them (or TPR 0)
    reached = (1.0 - fpr) >= specificity - _SPEC_TOLERANCE  # (B, G)
    out = np.where(reached, tpr, 0.0).max(axis=1, initial=0.0)
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

