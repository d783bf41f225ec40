"""Threshold selection and operating points against hand-computed cases and sklearn."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, confusion_matrix

from chestx.metrics.thresholds import operating_points, select_thresholds

# Case 1 (7 images): sorted scores with labels
#   0.10 N, 0.30 N, 0.35 P, 0.40 N, 0.60 P, 0.80 P, 0.90 N      n_pos = 3, n_neg = 4
# t     TP FP FN  sens   spec   J = sens + spec - 1   F1 = 2TP / (2TP + FP + FN)
# 0.10  3  4  0   1      0      0                     6 / 10 = 0.600
# 0.30  3  3  0   1      0.25   0.25                  6 / 9  = 0.667
# 0.35  3  2  0   1      0.50   0.50   <- Youden      6 / 8  = 0.750  <- F1
# 0.40  2  2  1   0.667  0.50   0.167                 4 / 7  = 0.571
# 0.60  2  1  1   0.667  0.75   0.417                 4 / 6  = 0.667
# 0.80  1  1  2   0.333  0.75   0.083                 2 / 5  = 0.400
# 0.90  0  1  3   0      0.75  -0.25                  0
CASE1_S = np.array([0.40, 0.10, 0.90, 0.35, 0.60, 0.30, 0.80])
CASE1_Y = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])

# Case 2 (5 images): 0.2 P, 0.5 N, 0.6 P, 0.7 N, 0.9 P     n_pos = 3, n_neg = 2
# t    TP FP FN  J                        F1
# 0.2  3  2  0   1 - 1 = 0                6 / 8 = 0.750  <- F1
# 0.5  2  2  1   0.667 - 1 = -0.333       4 / 7 = 0.571
# 0.6  2  1  1   0.667 - 0.5 = 0.167      4 / 6 = 0.667
# 0.7  1  1  2   0.333 - 0.5 = -0.167     2 / 5 = 0.400
# 0.9  1  0  2   0.333 - 0 = 0.333 <- J   2 / 4 = 0.500
CASE2_S = np.array([0.2, 0.5, 0.6, 0.7, 0.9])
CASE2_Y = np.array([1.0, 0.0, 1.0, 0.0, 1.0])


def _two_columns() -> tuple[np.ndarray, np.ndarray]:
    """Both cases side by side in (7, 2); case 2 padded with NaN labels (masked)."""
    probs = np.full((7, 2), 0.5)
    labels = np.full((7, 2), np.nan)
    probs[:, 0], labels[:, 0] = CASE1_S, CASE1_Y
    probs[:5, 1], labels[:5, 1] = CASE2_S, CASE2_Y
    probs[5:, 1] = [0.01, 0.99]  # unknown cells: would change every answer if not masked
    return probs, labels


def test_youden_hand_computed() -> None:
    probs, labels = _two_columns()
    np.testing.assert_allclose(select_thresholds(probs, labels, "youden"), [0.35, 0.9])


def test_f1_hand_computed() -> None:
    probs, labels = _two_columns()
    np.testing.assert_allclose(select_thresholds(probs, labels, "f1"), [0.35, 0.2])


def test_sensitivity_hand_computed() -> None:
    probs, labels = _two_columns()
    # Case 1: sens >= 0.6 holds up to t = 0.60 (0.667), fails at 0.80 (0.333) -> 0.60.
    # Case 2: sens >= 0.6 holds up to t = 0.6 (0.667), fails at 0.7 (0.333) -> 0.6.
    np.testing.assert_allclose(select_thresholds(probs, labels, "sensitivity", 0.6), [0.6, 0.6])
    # Target 0.9 needs sensitivity 1: case 1 -> 0.35 (0.40 gives 0.667); case 2 -> 0.2.
    np.testing.assert_allclose(select_thresholds(probs, labels, "sensitivity", 0.9), [0.35, 0.2])


def test_ties_pick_the_highest_threshold() -> None:
    # 0.1 N, 0.2 P, 0.3 N, 0.4 P: J(0.1) = 0, J(0.2) = 1 - 0.5 = 0.5, J(0.3) = 0, J(0.4) = 0.5 - 0 = 0.5.
    probs = np.array([[0.1], [0.2], [0.3], [0.4]])
    labels = np.array([[0.0], [1.0], [0.0], [1.0]])
    assert select_thresholds(probs, labels, "youden")[0] == 0.4


def test_tied_scores_are_one_candidate() -> None:
    # 0.5 N, 0.5 P, 0.5 P, 0.9 N: candidates {0.5, 0.9}; J(0.5) = 0, J(0.9) = 0 - 0.5 -> 0.5.
    probs = np.array([[0.5], [0.5], [0.5], [0.9]])
    labels = np.array([[0.0], [1.0], [1.0], [0.0]])
    assert select_thresholds(probs, labels, "youden")[0] == 0.5


def test_unknown_method_lists_valid_ones() -> None:
    probs, labels = _two_columns()
    with pytest.raises(ValueError, match="youden, f1, sensitivity"):
        select_thresholds(probs, labels, "accuracy")


def test_one_class_gives_nan_threshold(caplog: pytest.LogCaptureFixture) -> None:
    probs, labels = _two_columns()
    labels[:, 1] = np.where(np.isnan(labels[:, 1]), np.nan, 1.0)
    with caplog.at_level(logging.WARNING, logger="chestx.metrics.thresholds"):
        out = select_thresholds(probs, labels, "f1")
    assert out[0] == 0.35 and np.isnan(out[1]) and "one class" in caplog.text
    table = operating_points(probs, labels, out, ["A", "B"])
    assert np.isnan(table.loc[1, "tp"]) and np.isnan(table.loc[1, "sensitivity"]) and np.isnan(table.loc[1, "auprc"])


def test_operating_points_hand_computed() -> None:
    probs, labels = _two_columns()
    table = operating_points(probs, labels, np.array([0.35, 0.9]), ["A", "B"])
    a = table.iloc[0]
    # Case 1 at t = 0.35: predicted positive {0.35 P, 0.40 N, 0.60 P, 0.80 P, 0.90 N}.
    # TP = 3, FP = 2, TN = 2, FN = 0; sens 3/3, spec 2/4, PPV 3/5, NPV 2/2, F1 6/8, acc 5/7.
    assert (a["tp"], a["fp"], a["tn"], a["fn"]) == (3, 2, 2, 0)
    assert a["sensitivity"] == 1.0 and a["specificity"] == 0.5 and a["ppv"] == pytest.approx(0.6)
    assert a["npv"] == 1.0 and a["f1"] == pytest.approx(0.75) and a["accuracy"] == pytest.approx(5 / 7)
    assert (a["n_pos"], a["n_neg"]) == (3, 4)
    assert a["auprc"] == pytest.approx(average_precision_score(CASE1_Y, CASE1_S))
    b = table.iloc[1]
    # Case 2 at t = 0.9: TP = 1 (0.9), FP = 0, TN = 2, FN = 2; PPV 1/1, NPV 2/4, F1 2/4.
    assert (b["tp"], b["fp"], b["tn"], b["fn"]) == (1, 0, 2, 2)
    assert b["ppv"] == 1.0 and b["npv"] == 0.5 and b["f1"] == 0.5
    assert list(table.columns) == [
        "pathology", "threshold", "tp", "fp", "tn", "fn", "sensitivity", "specificity",
        "ppv", "npv", "f1", "accuracy", "auprc", "n_pos", "n_neg",
    ]


def test_zero_denominators_are_nan() -> None:
    probs, labels = _two_columns()
    table = operating_points(probs, labels, np.array([2.0, 2.0]), ["A", "B"])  # nothing predicted positive
    assert np.isnan(table.loc[0, "ppv"]) and table.loc[0, "sensitivity"] == 0.0 and table.loc[0, "f1"] == 0.0


@pytest.mark.parametrize("method", ["youden", "f1", "sensitivity"])
def test_confusion_counts_match_sklearn(method: str) -> None:
    rng = np.random.default_rng(0)
    n, k = 400, 4
    labels = (rng.random((n, k)) < 0.25).astype(float)
    probs = np.round(rng.random((n, k)) * 0.8 + 0.2 * labels, 2)
    labels[rng.random((n, k)) < 0.15] = np.nan
    thresholds = select_thresholds(probs, labels, method)
    table = operating_points(probs, labels, thresholds, list("ABCD"))
    for j in range(k):
        known = ~np.isnan(labels[:, j])
        tn, fp, fn, tp = confusion_matrix(labels[known, j], probs[known, j] >= thresholds[j], labels=[0, 1]).ravel()
        row = table.iloc[j]
        assert (row["tp"], row["fp"], row["tn"], row["fn"]) == (tp, fp, tn, fn)
    if method == "sensitivity":
        assert np.all(table["sensitivity"] >= 0.9)


def _brute_force_threshold(scores: np.ndarray, y: np.ndarray, method: str, target: float) -> tuple[float, int]:
    """Loop over the ascending unique scores with ``prob >= t``; returns (threshold, number of optimal t).

    ``>=`` in the comparisons makes a later (higher) threshold replace an equal optimum.
    """
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    best, best_t, n_best = -np.inf, np.nan, 0
    for t in np.unique(scores):
        pred = scores >= t
        tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
        if method == "sensitivity":
            if tp / n_pos >= target:
                best_t = t
            continue
        value = tp / n_pos - fp / n_neg if method == "youden" else 2 * tp / (2 * tp + fp + (n_pos - tp))
        n_best = n_best + 1 if value == best else 1 if value > best else n_best
        if value >= best:
            best, best_t = value, t
    return float(best_t), n_best


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(150, 4): random prevalences, ~20% NaN labels, scores rounded in two columns."""
    rng = np.random.default_rng(100 + seed)
    labels = (rng.random((150, 4)) < rng.uniform(0.05, 0.6, size=4)).astype(float)
    probs = rng.random((150, 4)) * 0.75 + 0.25 * labels
    probs[:, :2] = np.round(probs[:, :2], 1 + seed % 2)
    labels[rng.random((150, 4)) < 0.2] = np.nan
    return probs, labels


