"""Patient-level bootstrap: exactness of the weighted AUC, agreement with a slow loop, reproducibility."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from chestx.metrics.bootstrap import benchmark_bootstrap, bootstrap_auroc, draw_patients, weighted_auroc


def _case(seed: int, n: int = 300, k: int = 3, runs: int = 2, n_patients: int = 80):
    rng = np.random.default_rng(seed)
    patient_ids = np.array([f"p{i:03d}" for i in rng.integers(0, n_patients, size=n)])
    labels = (rng.random((n, k)) < 0.3).astype(np.float32)
    labels[rng.random((n, k)) < 0.1] = np.nan
    probs = np.round(rng.random((runs, n, k)) * 0.7 + 0.3 * np.nan_to_num(labels)[None], 2)
    return probs, labels, patient_ids


def _slow_bootstrap(probs, labels, patient_ids, n_resamples, seed):
    """Reference: materialise each resample (every image of a drawn patient, once per draw)."""
    patients, cluster = np.unique(patient_ids, return_inverse=True)
    draws = draw_patients(patients.size, n_resamples, seed)
    images_of = [np.flatnonzero(cluster == p) for p in range(patients.size)]
    out = np.full((n_resamples, probs.shape[0], probs.shape[2]), np.nan)
    for b in range(n_resamples):
        rows = np.concatenate([images_of[p] for p in draws[b]])
        for r in range(probs.shape[0]):
            for k in range(probs.shape[2]):
                y, s = labels[rows, k], probs[r, rows, k]
                known = ~np.isnan(y)
                if len(np.unique(y[known])) == 2:
                    out[b, r, k] = roc_auc_score(y[known], s[known])
    return out


def test_unit_weights_equal_sklearn_with_ties_and_nans() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.2).astype(float)
    s = np.round(rng.random(500) + 0.3 * y, 1)  # heavy ties
    y[rng.random(500) < 0.1] = np.nan
    got = weighted_auroc(s, y, np.ones((1, 500), dtype=np.int64))
    known = ~np.isnan(y)
    assert got[0] == pytest.approx(roc_auc_score(y[known], s[known]), abs=1e-12)


def test_integer_weights_equal_sklearn_sample_weight() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(200) < 0.3).astype(float)
    s = np.round(rng.random(200) + 0.2 * y, 2)
    w = rng.integers(0, 4, size=(3, 200))
    got = weighted_auroc(s, y, w)
    for b in range(3):
        assert got[b] == pytest.approx(roc_auc_score(y, s, sample_weight=w[b]), abs=1e-12)


def test_one_image_per_patient_equals_slow_loop() -> None:
    probs, labels, _ = _case(2, n=120, n_patients=120)
    patient_ids = np.arange(120)
    fast = bootstrap_auroc(probs, labels, patient_ids, n_resamples=25, seed=5, return_resamples=True)
    slow = _slow_bootstrap(probs, labels, patient_ids, 25, 5)
    np.testing.assert_allclose(fast["resamples"], slow, atol=1e-12, equal_nan=True)


def test_clustered_patients_equal_slow_loop() -> None:
    probs, labels, patient_ids = _case(3, n=200, n_patients=40)
    fast = bootstrap_auroc(probs, labels, patient_ids, n_resamples=20, seed=7, return_resamples=True)
    slow = _slow_bootstrap(probs, labels, patient_ids, 20, 7)
    np.testing.assert_allclose(fast["resamples"], slow, atol=1e-12, equal_nan=True)
    assert fast["n_patients"] == np.unique(patient_ids).size


def test_output_shapes_and_reproducibility() -> None:
    probs, labels, patient_ids = _case(4, runs=3)
    a = bootstrap_auroc(probs, labels, patient_ids, n_resamples=200, seed=11)
    b = bootstrap_auroc(probs, labels, patient_ids, n_resamples=200, seed=11, chunk_size=7)
    c = bootstrap_auroc(probs, labels, patient_ids, n_resamples=200, seed=12)
    for key in ("lower", "upper", "n_invalid"):
        assert a[key].shape == (3, 3)
    for key in ("mean", "mean_lower", "mean_upper", "n_invalid_mean"):
        assert a[key].shape == (3,)
    for key in ("lower", "upper", "mean_lower", "mean_upper"):
        np.testing.assert_array_equal(a[key], b[key])  # same seed, any chunking: identical
    assert not np.array_equal(a["lower"], c["lower"])


def test_ci_contains_point_estimate_and_mean() -> None:
    probs, labels, patient_ids = _case(5, n=600, n_patients=150)
    out = bootstrap_auroc(probs, labels, patient_ids, n_resamples=300, seed=0)
    assert np.all(out["lower"] <= out["auroc"]) and np.all(out["auroc"] <= out["upper"])
    assert np.all(out["mean_lower"] <= out["mean"]) and np.all(out["mean"] <= out["mean_upper"])
    assert np.all(out["upper"] - out["lower"] > 0)
    np.testing.assert_allclose(out["mean"], out["auroc"].mean(axis=1))


def test_two_dim_probs_are_one_run() -> None:
    probs, labels, patient_ids = _case(6, runs=1)
    a = bootstrap_auroc(probs[0], labels, patient_ids, n_resamples=50)
    b = bootstrap_auroc(probs, labels, patient_ids, n_resamples=50)
    np.testing.assert_array_equal(a["lower"], b["lower"])


def test_resamples_missing_a_class_are_excluded_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    probs, labels, patient_ids = _case(7, n=200, n_patients=50)
    labels[:, 0] = 0.0
    rare = patient_ids == patient_ids[0]
    labels[rare, 0] = 1.0  # a single positive patient: absent from ~37% of resamples
    labels[:, 2] = 0.0  # one class in the full data: NaN everywhere, left out of the mean
    with caplog.at_level(logging.WARNING, logger="chestx.metrics.bootstrap"):
        out = bootstrap_auroc(probs, labels, patient_ids, n_resamples=200, seed=1)
    n_bad = out["n_invalid"][:, 0]
    assert np.all((n_bad > 30) & (n_bad < 120))
    assert np.all(np.isfinite(out["lower"][:, 0]))
    assert np.all(out["n_invalid"][:, 2] == 200) and np.all(np.isnan(out["lower"][:, 2]))
    np.testing.assert_array_equal(out["n_invalid_mean"], n_bad)  # the mean needs every defined pathology
    assert np.all(np.isfinite(out["mean_lower"]))
    assert "lacked a class" in caplog.text


@pytest.mark.slow
def test_benchmark_nih_test_split_size(caplog: pytest.LogCaptureFixture) -> None:
    """25,596 images, 2,797 patients, 14 pathologies, 5 runs, 1,000 resamples."""
    with caplog.at_level(logging.INFO, logger="chestx.metrics.bootstrap"):
        seconds = benchmark_bootstrap()
    logging.getLogger(__name__).info("NIH-size bootstrap took %.2f s", seconds)
    assert seconds < 60.0
