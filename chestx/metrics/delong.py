"""DeLong variance of AUROC and the paired DeLong test, with Holm correction.

DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated
receiver operating characteristic curves: a nonparametric approach", Biometrics 44:837-845:
the AUC is the mean of the structural components (placement values)

    V10(x_i) = mean_j psi(x_i, y_j)   (one per positive x_i),
    V01(y_j) = mean_i psi(x_i, y_j)   (one per negative y_j),   psi = 1 / 0.5 / 0 for > / = / <,

and Var(AUC) = S10 / m + S01 / n with S10, S01 the (co)variances (ddof 1) of the
components over the m positives and n negatives. For two scores on the same cases the
same formula gives the covariance matrix, hence the z test of the difference.

The components come from mid-ranks as in Sun & Xu (2014), "Fast implementation of
DeLong's algorithm for comparing the areas under correlated receiver operating
characteristic curves", IEEE Signal Processing Letters 21(11):1389-1393:
V10_i = (T_Z(x_i) - T_X(x_i)) / n and V01_j = 1 - (T_Z(y_j) - T_Y(y_j)) / m, with T_Z, T_X,
T_Y the mid-ranks among all, positive and negative scores: O(N log N) instead of O(mn).
Mid-ranks are scipy's ``rankdata(method="average")``, one call per group over all M rows
(measured on a 2-core AMD EPYC VM: within 1.2x of the former hand-written mid-ranks, e.g.
4.5 vs 3.7 ms for 2 x 25,596 scores).

Multiple comparisons: Holm (1979), "A simple sequentially rejective multiple test
procedure", Scand. J. Statist. 6:65-70.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from chestx.metrics.auroc import check_eval_labels

logger = logging.getLogger(__name__)

__all__ = ["delong_paired_test", "delong_roc_variance", "holm", "paired_tests", "structural_components"]


def structural_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeLong placement values of M score vectors on the same cases (Sun & Xu 2014).

    labels: (n,) 0/1 (no NaN); scores: (M, n). Returns auc (M,), v10 (M, n_pos), v01 (M, n_neg).
    """
    from scipy.stats import rankdata  # lazy: scipy.stats takes ~2 s to import

    pos = labels == 1.0
    m, n = int(pos.sum()), int((~pos).sum())
    x, y = scores[:, pos], scores[:, ~pos]  # (M, m), (M, n)
    t_x = rankdata(x, method="average", axis=1)  # (M, m) mid-ranks among positives
    t_y = rankdata(y, method="average", axis=1)  # (M, n) mid-ranks among negatives
    t_z = rankdata(np.concatenate([x, y], axis=1), method="average", axis=1)  # (M, m + n) among all
    v10 = (t_z[:, :m] - t_x) / n  # (M, m)
    v01 = 1.0 - (t_z[:, m:] - t_y) / m  # (M, n)
    return v10.mean(axis=1), v10, v01


