"""data.missing_images=drop: the warning names the first five files, the run folder gets all of them with their
reasons (unreadable.csv, beside split.csv), and the warning says so (issue 25). Real NIH images plus broken files."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from chestx.core.run_folder import SPLIT_FILE, UNREADABLE_FILE
from chestx.data.datasets.csv import CSVData

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "nih_sample"


def test_every_dropped_file_is_listed_with_its_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    good = sorted(p.name for p in (SAMPLE / "images").iterdir())[:6]
    for name in good:
        shutil.copy(SAMPLE / "images" / name, root / "images" / name)
    broken = [f"broken{i}.png" for i in range(7)]  # seven files that are no image: more than the five shown
    for name in broken:
        (root / "images" / name).write_bytes(b"not an image at all " * 4)
    rows = [f"images/{n}" for n in good + broken] + ["images/gone.png"]  # and one missing file
    split = ["train", "val", "test"] * 5
    lines = ["file,Effusion,split"] + [f"{r},{i % 2},{split[i]}" for i, r in enumerate(rows)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    data = CSVData(root=str(root), csv="labels.csv", image_column="file", findings=["Effusion"],
                   split_column="split", missing_images="drop")
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        data.save_split(run / SPLIT_FILE)
    listed = pd.read_csv(run / UNREADABLE_FILE, dtype=str)
    assert list(listed.columns) == ["image_id", "path", "reason"]
    assert sorted(listed["image_id"]) == sorted(rows[len(good):])  # all eight, not the first five
    assert listed["reason"].str.len().min() > 10
    gone = listed.set_index("image_id").loc["images/gone.png", "reason"]
    assert "not found" in gone
    assert all(name in reason for name, reason in zip(broken, listed["reason"].iloc[1:])), listed
    assert len(pd.read_csv(run / SPLIT_FILE)) == len(good)
    text = caplog.text
    assert UNREADABLE_FILE in text and str(run / UNREADABLE_FILE) in text, text
    assert "..." in text  # the warning itself still shows only the first five


def test_nothing_dropped_writes_no_list(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    good = sorted(p.name for p in (SAMPLE / "images").iterdir())[:3]
    for name in good:
        shutil.copy(SAMPLE / "images" / name, root / "images" / name)
    lines = ["file,Effusion,split"] + [f"images/{n},{i % 2},{s}" for i, (n, s) in
                                       enumerate(zip(good, ["train", "val", "test"]))]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    data = CSVData(root=str(root), csv="labels.csv", image_column="file", findings=["Effusion"],
                   split_column="split", missing_images="drop")
    data.save_split(tmp_path / "run" / SPLIT_FILE)
    assert not (tmp_path / "run" / UNREADABLE_FILE).exists()
