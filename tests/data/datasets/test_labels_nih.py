"""NIH ChestX-ray14 label reading and image finding, on the real label file and the embedded sample."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.data.labels.table import NIH_PATHOLOGIES, NO_FINDING, DataError, LabelTable
from chestx.data.datasets.nih import find_nih_images, read_nih
from chestx.data.labels.splits import SPLITS, SplitError, check_patient_disjoint, list_split, official_split

FULL_CSV = "Data_Entry_2017_v2020.csv"


@pytest.fixture(scope="module")
def nih_raw(nih_dir: Path) -> pd.DataFrame:
    return pd.read_csv(nih_dir / FULL_CSV)


@pytest.fixture(scope="module")
def nih_table(nih_dir: Path) -> LabelTable:
    return read_nih(nih_dir / FULL_CSV)


def test_full_label_file_counts(nih_table: LabelTable, nih_raw: pd.DataFrame) -> None:
    t = nih_table
    assert t.labels.shape == (112_120, 14) and t.labels.dtype == np.float32
    assert t.pathologies == list(NIH_PATHOLOGIES)
    assert not t.uncertain.any() and not np.isnan(t.labels).any()
    for k, name in enumerate(NIH_PATHOLOGIES):  # independent count: whole '|'-separated token
        expected = nih_raw["Finding Labels"].str.contains(rf"(?:^|\|){re.escape(name)}(?:\||$)").sum()
        assert t.labels[:, k].sum() == expected, name
    normal = (nih_raw["Finding Labels"] == NO_FINDING).to_numpy()
    assert normal.sum() == 60_361
    assert (t.labels[normal] == 0).all()
    assert (t.labels[~normal].sum(axis=1) >= 1).all()
    assert t.frame["patient_id"].map(type).eq(str).all() and t.frame["patient_id"].nunique() == 30_805
    assert t.frame.loc[0, "image_id"] == "00000001_000.png" and t.frame.loc[0, "view"] == "PA"


def test_no_finding_as_15th_class(nih_dir: Path, nih_raw: pd.DataFrame) -> None:
    t = read_nih(nih_dir / FULL_CSV, include_no_finding=True)
    assert t.pathologies == [*NIH_PATHOLOGIES, NO_FINDING] and t.labels.shape == (112_120, 15)
    np.testing.assert_array_equal(t.labels[:, -1], (nih_raw["Finding Labels"] == NO_FINDING).to_numpy())


def test_official_split_on_full_file(nih_table: LabelTable, nih_dir: Path) -> None:
    split = official_split(nih_table.frame, nih_dir / "train_val_list.txt", nih_dir / "test_list.txt")
    n = {s: int((split == s).sum()) for s in SPLITS}
    assert n["train"] + n["val"] == 86_524 and n["test"] == 25_596
    patients = nih_table.frame["patient_id"]
    val_share = patients[split == "val"].nunique() / patients[split != "test"].nunique()
    assert abs(val_share - 0.1) < 0.001
    check_patient_disjoint(patients.to_numpy(), split)
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not set(patients[split == a]) & set(patients[split == b])
    again = official_split(nih_table.frame, nih_dir / "train_val_list.txt", nih_dir / "test_list.txt")
    np.testing.assert_array_equal(split, again)


def test_chexnet_split_on_full_file(nih_table: LabelTable, nih_dir: Path) -> None:
    lists = {s: nih_dir / "chexnet_split" / f"{s}_list.txt" for s in SPLITS}
    split = list_split(nih_table.frame, lists)
    assert [(split == s).sum() for s in SPLITS] == [78_468, 11_219, 22_433]


def test_view_filter(nih_dir: Path, nih_raw: pd.DataFrame) -> None:
    pa = read_nih(nih_dir / FULL_CSV, views=["PA"])
    assert len(pa) == (nih_raw["View Position"] == "PA").sum() == 67_310
    assert set(pa.frame["view"]) == {"PA"}
    assert len(read_nih(nih_dir / FULL_CSV, views=["PA", "AP"])) == 112_120
    with pytest.raises(DataError, match="LATERAL"):
        read_nih(nih_dir / FULL_CSV, views=["LATERAL"])


def test_pathology_subset_keeps_requested_order(sample_root: Path) -> None:
    t = read_nih(sample_root / "Data_Entry_sample.csv", pathologies=["Hernia", "Edema"])
    full = read_nih(sample_root / "Data_Entry_sample.csv")
    np.testing.assert_array_equal(t.labels, full.labels[:, [13, 9]])
    with pytest.raises(DataError, match="Pleural Effusion"):
        read_nih(sample_root / "Data_Entry_sample.csv", pathologies=["Pleural Effusion"])


def test_missing_columns_lists_expected_and_found(tmp_path: Path, sample_root: Path) -> None:
    raw = pd.read_csv(sample_root / "Data_Entry_sample.csv").drop(columns=["View Position"])
    raw.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError) as err:
        read_nih(tmp_path / "bad.csv")
    msg = str(err.value)
    assert "bad.csv" in msg and "['View Position']" in msg and "Expected columns" in msg and "Follow-up #" in msg


def test_missing_csv_names_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.csv") as err:
        read_nih(tmp_path / "nowhere.csv")
    assert isinstance(err.value, DataError)


def test_unknown_label_string_is_named(tmp_path: Path, sample_root: Path) -> None:
    raw = pd.read_csv(sample_root / "Data_Entry_sample.csv")
    raw.loc[3, "Finding Labels"] = "Effusion|Pneumonitis"
    raw.to_csv(tmp_path / "typo.csv", index=False)
    with pytest.raises(DataError, match=r"\['Pneumonitis'\].*" + raw.loc[3, "Image Index"]):
        read_nih(tmp_path / "typo.csv")


def test_2017_age_format(tmp_path: Path, sample_root: Path) -> None:
    raw = pd.read_csv(sample_root / "Data_Entry_sample.csv").head(3)
    raw["Patient Age"] = ["058Y", "007M", "061Y"]
    raw.to_csv(tmp_path / "old.csv", index=False)
    assert read_nih(tmp_path / "old.csv").frame["age"].tolist() == [58.0, 7.0, 61.0]


@pytest.mark.parametrize("layout", ["images_0NN/images", "images", "flat"])
def test_find_nih_images_layouts(tmp_path: Path, layout: str) -> None:
    ids = [f"0000000{i}_000.png" for i in range(6)]
    for i, name in enumerate(ids[:5]):  # the last id has no file
        folder = {"images_0NN/images": tmp_path / f"images_00{1 + i % 2}" / "images",
                  "images": tmp_path / "images", "flat": tmp_path}[layout]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    found, missing = find_nih_images(tmp_path, ids)
    assert sorted(found) == ids[:5] and missing == [ids[5]]
    assert all(p.is_file() and p.name == i for i, p in found.items())


def test_find_nih_images_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="absent"):
        find_nih_images(tmp_path / "absent", ["x.png"])


def test_embedded_sample(sample_root: Path, nih_dir: Path) -> None:
    t = read_nih(sample_root / "Data_Entry_sample.csv")
    assert t.labels.shape == (621, 14) and (t.labels.sum(axis=0) > 0).all()
    found, missing = find_nih_images(sample_root, t.frame["image_id"])
    assert len(found) == 621 and missing == []
    split = official_split(t.frame, nih_dir / "train_val_list.txt", nih_dir / "test_list.txt")
    assert all((split == s).any() for s in SPLITS)
    # The sample is entirely in CheXNet's test list: usable for evaluation, not for training.
    lists = {s: nih_dir / "chexnet_split" / f"{s}_list.txt" for s in SPLITS}
    assert (list_split(t.frame, lists, require=("test",)) == "test").all()
    with pytest.raises(SplitError, match="'train' split is empty"):
        list_split(t.frame, lists)
