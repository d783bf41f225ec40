"""Statistics layer: masked AUROC, patient-level bootstrap CIs, DeLong tests, thresholds, calibration.

All functions take plain numpy arrays with the project's label convention: float (N, K)
labels of 1 / 0 / NaN, NaN = unknown and masked in every metric (docs/design.md).
"""
from chestx.metrics.auroc import auroc_vector, check_eval_labels, masked_auroc
from chestx.metrics.bootstrap import benchmark_bootstrap, bootstrap_auroc, draw_patients, weighted_auroc
from chestx.metrics.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    masked_nll,
    reliability_bins,
)
from chestx.metrics.delong import delong_paired_test, delong_roc_variance, holm, paired_tests, structural_components
from chestx.metrics.thresholds import THRESHOLD_METHODS, operating_points, select_thresholds

__all__ = [
    "THRESHOLD_METHODS",
    "apply_temperature",
    "auroc_vector",
    "benchmark_bootstrap",
    "bootstrap_auroc",
    "check_eval_labels",
    "delong_paired_test",
    "delong_roc_variance",
    "draw_patients",
    "expected_calibration_error",
    "fit_temperature",
    "holm",
    "masked_auroc",
    "masked_nll",
    "operating_points",
    "paired_tests",
    "reliability_bins",
    "select_thresholds",
    "structural_components",
    "weighted_auroc",
]
