"""Masked per-pathology AUROC (exact, tie-aware Mann-Whitney statistic).

The empirical area under the ROC curve equals the Mann-Whitney U statistic divided by
``n_pos * n_neg``, ties between a positive and a negative counting 1/2 (Bamber 1975,
"The area above the ordinal dominance graph and the area below the receiver operating
characteristic graph", J. Math. Psychol. 12:387-415; Hanley & McNeil 1982, "The meaning
and use of the area under a receiver operating characteristic (ROC) curve", Radiology
143:29-36). With mid-ranks over the pooled scores:

    AUC = (sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos * n_neg)

which matches ``sklearn.metrics.roc_auc_score`` (trapezoidal rule) to rounding.

Label convention (docs/design.md): float (N, K) matrix of 1 / 0 / NaN; NaN = unknown and
masked per pathology. Soft labels (0 < y < 1, from label smoothing) are training targets,
not ground truth, and are rejected here.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["auroc_vector", "check_eval_labels", "masked_auroc", "midranks"]


def midranks(x: np.ndarray) -> np.ndarray:
    """1-based mid-ranks of a 1-D array (ties share their average rank), like scipy's rankdata."""
    x = np.asarray(x).reshape(-1)
    order = np.argsort(x, kind="stable")  # (n,)
    xs = x[order]
    starts = np.concatenate([[0], np.flatnonzero(xs[1:] != xs[:-1]) + 1])  # first index of each tie group
    ends = np.concatenate([starts[1:], [x.size]])
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def check_eval_labels(labels: np.ndarray) -> np.ndarray:
    """Return ``labels`` as float64 after checking every known cell is exactly 0 or 1.

    Raises ValueError for soft labels (0 < y < 1) or any other value; NaN is allowed.
    """
    arr = np.asarray(labels, dtype=np.float64)
    known = arr[~np.isnan(arr)]
    bad = known[(known != 0.0) & (known != 1.0)]
    if bad.size:
        examples = ", ".join(f"{v:g}" for v in np.unique(bad)[:5])
        raise ValueError(
            "evaluation labels must be 0/1/NaN (NaN = unknown); got "
            f"{bad.size} cell(s) with other values, e.g. {examples}. Soft labels from "
            "label smoothing (lsr_* policies) are training targets, not ground truth."
        )
    return arr


def _check_scores(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Scores as float64, same shape as labels, finite wherever the label is known."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.shape != labels.shape:
        raise ValueError(f"probs shape {arr.shape} != labels shape {labels.shape}")
    if not np.all(np.isfinite(arr[~np.isnan(labels)])):
        raise ValueError("probs must be finite wherever the label is known")
    return arr


def _auc_1d(scores: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
    """Mann-Whitney AUC of one observed column. scores, y: (n,) with y in {0, 1}."""
    pos = y == 1.0
    n_pos = int(pos.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan"), n_pos, n_neg
    ranks = midranks(scores)  # (n,) mid-ranks, exact halves in float64
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg)), n_pos, n_neg


def _auroc_with_counts(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K,) AUROC, n_pos, n_neg for validated (N, K) float64 inputs."""
    k_dim = labels.shape[1]
    auc = np.full(k_dim, np.nan)
    n_pos = np.zeros(k_dim, dtype=np.int64)
    n_neg = np.zeros(k_dim, dtype=np.int64)
    for k in range(k_dim):
        observed = ~np.isnan(labels[:, k])
        auc[k], n_pos[k], n_neg[k] = _auc_1d(probs[observed, k], labels[observed, k])
    return auc, n_pos, n_neg


def auroc_vector(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-pathology AUROC, NaN-masked. probs, labels: (N, K) -> (K,); NaN where one class."""
    labels = check_eval_labels(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (N, K), got shape {labels.shape}")
    probs = _check_scores(probs, labels)
    return _auroc_with_counts(probs, labels)[0]


def masked_auroc(probs: np.ndarray, labels: np.ndarray, pathologies: Sequence[str]) -> pd.DataFrame:
    """Per-pathology AUROC table with counts, then a ``mean`` row.

    probs, labels: (N, K). Returns columns pathology, auroc, n_pos, n_neg; the final row
    has pathology="mean", the NaN-mean of the per-pathology AUROCs and the summed counts.
    A pathology with only one class among its known cells gets AUROC NaN and a warning.
    """
    labels = check_eval_labels(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (N, K), got shape {labels.shape}")
    probs = _check_scores(probs, labels)
    names = list(pathologies)
    if len(names) != labels.shape[1]:
        raise ValueError(f"{len(names)} pathology names for {labels.shape[1]} label columns")
    auc, n_pos, n_neg = _auroc_with_counts(probs, labels)
    for name, a, p, n in zip(names, auc, n_pos, n_neg):
        if np.isnan(a):
            logger.warning("AUROC undefined for %s: only one class present (n_pos=%d, n_neg=%d)", name, p, n)
    mean = float(np.nanmean(auc)) if np.any(~np.isnan(auc)) else float("nan")
    frame = pd.DataFrame({"pathology": names, "auroc": auc, "n_pos": n_pos, "n_neg": n_neg})
    total = pd.DataFrame(
        {"pathology": ["mean"], "auroc": [mean], "n_pos": [int(n_pos.sum())], "n_neg": [int(n_neg.sum())]}
    )
    return pd.concat([frame, total], ignore_index=True)
