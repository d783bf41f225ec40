"""Multi-label stratified patient-level splits and nested label-fraction subsets (pure functions).

The multi-label part is the Iterative Stratification algorithm of Sechidis, Tsoumakas & Vlahavas (ECML PKDD 2011)
as implemented by the maintained ``iterative-stratification`` package (``iterstrat.ml_stratifiers``). That
algorithm knows no groups, so the rows are first aggregated to one binary vector per patient:

- a patient is **positive** for a finding when any of its images has label >= 0.5 (1, or a soft label under
  CheXpert's ``lsr_ones``);
- NaN (unknown) and 0 count as **not positive** for the balancing only. The labels themselves are not changed:
  NaN stays masked in the loss and the metrics. A finding that is unknown for most images (e.g. CheXpert's blank
  cells under ``blank=mask``) is therefore balanced on its known positives, which is what prevalence is measured on.

To make the splits match in images as well as in patients, the vector also says whether the patient has >= 2, 4, 8
positive images of each finding and >= 2, 4, 8 images at all (``_strata``).

Then every patient goes to one split (``stratified_split``); a finding with at least 1 / (smallest ratio) positive
patients (10 for 70/10/20) reaches every split, one with fewer may miss the smallest. The training patients are
put in a seeded *stratified order* (``stratified_order``): shells of a fixed 1-2-5 ladder of fractions (0.001,
0.002, 0.005, 0.01, ..., 0.5, 1.0) are drawn by one iterative stratification, each shell's patients shuffled, and
the shells concatenated.
``train_subset(fraction)`` keeps the first ``round(fraction * P)`` patients of that order (at least one), so for one
seed **every subset lies inside every larger one** (1 % inside 10 % inside 100 %), whatever fractions are asked for
and in any order. At the ladder's fractions the subset is exactly a union of stratified shells; in between it adds a
random part of the next shell. Validation and test patients are never touched.

Nothing here reads files or config: arrays in, arrays out (wiring into the datasets is done by the data layer).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import IterativeStratification

__all__ = [
    "FRACTION_LADDER",
    "SPLIT_NAMES",
    "StratifyError",
    "patient_labels",
    "finding_deviation",
    "prevalence_deviation",
    "random_patient_split",
    "stratified_order",
    "stratified_split",
    "train_subset",
]

log = logging.getLogger(__name__)

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
# shell boundaries of the stratified order: every subset at one of these fractions is a union of stratified shells
FRACTION_LADDER: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
COUNT_LEVELS: tuple[int, ...] = (2, 4, 8)  # image-count thresholds of the balanced columns (see _strata)


class StratifyError(ValueError):
    """Bad input to a splitting function (the message names the argument, its value and the fix)."""


def patient_labels(patient_ids: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate image labels to patients: (P,) sorted patient ids, (N,) each row's patient, (P, K) bool positives.

    A patient is positive for finding k when any of its images has ``labels[:, k] >= 0.5``; NaN and 0 are not
    positive (see the module docstring).
    """
    ids = np.asarray(patient_ids)
    labels = np.asarray(labels, dtype=np.float32)
    if labels.ndim != 2 or len(labels) != len(ids):
        raise StratifyError(f"labels {labels.shape} must be (N, K) with N = len(patient_ids) = {len(ids)}")
    blank = pd.isna(ids.astype(object))
    if blank.any():
        raise StratifyError(f"{int(blank.sum())} images have no patient id (first rows "
                            f"{np.flatnonzero(blank)[:5].tolist()}): patient-level splits need every image's patient")
    codes, patients = pd.factorize(ids.astype(str), sort=True)
    positive = np.nan_to_num(labels, nan=0.0) >= 0.5  # (N, K)
    per_patient = np.zeros((len(patients), labels.shape[1]), dtype=bool)  # (P, K)
    np.logical_or.at(per_patient, codes, positive)
    return np.asarray(patients), codes.astype(np.int64), per_patient