def _tie_heavy_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(16, 8): 8 positives and 8 negatives per column, so Youden's J often peaks at several thresholds."""
    rng = np.random.default_rng(200 + seed)
    labels = np.stack([rng.permutation(np.repeat([1.0, 0.0], 8)) for _ in range(8)], axis=1)
    probs = rng.random((16, 8)) * 0.7 + 0.3 * labels
    probs[:, ::2] = np.round(probs[:, ::2], 1)
    return probs, labels


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method", ["youden", "f1", "sensitivity"])
def test_thresholds_match_brute_force_on_random_and_tied_scores(seed: int, method: str) -> None:
    target = (0.9, 0.75, 1.0, 0.5)[seed]
    n_tied_optima = 0
    for probs, labels in (_random_case(seed), _tie_heavy_case(seed)):
        got = select_thresholds(probs, labels, method, target)
        for j in range(labels.shape[1]):
            known = ~np.isnan(labels[:, j])
            expected, n_best = _brute_force_threshold(probs[known, j], labels[known, j], method, target)
            assert got[j] == expected
            n_tied_optima += n_best > 1
    if method == "youden":
        assert n_tied_optima > 0  # the tie rule (highest threshold) is exercised


def test_roc_points_match_brute_force_and_zero_rates_for_an_absent_class() -> None:
    from chestx.comparison.figures import roc_points

    rng = np.random.default_rng(7)
    y = (rng.random(120) < 0.3).astype(float)
    s = np.round(rng.random(120) * 0.7 + 0.3 * y, 1)  # ties
    y[::9] = np.nan
    known = ~np.isnan(y)
    thresholds = np.unique(s[known])[::-1]  # descending
    tpr = [((s[known] >= t) & (y[known] == 1)).sum() / (y[known] == 1).sum() for t in thresholds]
    fpr = [((s[known] >= t) & (y[known] == 0)).sum() / (y[known] == 0).sum() for t in thresholds]
    got_fpr, got_tpr = roc_points(s, y)
    np.testing.assert_allclose(got_fpr, [0.0, *fpr], atol=1e-15)
    np.testing.assert_allclose(got_tpr, [0.0, *tpr], atol=1e-15)
    assert got_fpr[-1] == got_tpr[-1] == 1.0
    only_neg_fpr, only_neg_tpr = roc_points(s[known & (y == 0)], y[known & (y == 0)])
    assert np.all(only_neg_tpr == 0.0) and only_neg_fpr[-1] == 1.0