def _delong_cov(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUC (M,) and DeLong covariance (M, M) of M scores on the same observed cases."""
    auc, v10, v01 = structural_components(labels, scores)
    s10 = np.atleast_2d(np.cov(v10, ddof=1))  # (M, M)
    s01 = np.atleast_2d(np.cov(v01, ddof=1))  # (M, M)
    return auc, s10 / v10.shape[1] + s01 / v01.shape[1]


def _observed(labels: np.ndarray, *scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Mask NaN labels; returns (labels (n,), scores (M, n), both classes present)."""
    labels = check_eval_labels(np.asarray(labels).reshape(-1))
    stacked = np.stack([np.asarray(s, dtype=np.float64).reshape(-1) for s in scores])  # (M, N)
    if stacked.shape[1] != labels.size:
        raise ValueError(f"scores length {stacked.shape[1]} != labels length {labels.size}")
    keep = ~np.isnan(labels)
    y, s = labels[keep], stacked[:, keep]
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite wherever the label is known")
    n_pos = int((y == 1.0).sum())
    return y, s, 0 < n_pos < y.size


def delong_roc_variance(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """AUC and its DeLong variance. labels, probs: (N,); NaN labels masked; one class -> (NaN, NaN)."""
    y, s, ok = _observed(labels, probs)
    if not ok:
        logger.warning("DeLong variance undefined: only one class among %d known labels", y.size)
        return float("nan"), float("nan")
    auc, cov = _delong_cov(y, s)
    return float(auc[0]), float(cov[0, 0])


def delong_paired_test(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray) -> dict[str, float]:
    """Two-sided paired DeLong test of AUC(a) == AUC(b) on the same cases.

    labels, probs_a, probs_b: (N,). Returns auc_a, auc_b, diff (a - b), se, z, p_value.
    One class -> NaN everywhere. Zero variance of the difference (e.g. identical scores):
    z = 0 and p = 1 when diff == 0, else z = +/-inf and p = 0.
    """
    y, s, ok = _observed(labels, probs_a, probs_b)
    nan = float("nan")
    if not ok:
        logger.warning("DeLong test undefined: only one class among %d known labels", y.size)
        return {"auc_a": nan, "auc_b": nan, "diff": nan, "se": nan, "z": nan, "p_value": nan}
    auc, cov = _delong_cov(y, s)
    diff = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    if se > 0.0:
        z = diff / se
    else:
        z = 0.0 if diff == 0.0 else float(np.copysign(np.inf, diff))
    return {
        "auc_a": float(auc[0]),
        "auc_b": float(auc[1]),
        "diff": diff,
        "se": se,
        "z": float(z),
        "p_value": math.erfc(abs(z) / math.sqrt(2.0)),  # 2 * (1 - Phi(|z|))
    }


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same shape); NaN stays NaN and is not counted.

    With the m finite p-values sorted ascending, p_adj(i) = max_{j <= i} min(1, (m - j + 1) p(j)).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    flat = p.reshape(-1)
    finite = np.flatnonzero(~np.isnan(flat))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(flat[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * flat[order])  # (m,)
    out.reshape(-1)[order] = np.maximum.accumulate(scaled)
    return out


def paired_tests(
    probs: np.ndarray, labels: np.ndarray, reference: int, pathologies: Sequence[str]
) -> pd.DataFrame:
    """Paired DeLong test of every run against the reference run, per pathology.

    probs: (R, N, K) scores of R runs on the same images; labels: (N, K) 1/0/NaN.
    Returns one row per (run != reference, pathology): run, pathology, auc, auc_reference,
    diff (run - reference), se, z, p_value, p_holm (Holm across pathologies within a run).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = check_eval_labels(labels)
    r_dim, n_dim, k_dim = probs.shape
    names = list(pathologies)
    if labels.shape != (n_dim, k_dim) or len(names) != k_dim:
        raise ValueError(f"shapes disagree: probs {probs.shape}, labels {labels.shape}, {len(names)} names")
    if not 0 <= reference < r_dim:
        raise ValueError(f"reference run {reference} out of range for {r_dim} runs")
    rows = []
    for r in range(r_dim):
        if r == reference:
            continue
        block = []
        for k, name in enumerate(names):
            res = delong_paired_test(labels[:, k], probs[r, :, k], probs[reference, :, k])
            block.append({
                "run": r, "pathology": name, "auc": res["auc_a"], "auc_reference": res["auc_b"],
                "diff": res["diff"], "se": res["se"], "z": res["z"], "p_value": res["p_value"],
            })
        adjusted = holm(np.array([row["p_value"] for row in block]))
        for row, p_adj in zip(block, adjusted):
            row["p_holm"] = float(p_adj)
        rows.extend(block)
    columns = ["run", "pathology", "auc", "auc_reference", "diff", "se", "z", "p_value", "p_holm"]
    return pd.DataFrame(rows, columns=columns)
