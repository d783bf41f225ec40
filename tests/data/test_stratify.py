"""chestx.data.stratify: patient-level multi-label stratified splits and nested label-fraction subsets.

Real input: the embedded NIH sample (621 patients) and, from ../shared/data, PadChest's and CheXpert's label files
read by chestx's own readers (slow: ~15 s).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chestx.data.datasets.nih import read_nih
from chestx.data.labels.splits import check_patient_disjoint
from chestx.data.stratify import (
    SPLIT_NAMES,
    StratifyError,
    finding_deviation,
    patient_labels,
    random_patient_split,
    stratified_split,
    train_subset,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def nih_sample():
    return read_nih(REPO / "data" / "nih_sample" / "Data_Entry_sample.csv")


def _many_images_per_patient(table, copies: int = 3):
    """The sample's rows repeated (each patient gets 1..copies images, same labels) to exercise the aggregation."""
    rng = np.random.default_rng(0)
    reps = rng.integers(1, copies + 1, size=len(table))
    ids = np.repeat(table.frame["patient_id"].to_numpy(), reps)
    return ids, np.repeat(table.labels, reps, axis=0)


def test_patient_labels_any_image_positive_nan_not_positive():
    ids = np.array(["b", "a", "a", "b", "c"])
    labels = np.array([[np.nan, 0], [0, 1], [1, np.nan], [0, 0], [np.nan, np.nan]], dtype=np.float32)
    patients, row_patient, y = patient_labels(ids, labels)
    assert patients.tolist() == ["a", "b", "c"] and row_patient.tolist() == [1, 0, 0, 1, 2]
    assert y.tolist() == [[True, True], [False, False], [False, False]]


def test_stratified_split_patient_disjoint_deterministic_and_sized(nih_sample):
    ids, labels = _many_images_per_patient(nih_sample)
    split = stratified_split(ids, labels, (0.7, 0.1, 0.2), seed=3)
    check_patient_disjoint(ids, split)  # raises on a leak
    assert np.array_equal(split, stratified_split(ids, labels, (0.7, 0.1, 0.2), seed=3))
    assert not np.array_equal(split, stratified_split(ids, labels, (0.7, 0.1, 0.2), seed=4))
    patients = {name: len(set(ids[split == name])) for name in SPLIT_NAMES}
    assert abs(patients["train"] - 0.7 * 621) <= 6 and abs(patients["test"] - 0.2 * 621) <= 6, patients
    with pytest.raises(StratifyError, match="ratios"):
        stratified_split(ids, labels, (0.7, 0.2, 0.2))


def test_rare_findings_reach_every_split_on_the_nih_sample(nih_sample):
    """Hernia has 20 positive patients of 621, Edema 18: iterative stratification puts some in val (10 %) and test;
    checked over seeds, where a random split misses a finding in some split for at least one seed."""
    ids, labels = nih_sample.frame["patient_id"].to_numpy(), nih_sample.labels
    random_missing = 0
    for seed in range(5):
        strat = finding_deviation(labels, stratified_split(ids, labels, seed=seed))
        for name in SPLIT_NAMES:
            s = stratified_split(ids, labels, seed=seed) == name
            assert (np.nan_to_num(labels[s]) >= 0.5).sum(0).min() >= 1, (seed, name)
            r = random_patient_split(ids, seed=seed) == name
            random_missing += int(((np.nan_to_num(labels[r]) >= 0.5).sum(0) == 0).sum())
        assert np.isfinite(strat).all()
    assert random_missing > 0  # the property is not free: random splits do lose rare findings here


def test_train_subsets_nested_patient_level_and_untouched_val_test(nih_sample):
    ids, labels = _many_images_per_patient(nih_sample)
    split = stratified_split(ids, labels, seed=0)
    fractions = (0.01, 0.05, 0.1, 0.3, 0.5, 1.0)
    kept = {f: train_subset(ids, labels, split, f, seed=7) for f in fractions[::-1]}  # asked in any order
    for small, large in zip(fractions, fractions[1:]):
        assert not (kept[small] & ~kept[large]).any(), (small, large)  # nested
        assert kept[small].sum() < kept[large].sum()
    assert np.array_equal(kept[1.0], split == "train")
    for f, mask in kept.items():
        assert not (mask & (split != "train")).any()  # val and test are never in a subset
        in_subset = set(ids[mask])
        assert all(mask[ids == p].all() for p in list(in_subset)[:50])  # patient level: all of its images
        n_train = len(set(ids[split == "train"]))
        assert len(in_subset) == max(1, round(f * n_train))
    assert np.array_equal(kept[0.1], train_subset(ids, labels, split, 0.1, seed=7))  # deterministic
    assert not np.array_equal(kept[0.1], train_subset(ids, labels, split, 0.1, seed=8))
    with pytest.raises(StratifyError, match="fraction"):
        train_subset(ids, labels, split, 0.0)


@pytest.mark.slow
def test_real_label_files_stratified_not_worse_than_random(shared_data):
    """PadChest and CheXpert, 70/10/20 by patient: per split and per finding with >= 50 positive images, the
    stratified split's prevalence deviation (seed 0) is at most the random split's mean over 10 seeds; every finding
    with >= 10 positive patients (1 / the smallest ratio) reaches every split, also on a 1 % patient sample where
    findings are rare."""
    from chestx.throughput.split_balance import MIN_POSITIVES, read_label_tables

    rare_seen = 0

    for name, table in read_label_tables(shared_data).items():
        ids, labels = table.frame["patient_id"].to_numpy(), table.labels
        common = (np.nan_to_num(labels) >= 0.5).sum(0) >= MIN_POSITIVES
        split = stratified_split(ids, labels, seed=0)
        strat = finding_deviation(labels, split)[:, common]  # (3, Kc)
        for part in SPLIT_NAMES:  # every finding with a positive reaches every split
            assert ((np.nan_to_num(labels[split == part]) >= 0.5).sum(0) >= 1).all(), (name, part)
        rand = np.stack([finding_deviation(labels, random_patient_split(ids, seed=s))[:, common]
                         for s in range(10)])  # (10, 3, Kc)
        assert (strat.max(1) <= rand.max(2).mean(0)).all(), (name, strat.max(1), rand.max(2).mean(0))
        worse = np.array(table.pathologies)[common][strat.max(0) > rand.max(1).mean(0)]
        assert len(worse) == 0, (name, worse.tolist())

        patients = np.unique(ids)
        sample = np.isin(ids, np.random.default_rng(0).choice(patients, len(patients) // 100, replace=False))
        s_ids, s_labels = ids[sample], labels[sample]
        _, _, y = patient_labels(s_ids, s_labels)
        rare_seen += int(((y.sum(0) >= 10) & (y.sum(0) < 30)).sum())
        split = stratified_split(s_ids, s_labels, seed=0)
        for part in SPLIT_NAMES:
            _, _, y_part = patient_labels(s_ids[split == part], s_labels[split == part])
            assert (y_part.sum(0)[y.sum(0) >= 10] >= 1).all(), (name, part)
    assert rare_seen >= 5  # the 1 % samples do have rare findings (10-29 positive patients)
