"""Calibration of per-pathology probabilities: ECE, reliability bins, temperature scaling.

- Expected calibration error with equal-width bins (Naeini, Cooper & Hauskrecht 2015,
  "Obtaining well calibrated probabilities using Bayesian binning", AAAI; Guo, Pleiss, Sun
  & Weinberger 2017, "On calibration of modern neural networks", ICML). For multi-label
  sigmoid outputs each pathology is a binary problem: a bin's "accuracy" is the fraction of
  positives and its "confidence" the mean predicted probability of the positive class,

      ECE = sum_b (n_b / n) |fraction_positive_b - mean_prob_b|.

  Bins are scikit-learn's ``calibration_curve(strategy="uniform")`` bins: B equal-width
  bins on edges ``linspace(0, 1, B + 1)``, closed on the right, (i/B, (i+1)/B], the first
  one also holding 0, [0, 1/B]. A probability exactly on an inner edge falls in the bin
  below it (sklearn's ``searchsorted(edges[1:-1], p)``).
- Temperature scaling (Guo et al. 2017, sec. 4.2): one scalar T > 0 shared by all
  pathologies, p = sigmoid(z / T), fitted by minimising the masked binary cross-entropy
  on validation logits. T > 1 softens over-confident outputs.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit

from chestx.metrics.auroc import check_eval_labels

logger = logging.getLogger(__name__)

__all__ = ["apply_temperature", "expected_calibration_error", "fit_temperature", "masked_nll", "reliability_bins"]

_LOG_T_BOUNDS = (np.log(1e-2), np.log(1e2))


def _check_probs(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.shape != labels.shape:
        raise ValueError(f"probs shape {arr.shape} != labels shape {labels.shape}")
    known = arr[~np.isnan(labels)]
    if not np.all((known >= 0.0) & (known <= 1.0)):
        raise ValueError("probabilities must lie in [0, 1] wherever the label is known")
    return arr


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> pd.DataFrame:
    """Reliability-diagram table for one pathology. probs, labels: (N,); NaN labels masked.

    Columns: lower, upper, count, mean_confidence, fraction_positive (NaN for empty bins).
    Rates are sklearn's ``calibration_curve(strategy="uniform")``, which reports non-empty
    bins only; the counts use its bin assignment, ``searchsorted(edges[1:-1], p)``.
    """
    from sklearn.calibration import calibration_curve  # lazy: sklearn.calibration takes ~4 s to import

    labels = check_eval_labels(np.asarray(labels).reshape(-1))
    probs = _check_probs(np.asarray(probs).reshape(-1), labels)
    observed = ~np.isnan(labels)
    p, y = probs[observed], labels[observed]
    edges = np.linspace(0.0, 1.0, n_bins + 1)  # calibration_curve's uniform edges
    count = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins)  # (n_bins,)
    mean_conf = np.full(n_bins, np.nan)
    frac_pos = np.full(n_bins, np.nan)
    if p.size:
        frac_pos[count > 0], mean_conf[count > 0] = calibration_curve(
            y, p, n_bins=n_bins, strategy="uniform", pos_label=1.0
        )
    return pd.DataFrame({
        "lower": edges[:-1], "upper": edges[1:], "count": count,
        "mean_confidence": mean_conf, "fraction_positive": frac_pos,
    })


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """Per-pathology ECE. probs, labels: (N, K) -> (K,); NaN labels masked; NaN if no known cell."""
    labels = check_eval_labels(labels)
    probs = _check_probs(probs, labels)
    out = np.full(labels.shape[1], np.nan)
    for k in range(labels.shape[1]):
        table = reliability_bins(probs[:, k], labels[:, k], n_bins)
        n = table["count"].sum()
        if n == 0:
            continue
        gap = (table["fraction_positive"] - table["mean_confidence"]).abs().fillna(0.0)
        out[k] = float((table["count"] * gap).sum() / n)
    return out


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled probabilities sigmoid(logits / T); same shape as logits."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return expit(np.asarray(logits, dtype=np.float64) / temperature)


def masked_nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of sigmoid(logits / T) over known cells (NaN labels masked)."""
    labels = np.asarray(labels, dtype=np.float64)
    observed = ~np.isnan(labels)
    z = np.asarray(logits, dtype=np.float64)[observed] / temperature
    y = labels[observed]
    # -[y log s(z) + (1 - y) log(1 - s(z))] = softplus(z) - y z, computed stably.
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Single temperature T > 0 minimising the masked validation NLL. logits, labels: (N, K).

    Bounded 1-D search over log T in [log 0.01, log 100] (scipy minimize_scalar). If the
    optimum does not beat T = 1 (numerically), T = 1 is returned, so fitting never
    worsens the validation NLL.
    """
    labels = np.asarray(labels, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape != labels.shape:
        raise ValueError(f"logits shape {logits.shape} != labels shape {labels.shape}")
    known = labels[~np.isnan(labels)]
    if known.size == 0:
        raise ValueError("no known labels to fit a temperature on")
    if np.any((known < 0.0) | (known > 1.0)):
        raise ValueError("labels must lie in [0, 1] (or NaN)")
    if not np.all(np.isfinite(logits[~np.isnan(labels)])):
        raise ValueError("logits must be finite wherever the label is known")
    result = minimize_scalar(
        lambda log_t: masked_nll(logits, labels, float(np.exp(log_t))),
        bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6},
    )
    temperature = float(np.exp(result.x))
    nll_fit, nll_one = masked_nll(logits, labels, temperature), masked_nll(logits, labels, 1.0)
    if not nll_fit < nll_one:
        temperature, nll_fit = 1.0, nll_one
    logger.info("temperature scaling: T = %.4f, validation NLL %.5f -> %.5f", temperature, nll_one, nll_fit)
    return temperature
