"""Patient-level k-fold (data.folds / data.fold) on the real label files: NIH's official split, CheXpert
(valid.csv the test split) and the embedded sample (random split), each checked against the base split
and the official list files, not against the fold code."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.data.labels.table import DataError
from chestx.data.datasets.chexpert import CheXpertData
from chestx.data.datasets.nih import NIHData
from chestx.data.labels.splits import SplitError, kfold_split, patient_folds


def _nih(nih_dir: Path, **kwargs) -> NIHData:
    return NIHData(root=str(nih_dir), csv=str(nih_dir / "Data_Entry_2017_v2020.csv"), split_dir=str(nih_dir), **kwargs)


def _sample(sample_root: Path, **kwargs) -> NIHData:
    return NIHData(root=str(sample_root), csv=str(sample_root / "Data_Entry_sample.csv"), split="random", **kwargs)


def _check_partition(patients: np.ndarray, base: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Every fold of `base` against `base` itself; returns the fold of each row."""
    pool = np.isin(base, ["train", "val"])
    splits, fold_rows = zip(*(kfold_split(base, patients, folds, i, seed=seed) for i in range(folds)))
    for fold_of_row in fold_rows[1:]:  # the partition does not depend on which fold validates
        np.testing.assert_array_equal(fold_of_row, fold_rows[0])
    val = np.stack([s == "val" for s in splits])  # (folds, N)
    np.testing.assert_array_equal(val.sum(axis=0), pool.astype(int))  # each pool row validates exactly once
    for i, split in enumerate(splits):
        np.testing.assert_array_equal(split == "test", base == "test")  # test rows untouched
        np.testing.assert_array_equal(split == "train", pool & ~val[i])  # the other folds train
        np.testing.assert_array_equal(val[i], fold_rows[0] == i)
    assert (fold_rows[0][~pool] == -1).all() and set(np.unique(fold_rows[0][pool])) == set(range(folds))
    per_patient = pd.DataFrame({"p": patients[pool], "f": fold_rows[0][pool]}).groupby("p")["f"]
    assert per_patient.nunique().max() == 1, "a patient in two folds"
    sizes = per_patient.first().value_counts()  # patients per fold
    assert len(sizes) == folds and sizes.max() - sizes.min() <= 1, sizes.to_dict()
    return fold_rows[0]


def test_kfold_on_nih_official_split(nih_dir: Path) -> None:
    """5 folds of NIH's 86,524 train_val images: the pool is exactly train_val_list.txt, test_list.txt untouched."""
    table, base = _nih(nih_dir).load_table()
    patients = table.frame["patient_id"].astype(str).to_numpy()
    folds = _check_partition(patients, base, 5, seed=0)
    listed = set((nih_dir / "train_val_list.txt").read_text().split())
    np.testing.assert_array_equal(folds >= 0, table.frame["image_id"].isin(listed).to_numpy())
    assert (folds >= 0).sum() == 86_524 and (base == "test").sum() == 25_596
    np.testing.assert_array_equal(folds, _check_partition(patients, base, 5, seed=0))  # same seed, same folds
    other = patient_folds(patients, folds >= 0, 5, seed=1)
    assert (other != folds).mean() > 0.5  # another seed deals the patients afresh
    assert pd.crosstab(folds[folds >= 0], other[folds >= 0]).to_numpy().min() > 0


def test_kfold_on_chexpert_keeps_valid_csv_as_test(chexpert_dir: Path) -> None:
    data = CheXpertData(root=str(chexpert_dir), folds=4, fold=3)
    table, split = data.labels_only()
    base_table, base = CheXpertData(root=str(chexpert_dir)).labels_only()
    np.testing.assert_array_equal(table.frame["image_id"], base_table.frame["image_id"])
    valid = pd.read_csv(chexpert_dir / "valid.csv")
    assert set(table.frame.loc[split == "test", "path"]) == set(valid.loc[valid["Frontal/Lateral"] == "Frontal", "Path"])
    np.testing.assert_array_equal(split == "test", base == "test")
    _check_partition(table.frame["patient_id"].astype(str).to_numpy(), base, 4, seed=0)
    np.testing.assert_array_equal(split == "val", table.frame["fold"].to_numpy() == 3)


def test_kfold_through_the_dataset_on_the_sample(sample_root: Path, tmp_path: Path) -> None:
    """data.folds=3 on the embedded sample (random 70/10/20 split): 3 folds of the 80 % pool, the 20 % test
    split as without folds, undersampling of normals on the training folds only, the fold in split.csv."""
    base_table, base = _sample(sample_root).labels_only(find_images=True)
    val_ids: list[str] = []
    for i in range(3):
        data = _sample(sample_root, folds=3, fold=i, no_finding_fraction=0.5)
        table, split = data.labels_only(find_images=True)
        ids = table.frame["image_id"]
        np.testing.assert_array_equal(ids[split == "test"], base_table.frame["image_id"][base == "test"])
        pool = set(base_table.frame["image_id"][base != "test"])
        assert set(ids[split != "test"]) <= pool
        in_val = set(ids[split == "val"])
        assert in_val == set(base_table.frame["image_id"][_validates(base_table, base, i)])
        dropped = pool - set(ids)  # undersampled: normal images of the training folds only
        normal = set(base_table.frame["image_id"][base_table.frame["no_finding"].to_numpy()])
        assert dropped and dropped <= normal and not dropped & in_val
        val_ids += sorted(in_val)
        data.save_split(tmp_path / f"split{i}.csv")
        saved = pd.read_csv(tmp_path / f"split{i}.csv", dtype=str, keep_default_na=False)
        assert list(saved.columns) == ["image_id", "patient_id", "split", "fold"]
        assert (saved.loc[saved["split"] == "val", "fold"] == str(i)).all()
        assert (saved.loc[saved["split"] == "test", "fold"] == "").all()
        assert set(saved.loc[saved["split"] == "train", "fold"]) == {str(j) for j in range(3) if j != i}
    assert sorted(val_ids) == sorted(base_table.frame["image_id"][base != "test"])  # folds cover the pool once


def _validates(table, base: np.ndarray, fold: int) -> np.ndarray:
    """(N,) bool: the rows of the base split that fold `fold` of 3 validates on."""
    return kfold_split(base, table.frame["patient_id"].to_numpy(), 3, fold, seed=0)[0] == "val"


@pytest.mark.parametrize("options, message", [
    ({"fold": 1}, r"data.fold=1 needs data.folds: set data.folds=K"),
    ({"folds": 1, "fold": 0}, r"data.folds=1 must be an integer >= 2"),
    ({"folds": 3}, r"data.fold=None must be an integer in 0..2 .* -m data.fold=0,1,2"),
    ({"folds": 3, "fold": 3}, r"data.fold=3 must be an integer in 0..2"),
])
def test_fold_options_are_checked(sample_root: Path, options: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        _sample(sample_root, **options)


def test_more_folds_than_patients(sample_root: Path) -> None:
    data = _sample(sample_root, folds=600, fold=0)
    with pytest.raises(DataError, match=r"data.folds=600 data.fold=0: folds=600 needs at least 600 patients .* has 497"):
        data.labels_only()
    with pytest.raises(SplitError, match="fold=2 must be an integer in 0..1"):
        kfold_split(np.array(["train", "val"]), np.array(["a", "b"]), 2, 2)
