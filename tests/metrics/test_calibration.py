"""ECE, reliability bins and temperature scaling."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from chestx.metrics.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    masked_nll,
    reliability_bins,
)


def test_ece_hand_computed() -> None:
    # 5 bins: [0, .2), [.2, .4), [.4, .6), [.6, .8), [.8, 1].
    # bin 0: p = .10, .15 -> conf .125, labels 0, 1 -> frac .5, gap .375, n 2
    # bin 2: p = .50, .55 -> conf .525, labels 1, 0 -> frac .5, gap .025, n 2
    # bin 4: p = .90, 1.0 -> conf .950, labels 1, 1 -> frac 1., gap .050, n 2
    # ECE = (2 * .375 + 2 * .025 + 2 * .05) / 6 = 0.9 / 6 = 0.15
    # Column 2: p = .3 x4 with one positive -> conf .3, frac .25, gap .05 -> ECE .05.
    probs = np.array([[0.10, 0.3], [0.15, 0.3], [0.50, 0.3], [0.55, 0.3], [0.90, 0.9], [1.0, 0.9], [0.1, 0.9]])
    labels = np.array([[0, 1], [1, 0], [1, 0], [0, 0], [1, np.nan], [1, np.nan], [np.nan, np.nan]], dtype=float)
    np.testing.assert_allclose(expected_calibration_error(probs, labels, n_bins=5), [0.15, 0.05], atol=1e-12)


def test_ece_zero_for_perfectly_calibrated_bins() -> None:
    # p = 0.3 on 10 cells with 3 positives, p = 0.7 on 10 cells with 7 positives.
    probs = np.r_[np.full(10, 0.3), np.full(10, 0.7)][:, None]
    labels = np.r_[np.repeat([1.0, 0.0], [3, 7]), np.repeat([1.0, 0.0], [7, 3])][:, None]
    assert expected_calibration_error(probs, labels)[0] == pytest.approx(0.0, abs=1e-12)


def test_ece_small_for_sampled_calibrated_probabilities() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((50_000, 2))
    y = (rng.random(p.shape) < p).astype(float)
    assert np.all(expected_calibration_error(p, y) < 0.01)


def test_reliability_bins_table() -> None:
    probs = np.array([0.05, 0.1, 0.55, 1.0, 0.99])
    labels = np.array([0.0, 1.0, 1.0, 1.0, np.nan])
    table = reliability_bins(probs, labels, n_bins=4)
    assert list(table.columns) == ["lower", "upper", "count", "mean_confidence", "fraction_positive"]
    np.testing.assert_allclose(table["lower"], [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(table["upper"], [0.25, 0.5, 0.75, 1.0])
    assert table["count"].tolist() == [2, 0, 1, 1]  # 0.99 is masked, 1.0 is in the last bin
    np.testing.assert_allclose(table["mean_confidence"], [0.075, np.nan, 0.55, 1.0])
    np.testing.assert_allclose(table["fraction_positive"], [0.5, np.nan, 1.0, 1.0])


def test_temperature_recovers_known_value() -> None:
    rng = np.random.default_rng(1)
    true_logits = rng.normal(scale=2.0, size=(20_000, 3))
    labels = (rng.random(true_logits.shape) < expit(true_logits)).astype(float)
    labels[rng.random(labels.shape) < 0.1] = np.nan
    t0 = 2.5
    fitted = fit_temperature(true_logits * t0, labels)
    assert fitted == pytest.approx(t0, rel=0.05)
    np.testing.assert_allclose(apply_temperature(true_logits * t0, fitted), expit(true_logits * t0 / fitted))


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])
def test_fitting_never_worsens_validation_nll(scale: float) -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=scale, size=(2_000, 4))
    labels = (rng.random(logits.shape) < 0.3).astype(float)  # unrelated to the logits
    fitted = fit_temperature(logits, labels)
    assert fitted > 0
    assert masked_nll(logits, labels, fitted) <= masked_nll(logits, labels, 1.0)


def test_calibrated_logits_keep_temperature_near_one() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=1.5, size=(20_000, 2))
    labels = (rng.random(logits.shape) < expit(logits)).astype(float)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.06)


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError):
        apply_temperature(np.zeros(3), 0.0)
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([[1.5]]), np.array([[1.0]]))
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((2, 2)), np.full((2, 2), np.nan))


def test_reliability_bins_edges_are_right_closed() -> None:
    # sklearn's calibration_curve(strategy="uniform") bins: [0, .25], (.25, .5], (.5, .75], (.75, 1].
    edges = np.linspace(0.0, 1.0, 5)
    probs = np.r_[edges, 0.2500001]
    labels = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    table = reliability_bins(probs, labels, n_bins=4)
    assert table["count"].tolist() == [2, 2, 1, 1]  # 0 and .25 | .5 and .2500001 | .75 | 1
    np.testing.assert_allclose(table["mean_confidence"], [0.125, (0.5 + 0.2500001) / 2, 0.75, 1.0])
    np.testing.assert_allclose(table["fraction_positive"], [0.5, 1.0, 0.0, 1.0])


@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_reliability_bins_match_loop_over_intervals(n_bins: int) -> None:
    rng = np.random.default_rng(n_bins)
    p = np.round(rng.random(500), 2)  # many values on or near edges
    y = (rng.random(500) < p).astype(float)
    y[rng.random(500) < 0.1] = np.nan
    table = reliability_bins(p, y, n_bins)
    known = ~np.isnan(y)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for b in range(n_bins):
        inside = known & (p <= edges[b + 1]) & ((p > edges[b]) if b else (p >= 0.0))
        assert table["count"][b] == inside.sum()
        if inside.any():
            assert table["mean_confidence"][b] == pytest.approx(p[inside].mean(), abs=1e-12)
            assert table["fraction_positive"][b] == pytest.approx(y[inside].mean(), abs=1e-12)
        else:
            assert np.isnan(table["mean_confidence"][b]) and np.isnan(table["fraction_positive"][b])


def test_reliability_bins_without_known_labels_are_empty() -> None:
    table = reliability_bins(np.array([0.2, 0.9]), np.array([np.nan, np.nan]), n_bins=3)
    assert table["count"].tolist() == [0, 0, 0] and table["mean_confidence"].isna().all()
    assert np.isnan(expected_calibration_error(np.array([[0.2]]), np.array([[np.nan]]))[0])
