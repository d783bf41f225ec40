"""The image finders every dataset declares (`chestx.data.datasets.image_finders`): the first candidate folder holding
a name wins, each folder is listed once, missing rows are named as the finder says."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.data.datasets.image_finders import InFolders, UnderRoot, files_in_folders
from chestx.data.labels.table import LabelTable


def _table(paths: list[str]) -> LabelTable:
    n = len(paths)
    frame = pd.DataFrame({"image_id": [Path(p).name for p in paths], "patient_id": [f"p{i}" for i in range(n)],
                          "path": paths, "view": "PA", "age": np.nan, "sex": np.nan, "no_finding": False})
    return LabelTable(frame, np.zeros((n, 1), np.float32), np.zeros((n, 1), bool), ["Edema"])


def test_first_folder_wins_and_each_folder_is_listed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for folder, names in {"a": ["1.png", "2.png"], "b": ["2.png", "3.png"], "c": ["4.png"]}.items():
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_bytes(b"")
    listed: list[str] = []
    scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: listed.append(os.fspath(path)) or scandir(path))
    folders = [tmp_path / "a", tmp_path / "absent", tmp_path / "b", tmp_path / "c"]
    texts = ["x/1.png", "x/2.png", "y/3.png", "x/5.png", "y/2.png"]
    found = files_in_folders(texts, lambda parent: folders)
    assert found == [tmp_path / "a" / "1.png", tmp_path / "a" / "2.png", tmp_path / "b" / "3.png", None,
                     tmp_path / "a" / "2.png"]
    assert sorted(listed) == sorted(map(str, folders))  # four folders, each once, for five rows in two parents
    listed.clear()
    assert files_in_folders(["1.png"], lambda parent: folders) == [tmp_path / "a" / "1.png"]
    assert listed == [str(tmp_path / "a")]  # nothing after the folder that holds every name


def test_missing_rows_are_named_as_the_finder_says(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.png").write_bytes(b"")
    data = type("Data", (), {"root": tmp_path})()
    table = _table(["d/z.png", "d/b.png", "e/a.png"])
    in_rows = InFolders(lambda d, parent: [d.root / parent, d.root])
    assert in_rows.find(data, table) == ([None, tmp_path / "d" / "b.png", None], ["d/z.png", "e/a.png"])
    by_name = InFolders(lambda d, parent: [d.root / parent], sorted_names=True)
    assert by_name.find(data, table)[1] == ["a.png", "z.png"]
    absolute = tmp_path / "d" / "b.png"
    assert UnderRoot().find(data, _table([str(absolute), "d/b.png", "d/q.png"])) == (
        [absolute, absolute, None], ["d/q.png"])