def _strata(row_patient: np.ndarray, labels: np.ndarray, n_patients: int) -> np.ndarray:
    """(P, K * (1 + len(COUNT_LEVELS)) + len(COUNT_LEVELS)) bool: what the iterative stratification balances.

    Per finding: positive in any image, and positive in >= 2, 4, 8 images; then the patient's image count >= 2, 4,
    8. (A column for "unknown in any image", to balance the known-label denominators too, was tried on CheXpert and
    made the deviations larger.) The count columns make the splits match in *images* too (what the model trains and
    is scored on), not only in patients: without them a few patients with many positive images shift an image-level
    prevalence.
    """
    positive = (np.nan_to_num(np.asarray(labels, dtype=np.float32), nan=0.0) >= 0.5).astype(np.int64)  # (N, K)
    counts = np.zeros((n_patients, positive.shape[1]), dtype=np.int64)  # (P, K) positive images per patient
    np.add.at(counts, row_patient, positive)
    images = np.bincount(row_patient, minlength=n_patients)  # (P,)
    cols = [counts >= 1] + [counts >= c for c in COUNT_LEVELS] + [(images >= c)[:, None] for c in COUNT_LEVELS]
    return np.concatenate(cols, axis=1)


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    r = tuple(float(x) for x in ratios)
    if len(r) != 3 or min(r) < 0 or abs(sum(r) - 1.0) > 1e-6:
        raise StratifyError(f"ratios={tuple(ratios)} must be three non-negative fractions (train, val, test) "
                            "summing to 1, e.g. (0.7, 0.1, 0.2)")
    return r  # type: ignore[return-value]


