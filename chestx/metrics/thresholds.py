"""Operating-point selection on validation data, and operating-point tables.

Methods (per pathology, NaN labels masked, candidate thresholds = the unique observed
scores, predicted positive means ``prob >= threshold``):

- ``youden``: maximise Youden's J = sensitivity + specificity - 1 (Youden 1950, "Index for
  rating diagnostic tests", Cancer 3:32-35; Fluss, Faraggi & Reiser 2005, Biometrical
  Journal 47:458-472);
- ``f1``: maximise F1 = 2 TP / (2 TP + FP + FN) (van Rijsbergen 1979, "Information
  Retrieval", ch. 7; Lipton, Elkan & Naryanaswamy 2014, "Optimal thresholding of classifiers
  to maximize F1 measure", ECML-PKDD);
- ``sensitivity``: the highest threshold whose sensitivity is >= the target (screening
  operating point; the lowest threshold always has sensitivity 1, so one exists).

Ties: among thresholds reaching the same optimum the HIGHEST one is chosen (the most
conservative rule: fewest predicted positives for the same criterion value).

The rates at every candidate come from scikit-learn's ``roc_curve`` with
``drop_intermediate=False`` (every distinct score is kept; its thresholds are descending
and its first one, +inf in sklearn >= 1.3 and max + 1 before, predicts nothing and is dropped).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from chestx.metrics.auroc import _check_scores, check_eval_labels

logger = logging.getLogger(__name__)

__all__ = ["THRESHOLD_METHODS", "operating_points", "select_thresholds"]

THRESHOLD_METHODS = ("youden", "f1", "sensitivity")


def _curve(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate thresholds (descending unique scores) with sensitivity and 1 - specificity at each.

    scores, y: (n,) observed cells with both classes. Returns thresholds (T,), tpr (T,),
    fpr (T,) for ``s >= t``, from sklearn's ``roc_curve`` without its leading no-positive point.
    """
    from sklearn.metrics import roc_curve  # lazy: sklearn.metrics takes ~2 s to import

    fpr, tpr, thresholds = roc_curve(y == 1.0, scores, drop_intermediate=False)
    return thresholds[1:], tpr[1:], fpr[1:]


def select_thresholds(
    probs: np.ndarray, labels: np.ndarray, method: str = "youden", target_sensitivity: float = 0.9
) -> np.ndarray:
    """Per-pathology decision thresholds chosen on validation data. probs, labels: (N, K) -> (K,).

    A pathology with only one class among its known cells gets NaN (with a warning).
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold method {method!r}; valid methods: {', '.join(THRESHOLD_METHODS)}")
    if method == "sensitivity" and not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
    labels = check_eval_labels(labels)
    probs = _check_scores(probs, labels)
    out = np.full(labels.shape[1], np.nan)
    for k in range(labels.shape[1]):
        observed = ~np.isnan(labels[:, k])
        scores, y = probs[observed, k], labels[observed, k]
        n_pos = int((y == 1.0).sum())
        n_neg = y.size - n_pos
        if n_pos == 0 or n_neg == 0:
            logger.warning("threshold undefined for column %d: only one class (n_pos=%d, n_neg=%d)", k, n_pos, n_neg)
            continue
        thresholds, tpr, fpr = _curve(scores, y)  # descending: argmax = the highest threshold on ties
        if method == "youden":
            out[k] = thresholds[np.argmax(tpr - fpr)]  # J = sens + spec - 1
        elif method == "f1":
            tp, fp = np.rint(tpr * n_pos), np.rint(fpr * n_neg)  # exact counts back from tp / n_pos, fp / n_neg
            out[k] = thresholds[np.argmax(2.0 * tp / (2.0 * tp + fp + (n_pos - tp)))]  # denominator >= n_pos > 0
        else:
            out[k] = thresholds[np.argmax(tpr >= target_sensitivity)]  # tpr nondecreasing, tpr[-1] = 1
    return out


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def operating_points(
    probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray, pathologies: Sequence[str]
) -> pd.DataFrame:
    """Confusion counts and rates per pathology at ``prob >= threshold``.

    probs, labels: (N, K); thresholds: (K,). Columns: pathology, threshold, tp, fp, tn, fn,
    sensitivity, specificity, ppv, npv, f1, accuracy, auprc, n_pos, n_neg. Rates with a zero
    denominator are NaN; a NaN threshold gives NaN counts and rates; auprc is sklearn's
    average precision over known cells (NaN with one class).
    """
    from sklearn.metrics import average_precision_score  # lazy: sklearn is slow to import

    labels = check_eval_labels(labels)
    probs = _check_scores(probs, labels)
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    names = list(pathologies)
    if thresholds.size != labels.shape[1] or len(names) != labels.shape[1]:
        raise ValueError(f"{thresholds.size} thresholds / {len(names)} names for {labels.shape[1]} columns")
    rows = []
    nan = float("nan")
    for k, name in enumerate(names):
        observed = ~np.isnan(labels[:, k])
        scores, y = probs[observed, k], labels[observed, k] == 1.0
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        auprc = float(average_precision_score(y, scores)) if n_pos and n_neg else nan
        row = {"pathology": name, "threshold": float(thresholds[k])}
        if np.isnan(thresholds[k]):
            row.update(dict.fromkeys(
                ["tp", "fp", "tn", "fn", "sensitivity", "specificity", "ppv", "npv", "f1", "accuracy"], nan
            ))
        else:
            pred = scores >= thresholds[k]
            tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
            fn, tn = n_pos - tp, n_neg - fp
            row.update({
                "tp": tp, "fp": fp, "tn": tn, "fn": fn,
                "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
                "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn),
                "f1": _ratio(2 * tp, 2 * tp + fp + fn), "accuracy": _ratio(tp + tn, n_pos + n_neg),
            })
        row.update({"auprc": auprc, "n_pos": n_pos, "n_neg": n_neg})
        rows.append(row)
    return pd.DataFrame(rows)
