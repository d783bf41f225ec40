"""Patient-level splits on synthetic frames (fast) and on list files written by the test."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.data.labels.splits import (
    SPLITS,
    SplitError,
    check_patient_disjoint,
    list_split,
    load_split,
    official_split,
    random_split,
    save_split,
)


def make_frame(n_patients: int = 1000, seed: int = 0) -> pd.DataFrame:
    """1-5 images per patient, NIH-style ids."""
    counts = np.random.default_rng(seed).integers(1, 6, size=n_patients)
    patients = np.repeat(np.arange(n_patients), counts)
    follow = np.concatenate([np.arange(c) for c in counts])
    return pd.DataFrame({
        "image_id": [f"{p:08d}_{f:03d}.png" for p, f in zip(patients, follow)],
        "patient_id": patients.astype(str),
    })


def write_list(path: Path, names, labels: bool = False) -> Path:
    path.write_text("".join(f"{n}{' 0 1 0 0 0 0 0 0 0 0 0 0 0 0' if labels else ''}\n" for n in names))
    return path


def test_random_split_disjoint_ratios_seeded() -> None:
    frame = make_frame()
    split = random_split(frame, ratios=(0.7, 0.1, 0.2), seed=1)
    check_patient_disjoint(frame["patient_id"].to_numpy(), split)
    for name, ratio in zip(SPLITS, (0.7, 0.1, 0.2)):
        assert frame.loc[split == name, "patient_id"].nunique() == round(ratio * 1000) or name == "test"
        assert abs((split == name).mean() - ratio) < 0.03
    np.testing.assert_array_equal(split, random_split(frame, seed=1))
    assert (split != random_split(frame, seed=2)).any()


def test_random_split_zero_ratio_and_errors() -> None:
    frame = make_frame(50)
    assert set(random_split(frame, ratios=(0.9, 0.1, 0.0))) == {"train", "val"}
    with pytest.raises(SplitError, match="'val' split is empty.*3 patients"):
        random_split(make_frame(3), ratios=(0.7, 0.1, 0.2))
    with pytest.raises(SplitError, match="summing to 1"):
        random_split(frame, ratios=(0.7, 0.2, 0.2))


def test_overlap_detection_names_patients() -> None:
    patients = np.array(["1", "1", "2", "3", "3", "4"])
    split = np.array(["train", "val", "train", "test", "train", "test"])
    with pytest.raises(SplitError, match=r"2 patients .*\['1', '3'\]"):
        check_patient_disjoint(patients, split)
    check_patient_disjoint(patients[2:4], split[2:4])


def test_save_split_round_trip(tmp_path: Path) -> None:
    frame = make_frame(40)
    split = random_split(frame, seed=0)
    save_split(tmp_path / "run" / "split.csv", frame, split)
    saved = pd.read_csv(tmp_path / "run" / "split.csv", dtype=str)
    assert list(saved.columns) == ["image_id", "patient_id", "split"]
    assert saved["image_id"].tolist() == frame["image_id"].tolist()
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    np.testing.assert_array_equal(
        load_split(tmp_path / "run" / "split.csv", shuffled),
        pd.Series(split, index=frame["image_id"]).loc[shuffled["image_id"]].to_numpy(),
    )


def test_list_split_ignores_labels_and_checks_lists(tmp_path: Path) -> None:
    frame = make_frame(30)
    ids = frame.groupby("patient_id")["image_id"].apply(list)
    groups = {"train": sum(ids.iloc[:20], []), "val": sum(ids.iloc[20:25], []), "test": sum(ids.iloc[25:], [])}
    lists = {s: write_list(tmp_path / f"{s}.txt", names, labels=True) for s, names in groups.items()}
    split = list_split(frame, lists)
    for s, names in groups.items():
        assert set(frame.loc[split == s, "image_id"]) == set(names)
    # A frame that is a subset of the lists is fine (e.g. the 621-image sample).
    assert len(list_split(frame.iloc[::2], lists)) == len(frame.iloc[::2])
    # Rows in no list: error with count and examples, or '' with unlisted="drop".
    extra = pd.concat([frame, pd.DataFrame({"image_id": ["99999999_000.png"], "patient_id": ["99999"]})])
    with pytest.raises(SplitError, match=r"1 of \d+ rows are in none .*99999999_000.png"):
        list_split(extra, lists)
    assert list_split(extra, lists, unlisted="drop")[-1] == ""
    # An image in two lists, and a list with none of the frame's images.
    write_list(tmp_path / "val2.txt", groups["val"] + groups["test"][:1])
    with pytest.raises(SplitError, match="both"):
        list_split(frame, {**lists, "val": tmp_path / "val2.txt"})
    write_list(tmp_path / "other.txt", ["12345678_000.png"])
    with pytest.raises(SplitError, match="'val' split is empty"):
        list_split(frame.loc[split != "val"], {**lists, "val": tmp_path / "other.txt"})
    with pytest.raises(SplitError, match="missing.txt"):
        list_split(frame, {**lists, "test": tmp_path / "missing.txt"})


def test_official_split_val_by_patient(tmp_path: Path) -> None:
    frame = make_frame(200)
    test_mask = frame["patient_id"].astype(int) >= 160
    tv = write_list(tmp_path / "train_val_list.txt", frame.loc[~test_mask, "image_id"])
    te = write_list(tmp_path / "test_list.txt", frame.loc[test_mask, "image_id"])
    split = official_split(frame, tv, te, val_fraction=0.25, seed=0)
    assert (split[test_mask.to_numpy()] == "test").all()
    assert frame.loc[split == "val", "patient_id"].nunique() == 40
    check_patient_disjoint(frame["patient_id"].to_numpy(), split)
    with pytest.raises(SplitError, match="'val' split is empty"):
        official_split(frame.iloc[:1], tv, te, val_fraction=0.1)