def _stratify(y: np.ndarray, proportions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """(P,) group (0..G-1) of every row of the bool matrix y (P, K), stratified over its columns.

    Rows are shuffled first (the algorithm walks rows in order) and ties are broken with a seeded RandomState.
    """
    order = rng.permutation(len(y))
    groups = np.empty(len(y), dtype=np.int64)
    state = np.random.RandomState(int(rng.integers(2**31 - 1)))
    groups[order] = IterativeStratification(labels=y[order], r=np.asarray(proportions, dtype=float),
                                            random_state=state)
    return groups


def stratified_split(
    patient_ids: np.ndarray, labels: np.ndarray, ratios: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0
) -> np.ndarray:
    """Patient-level split, stratified over the multi-label vector: (N,) "train" / "val" / "test" per image.

    ``ratios`` are fractions of *patients* (as ``chestx.data.splits.random_split``); a ratio of 0 leaves that split
    empty. Same (ids, labels, ratios, seed) -> same split.
    """
    r = _check_ratios(ratios)
    patients, row_patient, y = patient_labels(patient_ids, labels)
    groups = _stratify(_strata(row_patient, labels, len(patients)), r, np.random.default_rng(seed))  # (P,)
    split = np.asarray(SPLIT_NAMES, dtype="<U5")[groups[row_patient]]  # (N,)
    empty = [name for name, ratio in zip(SPLIT_NAMES, r) if ratio > 0 and not (split == name).any()]
    if empty:
        raise StratifyError(f"{len(patients)} patients are too few for ratios={r}: split(s) {empty} got none")
    log.info("Stratified split (seed %d, ratios %s) of %d patients over %d findings: %s", seed, r, len(patients),
             y.shape[1], {name: int((split == name).sum()) for name in SPLIT_NAMES})
    return split


def random_patient_split(patient_ids: np.ndarray, ratios: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0
                         ) -> np.ndarray:
    """The unstratified reference: patients shuffled and cut at the ratios, (N,) split names.

    The same rule as ``chestx.data.splits.random_split`` (sorted ids, ``default_rng(seed).permutation``, rounded
    cut points), restated on plain arrays so that the comparison needs no LabelTable.
    """
    r = _check_ratios(ratios)
    codes, patients = pd.factorize(np.asarray(patient_ids).astype(str), sort=True)
    rank = np.empty(len(patients), dtype=np.int64)
    rank[np.random.default_rng(seed).permutation(len(patients))] = np.arange(len(patients))
    bounds = np.cumsum([round(r[0] * len(patients)), round(r[1] * len(patients))])
    return np.asarray(SPLIT_NAMES, dtype="<U5")[np.searchsorted(bounds, rank, side="right")[codes]]


def stratified_order(patient_ids: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """(P,) sorted patient ids in a seeded stratified order: every prefix at a ``FRACTION_LADDER`` fraction is a
    union of stratified shells (module docstring). Pass the training rows only."""
    patients, row_patient, _ = patient_labels(patient_ids, labels)
    y = _strata(row_patient, labels, len(patients))
    shares = np.diff((0.0, *FRACTION_LADDER))  # (G,) share of patients in each shell
    rng = np.random.default_rng([seed, 0x5EED])  # its own stream: independent of the split's draws
    shell = _stratify(y, shares, rng)  # (P,)
    order = np.concatenate([rng.permutation(np.flatnonzero(shell == g)) for g in range(len(shares))])
    return patients[order]


def train_subset(patient_ids: np.ndarray, labels: np.ndarray, split: np.ndarray, fraction: float,
                 seed: int = 0) -> np.ndarray:
    """(N,) bool: the training images kept at ``fraction`` of the training *patients* (nested across fractions).

    Rows outside ``split == "train"`` are never kept (validation and test stay as they are); fraction 1.0 keeps
    every training row. At least one patient is kept.
    """
    f = float(fraction)
    if not 0.0 < f <= 1.0:
        raise StratifyError(f"fraction={fraction!r} must be in (0, 1], e.g. 0.01, 0.1 or 1.0")
    split = np.asarray(split).astype(str)
    ids = np.asarray(patient_ids).astype(str)
    if split.shape != ids.shape:
        raise StratifyError(f"split {split.shape} and patient_ids {ids.shape} must have the same length")
    train = split == "train"
    if not train.any():
        raise StratifyError("split has no 'train' rows to take a fraction of")
    order = stratified_order(ids[train], np.asarray(labels)[train], seed)  # (P_train,)
    keep_n = max(1, int(round(f * len(order))))
    kept = train & np.isin(ids, order[:keep_n])
    log.info("Train fraction %.4g (seed %d): %d of %d training patients, %d of %d images", f, seed, keep_n,
             len(order), int(kept.sum()), int(train.sum()))
    return kept


def finding_deviation(labels: np.ndarray, split: np.ndarray) -> np.ndarray:
    """(3, K) |prevalence in split - prevalence overall| in percentage points, rows in ``SPLIT_NAMES`` order.

    Prevalence is on images, over known labels (NaN left out, as the metrics do); an empty split gives NaN.
    """
    labels = np.asarray(labels, dtype=np.float32)
    split = np.asarray(split).astype(str)
    known, pos = ~np.isnan(labels), np.nan_to_num(labels, nan=0.0) >= 0.5  # (N, K)
    overall = pos.sum(0) / np.maximum(known.sum(0), 1)  # (K,)
    out = np.full((len(SPLIT_NAMES), labels.shape[1]), np.nan)
    for i, name in enumerate(SPLIT_NAMES):
        rows = split == name
        if rows.any():
            out[i] = np.abs(pos[rows].sum(0) / np.maximum(known[rows].sum(0), 1) - overall) * 100.0
    return out


def prevalence_deviation(labels: np.ndarray, split: np.ndarray, names: Sequence[str],
                         min_positives: int = 50) -> pd.DataFrame:
    """Per split: the largest prevalence deviation (``finding_deviation``) of any finding with >= ``min_positives``
    positive images overall, which finding it is, and how many findings with >= 1 positive have none in the split.

    Returns one row per non-empty split: split, images, max_dev_pp, worst_finding, findings_missing.
    """
    labels = np.asarray(labels, dtype=np.float32)
    split = np.asarray(split).astype(str)
    n_pos = (np.nan_to_num(labels, nan=0.0) >= 0.5).sum(0)  # (K,)
    common = n_pos >= min_positives
    if not common.any():
        raise StratifyError(f"no finding has >= {min_positives} positives (most: {int(n_pos.max(initial=0))})")
    dev = np.where(common, finding_deviation(labels, split), -1.0)  # (3, K)
    rows = []
    for i, name in enumerate(SPLIT_NAMES):
        rows_in = split == name
        if not rows_in.any():
            continue
        worst = int(np.argmax(dev[i]))
        p_split = (np.nan_to_num(labels[rows_in], nan=0.0) >= 0.5).sum(0)
        rows.append(dict(split=name, images=int(rows_in.sum()), max_dev_pp=float(dev[i, worst]),
                         worst_finding=names[worst], findings_missing=int(((n_pos > 0) & (p_split == 0)).sum())))
    return pd.DataFrame(rows)
