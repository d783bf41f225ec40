"""AUPRC and sensitivity at a specificity through the generic patient bootstrap, checked against sklearn draw by draw
on the materialised resamples (every image of a drawn patient, once per draw)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_curve

from chestx.metrics.bootstrap import bootstrap_auroc, bootstrap_metric, draw_patients
from chestx.metrics.ranking import (
    METRICS, average_precision, metric_names, sensitivity_at_specificity,
)


def _case(seed: int, n: int = 160, k: int = 3, runs: int = 2, n_patients: int = 50):
    rng = np.random.default_rng(seed)
    patient_ids = np.array([f"p{i:03d}" for i in rng.integers(0, n_patients, size=n)])
    labels = (rng.random((n, k)) < 0.3).astype(np.float32)
    labels[rng.random((n, k)) < 0.1] = np.nan
    probs = np.round(rng.random((runs, n, k)) * 0.7 + 0.3 * np.nan_to_num(labels)[None], 2)  # ties
    return probs, labels, patient_ids


def _sklearn_sens_at_spec(y: np.ndarray, s: np.ndarray, spec: float) -> float:
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return float(tpr[(1.0 - fpr) >= spec - 1e-12].max())


REFERENCES = {
    "auprc": lambda y, s: average_precision_score(y, s),
    "sens_at_spec90": lambda y, s: _sklearn_sens_at_spec(y, s, 0.9),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_every_bootstrap_draw_equals_sklearn_on_the_materialised_resample(name: str) -> None:
    probs, labels, patient_ids = _case(3)
    n_resamples = 40
    out = bootstrap_metric(probs, labels, patient_ids, METRICS[name].fn, n_resamples=n_resamples, seed=7,
                           return_resamples=True, chunk_size=9)  # several blocks
    patients, cluster = np.unique(patient_ids, return_inverse=True)
    draws = draw_patients(patients.size, n_resamples, 7)
    images_of = [np.flatnonzero(cluster == p) for p in range(patients.size)]
    checked = 0
    for b in range(n_resamples):
        rows = np.concatenate([images_of[p] for p in draws[b]])
        for r in range(probs.shape[0]):
            for k in range(probs.shape[2]):
                y, s = labels[rows, k], probs[r, rows, k]
                known = ~np.isnan(y)
                if len(np.unique(y[known])) < 2:
                    assert np.isnan(out["resamples"][b, r, k])
                    continue
                assert out["resamples"][b, r, k] == pytest.approx(REFERENCES[name](y[known], s[known]), abs=1e-12)
                checked += 1
    assert checked > 200
    for r in range(probs.shape[0]):  # point estimates on the full data, and the mean row over pathologies
        for k in range(probs.shape[2]):
            known = ~np.isnan(labels[:, k])
            assert out["value"][r, k] == pytest.approx(REFERENCES[name](labels[known, k], probs[r, known, k]),
                                                       abs=1e-12)
        assert out["mean"][r] == pytest.approx(np.mean(out["value"][r]))
    assert np.all(out["lower"] <= out["value"]) and np.all(out["value"] <= out["upper"])


def test_integer_weights_equal_sklearn_sample_weight() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(200) < 0.3).astype(float)
    s = np.round(rng.random(200) + 0.2 * y, 2)
    w = rng.integers(0, 4, size=(3, 200))
    ap = average_precision(s, y, w)
    sens = sensitivity_at_specificity(s, y, w, specificity=0.8)
    for b in range(3):
        assert ap[b] == pytest.approx(average_precision_score(y, s, sample_weight=w[b]), abs=1e-12)
        fpr, tpr, _ = roc_curve(y, s, sample_weight=w[b], drop_intermediate=False)
        assert sens[b] == pytest.approx(tpr[(1 - fpr) >= 0.8 - 1e-12].max(), abs=1e-12)


def test_specificity_exactly_reached_counts() -> None:
    """10 negatives, 1 above the threshold: specificity 0.9 exactly (1 - 1/10 is 0.9 in floating point terms)."""
    s = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.85, 0.75])
    y = np.array([0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1], float)
    assert sensitivity_at_specificity(s, y, np.ones((1, 13), np.int64))[0] == pytest.approx(2 / 3)


def test_auroc_wrapper_is_the_generic_bootstrap_with_auroc() -> None:
    probs, labels, patient_ids = _case(5)
    a = bootstrap_auroc(probs, labels, patient_ids, n_resamples=30, seed=2)
    b = bootstrap_metric(probs, labels, patient_ids, METRICS["auroc"].fn, n_resamples=30, seed=2)
    assert np.array_equal(a["auroc"], b["value"]) and np.array_equal(a["lower"], b["lower"])


def test_metric_names_are_checked() -> None:
    assert metric_names(["auroc", "auprc", "auroc"]) == ["auroc", "auprc"]
    with pytest.raises(ValueError, match="unknown.*'f1'"):
        metric_names(["auroc", "f1"])
    with pytest.raises(ValueError, match="keep auroc"):
        metric_names(["auprc"])
    with pytest.raises(ValueError, match="specificity=1.5"):
        sensitivity_at_specificity(np.array([0.1, 0.2]), np.array([0.0, 1.0]), np.ones((1, 2), np.int64), 1.5)
