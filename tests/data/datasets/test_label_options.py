"""Less travelled label options on the real label files: which images are normal, which pathologies
get a 3-way output, where the CheXNet split takes its labels, and that `labels_only` (explore,
evaluate) sees the same rows and split as training. Each test failed before issue 8's fixes."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.data.datasets.chexpert import CheXpertData
from chestx.data.datasets.nih import NIHData
from chestx.data.labels.table import NIH_PATHOLOGIES, DataError


@pytest.fixture(scope="module")
def nih_csv(nih_dir: Path) -> Path:
    return nih_dir / "Data_Entry_2017_v2020.csv"


def _nih(nih_dir: Path, **kwargs) -> NIHData:
    return NIHData(root=str(nih_dir), csv=str(nih_dir / "Data_Entry_2017_v2020.csv"), split_dir=str(nih_dir),
                         **kwargs)


# ------------------------------------------------------------------ bug 1: normal images
def test_nih_15_classes_undersampling_finds_the_normals(nih_dir: Path, nih_csv: Path) -> None:
    """With No Finding as a 15th class, the old rule (no class equal to 1) found 0 normal images."""
    full, full_split = _nih(nih_dir, include_no_finding=True).labels_only()
    under, under_split = _nih(nih_dir, include_no_finding=True, no_finding_fraction=0.5).labels_only()
    raw = pd.read_csv(nih_csv).set_index("Image Index")
    normal = (raw.loc[full.frame["image_id"], "Finding Labels"] == "No Finding").to_numpy()
    np.testing.assert_array_equal(full.frame["no_finding"].to_numpy(), normal)
    normal_train = int((normal & (full_split == "train")).sum())
    dropped = len(full) - len(under)
    assert normal_train == 45_700
    assert abs(dropped - normal_train / 2) < 4 * np.sqrt(normal_train * 0.25)  # binomial, 4 sd
    kept = set(under.frame["image_id"])
    gone = ~full.frame["image_id"].isin(kept).to_numpy()
    assert (normal & (full_split == "train"))[gone].all()  # only normal training images go
    for name in ("val", "test"):
        assert (full_split == name).sum() == (under_split == name).sum()


@pytest.mark.parametrize("tasks, normal_train", [("competition", 15_246), ("all", 15_246)])
def test_chexpert_normal_is_no_finding_1(chexpert_dir: Path, tasks: str, normal_train: int) -> None:
    """5 tasks: 60,471 rows counted as normal (20,361 with an uncertain label); 14 tasks: none of the
    real No Finding rows qualified. Normal is CheXpert's own `No Finding` = 1, whatever the tasks."""
    table, split = CheXpertData(root=str(chexpert_dir), findings=tasks).labels_only()
    assert int((table.frame["no_finding"] & (split == "train")).sum()) == normal_train
    under, under_split = CheXpertData(root=str(chexpert_dir), findings=tasks, no_finding_fraction=0.25).labels_only()
    dropped = len(table) - len(under)
    assert abs(dropped - 0.75 * normal_train) < 4 * np.sqrt(normal_train * 0.75 * 0.25)
    gone = ~table.frame["image_id"].isin(set(under.frame["image_id"])).to_numpy()
    assert table.frame["no_finding"].to_numpy()[gone].all() and (split[gone] == "train").all()
    if "No Finding" in table.pathologies:  # 14 tasks: the dropped rows are exactly No Finding = 1 rows
        assert (table.labels[gone, table.pathologies.index("No Finding")] == 1).all()
    else:  # the 5 tasks: no dropped row carries an uncertain competition label (20,361 did before)
        assert not table.uncertain[gone].any()


