"""One image file under two spellings is refused by its resolved file, not by its text (issue 25): `data=csv` names
both rows (line numbers) and both spellings; the base class refuses it for every dataset, whatever built the paths.
Real NIH sample images copied into a tmp folder."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from chestx.data.datasets.csv import CSVData
from chestx.data.datasets.nih import NIHData
from chestx.data.errors import DataError
from chestx.data.images.same_file import same_files

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "data" / "nih_sample"
NAMES = sorted(p.name for p in (SAMPLE / "images").iterdir())[:2]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "a").mkdir()
    for name in NAMES:
        shutil.copy(SAMPLE / "images" / name, tmp_path / "images" / name)
    return tmp_path


def write_csv(root: Path, paths: list[str]) -> None:
    lines = ["file,Effusion,split"] + [f"{p},{i % 2},{['train', 'val', 'test'][i % 3]}" for i, p in enumerate(paths)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def load(root: Path) -> None:
    CSVData(root=str(root), csv="labels.csv", image_column="file", findings=["Effusion"],
            split_column="split").labels_only()


def spellings(root: Path) -> dict[str, str]:
    x = NAMES[0]
    os.symlink(root / "images" / x, root / "link.png")
    return {
        "dot-slash": f"./images/{x}",
        "absolute": str(root / "images" / x),
        "dot-dot": f"a/../images/{x}",
        "symlink": "link.png",
    }


@pytest.mark.parametrize("kind", ["dot-slash", "absolute", "dot-dot", "symlink"])
def test_csv_refuses_one_file_under_two_spellings(folder: Path, kind: str) -> None:
    other = spellings(folder)[kind]
    write_csv(folder, [f"images/{NAMES[1]}", f"images/{NAMES[0]}", other])
    with pytest.raises(DataError) as error:
        load(folder)
    message = str(error.value)
    assert "row 1 (line 3)" in message and "row 2 (line 4)" in message, message
    assert f"'images/{NAMES[0]}'" in message and repr(other) in message, message
    assert str((folder / "images" / NAMES[0]).resolve()) in message and "list each image once" in message


def test_csv_distinct_files_still_load(folder: Path) -> None:
    write_csv(folder, [f"./images/{NAMES[0]}", str(folder / "images" / NAMES[1])])
    load(folder)  # two files, two spellings styles: no error


def test_same_files_resolves_against_root(folder: Path) -> None:
    spelled = spellings(folder)
    paths = [f"images/{NAMES[0]}", None, f"images/{NAMES[1]}", *spelled.values()]
    pairs = same_files(paths, folder)
    assert [(i, j) for i, j, _ in pairs] == [(0, 3), (0, 4), (0, 5), (0, 6)]
    assert {real for _, _, real in pairs} == {os.path.realpath(folder / "images" / NAMES[0])}
    assert same_files([f"images/{n}" for n in NAMES], folder) == []


def test_base_class_refuses_for_any_dataset(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataset whose resolve_paths builds two paths to one file (here NIH, with a symlink) stops at set-up."""
    data = NIHData(root=str(SAMPLE), csv=str(SAMPLE / "Data_Entry_sample.csv"), split="random")
    table, split = data.load_table()
    real = data.resolve_paths(table)[0]
    assert all(p is not None for p in real)
    link = folder / "same.png"
    os.symlink(real[0], link)
    twisted = [link, *real]  # row 0: a symlink to row 1's file
    monkeypatch.setattr(NIHData, "resolve_paths", lambda self, t: (twisted[:len(t)], []))
    with pytest.raises(DataError, match=r"row 0 .* row 1 .* are both .*list each image once"):
        data._drop_missing(table, split)
