"""Masked AUROC against sklearn / scipy / torchmetrics."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from chestx.metrics.auroc import auroc_vector, masked_auroc, midranks


def _random_case(seed: int, n: int = 400, k: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Scores rounded to 2 decimals (many ties) and labels with ~20% NaN."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, k)) < rng.uniform(0.05, 0.5, size=k)).astype(np.float32)
    probs = np.round(np.clip(0.3 * labels + rng.random((n, k)) * 0.7, 0, 1), 2).astype(np.float32)
    labels[rng.random((n, k)) < 0.2] = np.nan
    return probs, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_sklearn_with_nans_and_ties(seed: int) -> None:
    probs, labels = _random_case(seed)
    got = auroc_vector(probs, labels)
    for k in range(labels.shape[1]):
        known = ~np.isnan(labels[:, k])
        expected = roc_auc_score(labels[known, k], probs[known, k])
        assert got[k] == pytest.approx(expected, abs=1e-9)


def test_masked_auroc_table_and_mean_row() -> None:
    probs, labels = _random_case(3, k=4)
    names = ["A", "B", "C", "D"]
    table = masked_auroc(probs, labels, names)
    assert list(table.columns) == ["pathology", "auroc", "n_pos", "n_neg"]
    assert table["pathology"].tolist() == names + ["mean"]
    body = table.iloc[:-1]
    assert body["n_pos"].tolist() == [int(np.nansum(labels[:, k] == 1)) for k in range(4)]
    assert body["n_neg"].tolist() == [int(np.sum(labels[:, k] == 0)) for k in range(4)]
    mean = table.iloc[-1]
    assert mean["auroc"] == pytest.approx(body["auroc"].mean(), abs=1e-12)
    assert mean["n_pos"] == body["n_pos"].sum() and mean["n_neg"] == body["n_neg"].sum()


def test_one_class_pathology_is_nan_with_counts_and_warning(caplog: pytest.LogCaptureFixture) -> None:
    probs, labels = _random_case(4, k=3)
    labels[:, 1] = np.where(np.isnan(labels[:, 1]), np.nan, 0.0)  # only negatives known
    with caplog.at_level(logging.WARNING, logger="chestx.metrics.auroc"):
        table = masked_auroc(probs, labels, ["A", "Hernia", "C"])
    row = table.iloc[1]
    assert np.isnan(row["auroc"]) and row["n_pos"] == 0 and row["n_neg"] == int(np.sum(labels[:, 1] == 0))
    assert "Hernia" in caplog.text
    # The mean row ignores the undefined pathology.
    assert table.iloc[-1]["auroc"] == pytest.approx(np.nanmean(table["auroc"].iloc[:-1]))


def test_all_unknown_column_gives_nan() -> None:
    probs, labels = _random_case(5, k=2)
    labels[:, 0] = np.nan
    got = auroc_vector(probs, labels)
    assert np.isnan(got[0]) and np.isfinite(got[1])


@pytest.mark.parametrize("bad", [0.3, 0.55, 2.0, -1.0])
def test_soft_or_invalid_labels_raise(bad: float) -> None:
    probs, labels = _random_case(6, k=2)
    labels[3, 1] = bad
    with pytest.raises(ValueError, match="0/1/NaN"):
        masked_auroc(probs, labels, ["A", "B"])


def test_nonfinite_scores_on_known_cells_raise() -> None:
    probs, labels = _random_case(7, k=2)
    labels[0, 0] = 1.0
    probs[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        auroc_vector(probs, labels)
    labels[0, 0] = np.nan  # unknown cell: a NaN score there is ignored
    assert np.all(np.isfinite(auroc_vector(probs, labels)))


def test_midranks_hand_computed() -> None:
    # sorted: 1 (rank 1), 2 2 (ranks 2, 3 -> 2.5), 3 (4), 5 5 5 (5, 6, 7 -> 6)
    x = np.array([5.0, 2.0, 3.0, 5.0, 1.0, 2.0, 5.0])
    np.testing.assert_array_equal(midranks(x), [6.0, 2.5, 4.0, 6.0, 1.0, 2.5, 6.0])


@pytest.mark.parametrize("seed", [10, 11])
def test_auroc_matches_pairwise_mann_whitney(seed: int) -> None:
    """Independent O(n_pos * n_neg) reference: P(s_pos > s_neg) + 0.5 P(s_pos == s_neg), per masked column."""
    probs, labels = _random_case(seed, n=200, k=4)
    got = auroc_vector(probs, labels)
    for k in range(labels.shape[1]):
        pos = probs[labels[:, k] == 1.0, k][:, None]  # NaN labels compare False: masked
        neg = probs[labels[:, k] == 0.0, k][None, :]
        expected = np.mean((pos > neg) + 0.5 * (pos == neg))
        assert got[k] == pytest.approx(expected, abs=1e-12)


@pytest.mark.slow  # importing torchmetrics/torch takes many seconds on a loaded 2-core box
def test_matches_torchmetrics_multilabel_auroc() -> None:
    torch = pytest.importorskip("torch")
    classification = pytest.importorskip("torchmetrics.classification")
    rng = np.random.default_rng(9)
    n, k = 500, 5
    labels = (rng.random((n, k)) < 0.3).astype(np.float32)
    probs = np.round(np.clip(0.25 * labels + rng.random((n, k)) * 0.75, 0, 1), 3).astype(np.float32)
    metric = classification.MultilabelAUROC(num_labels=k, average=None, thresholds=None)
    expected = metric(torch.from_numpy(probs), torch.from_numpy(labels).long()).numpy()
    np.testing.assert_allclose(auroc_vector(probs, labels), expected, atol=1e-6)