def test_undersampling_logs_normal_and_kept(chexpert_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    CheXpertData(root=str(chexpert_dir), no_finding_fraction=0.5).labels_only()
    message = next(r.getMessage() for r in caplog.records if "Undersampling" in r.getMessage())
    assert "has 15246 normal images" in message and "keeping 7818" in message


# ------------------------------------------------------------- bug 2: per-pathology multiclass
def test_multiclass_flags_only_for_selected_multiclass_pathologies(chexpert_dir: Path) -> None:
    unselected = CheXpertData(root=str(chexpert_dir), uncertainty={"default": "zeros", "Fracture": "multiclass"})
    assert unselected.multiclass == [False] * 5  # Fracture is not a competition task: 5 outputs, not 15
    mixed = CheXpertData(root=str(chexpert_dir), uncertainty={"default": "multiclass", "Atelectasis": "ones"})
    assert mixed.pathologies == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    assert mixed.multiclass == [False, True, True, True, True]
    table, _ = mixed.labels_only()
    atelectasis = table.labels[:, 0]
    assert (atelectasis[table.uncertain[:, 0]] == 1.0).all()  # U-Ones, as the table says


# ------------------------------------------------------------------------ bug 5: CheXNet labels
def test_chexnet_split_labels_from_lists_or_csv(nih_dir: Path) -> None:
    lists, split = _nih(nih_dir, split="chexnet", chexnet_labels="lists").labels_only()
    csv, split_csv = _nih(nih_dir, split="chexnet", chexnet_labels="csv").labels_only()
    default, _ = _nih(nih_dir, split="chexnet").labels_only()
    np.testing.assert_array_equal(default.labels, csv.labels)  # the default is the label file in use, as every split
    np.testing.assert_array_equal(split, split_csv)
    k = NIH_PATHOLOGIES.index("Pneumonia")
    assert int(lists.labels[split == "test", k].sum()) == 242
    assert int(csv.labels[split == "test", k].sum()) == 260
    differ = lists.labels != csv.labels
    assert int(differ.sum()) == 188 and int(differ.any(axis=1).sum()) == 181
    # the list files are the source: compare with them directly
    written = pd.read_csv(nih_dir / "chexnet_split" / "test_list.txt", sep=r"\s+", header=None, index_col=0)
    test_ids = lists.frame["image_id"][split == "test"]
    np.testing.assert_array_equal(lists.labels[split == "test"], written.loc[test_ids].to_numpy(dtype=np.float32))


def test_chexnet_labels_bad_value_names_the_key(nih_dir: Path) -> None:
    with pytest.raises(DataError, match="data.chexnet_labels='file'"):
        _nih(nih_dir, split="chexnet", chexnet_labels="file")


# --------------------------------------------------- bug 4: labels_only == the training split
def _sample_with_missing(sample_root: Path, dest: Path, n_missing: int = 40) -> Path:
    """The embedded sample with some image files removed (and the label file unchanged)."""
    shutil.copytree(sample_root, dest)
    for path in sorted((dest / "images").glob("*.png"))[::15][:n_missing]:
        path.unlink()
    return dest


def test_labels_only_equals_training_split_with_missing_images(sample_root: Path, tmp_path: Path) -> None:
    """Missing images were dropped before undersampling in training only, so the seeded draws fell on
    other rows than in `explore`; now both draw over the whole table and drop missing images after."""
    root = _sample_with_missing(sample_root, tmp_path / "sample")
    options = dict(root=str(root), csv=str(root / "Data_Entry_sample.csv"), split="random", image_size=32,
                   missing_images="drop", no_finding_fraction=0.3, seed=3)
    training = NIHData(**options)
    training.save_split(tmp_path / "split.csv")
    saved = pd.read_csv(tmp_path / "split.csv")
    explored, split = NIHData(**options).labels_only(find_images=True)
    assert explored.frame["image_id"].tolist() == saved["image_id"].tolist()
    assert split.tolist() == saved["split"].tolist()
    # without the image lookup, the same rows plus exactly the missing ones
    labels_file, split_all = NIHData(**options).labels_only()
    extra = set(labels_file.frame["image_id"]) - set(saved["image_id"])
    assert extra == {i for i in labels_file.frame["image_id"] if not (root / "images" / i).exists()}
    assert 30 <= len(extra) <= 40  # a removed file may belong to a normal image that undersampling dropped
    present = ~labels_file.frame["image_id"].isin(extra).to_numpy()
    assert labels_file.frame["image_id"][present].tolist() == saved["image_id"].tolist()
    assert split_all[present].tolist() == saved["split"].tolist()
