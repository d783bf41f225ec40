"""Where a dataset's images are: three strategies, one of which every dataset declares (`ChestXData.images`).

    images = UnderRoot()                     (a) `frame.path` relative to data.root (an absolute path as written):
                                                 MIMIC-CXR, Open-i, data=csv (the default)
    images = InFolders(candidates)           (b) the file name of `frame.path` looked up in an ordered list of
                                                 candidate folders, one directory listing per folder, the first
                                                 folder holding the name wins: NIH, PadChest, VinDr-CXR, CheXpert
    images = ByIndex(build)                  (c) `frame.image_id` -> file, from an index built once per dataset
                                                 (`ChestXData.image_index`, e.g. a DICOM walk): RSNA, SIIM

`ChestXData.resolve_paths` asks the declared finder; every finder returns (paths, missing): the file of every row
(None where missing) and the names of the missing rows, which `ChestXData._drop_missing` shows in its message
(the rows dropped under data.missing_images=drop are the rows whose path is None, whatever the names). A finder
checks only that a file is there; what is in it is the header check's job (`chestx.data.images.check`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:  # the base class imports this module
    from chestx.data.datasets.base import ChestXData
    from chestx.data.labels.table import LabelTable

log = logging.getLogger(__name__)

Found = tuple[list[Path | None], list[str]]  # (file of every row or None, names of the missing rows)


class ImageFinder:
    """A strategy of `ChestXData.resolve_paths` (see the module docstring)."""

    def find(self, data: ChestXData, table: LabelTable) -> Found:
        raise NotImplementedError


@dataclass(frozen=True)
class UnderRoot(ImageFinder):
    """(a) `frame.path` relative to data.root, or absolute (`~` expanded): one stat per row. Missing rows are named by
    their `frame.path`, in row order."""

    def find(self, data: ChestXData, table: LabelTable) -> Found:
        paths: list[Path | None] = []
        missing: list[str] = []
        for text in table.frame["path"].astype(str):
            path = data.root / Path(text).expanduser()  # an absolute path replaces data.root
            found = path.is_file()
            paths.append(path if found else None)
            if not found:
                missing.append(text)
        return paths, missing


@dataclass(frozen=True)
class InFolders(ImageFinder):
    """(b) `frame.path` is `<parent>/<name>`; `candidates(data, parent)` gives the folders where `<name>` may be, in
    order (`parent` as text, "" for a bare name; asked once per distinct parent). One directory listing per folder
    (made when a row first needs it, no stat per file); the first folder holding the name wins (`files_in_folders`).

    Missing rows are named by their `frame.path` in row order, or (`sorted_names`, NIH and PadChest as they always
    have) by their file names, sorted."""

    candidates: Callable[[ChestXData, str], Sequence[str | Path]]
    sorted_names: bool = False

    def find(self, data: ChestXData, table: LabelTable) -> Found:
        texts = table.frame["path"].astype(str).tolist()
        paths = files_in_folders(texts, lambda parent: self.candidates(data, parent))
        if self.sorted_names:
            return paths, sorted({t.rpartition("/")[2] for t, p in zip(texts, paths) if p is None})
        return paths, [t for t, p in zip(texts, paths) if p is None]


@dataclass(frozen=True)
class ByIndex(ImageFinder):
    """(c) `build(data)` -> {image_id: file}, built once per dataset and kept (`ChestXData.image_index`, which the
    dataset may also read, e.g. for DICOM headers); each row is looked up by `frame.image_id`. Missing rows are named
    by their image id, in row order."""

    build: Callable[[ChestXData], dict[str, Path]]

    def find(self, data: ChestXData, table: LabelTable) -> Found:
        files = data.image_index()
        ids = table.frame["image_id"]
        paths = [files.get(i) for i in ids]
        return paths, [i for i, p in zip(ids, paths) if p is None]


def files_in_folders(texts: Sequence[str], candidates: Callable[[str], Sequence[str | Path]]) -> list[Path | None]:
    """The file of each `<parent>/<name>` in `texts`: the first of `candidates(parent)` holding `<name>`, else None.
    Each folder is listed once (os.scandir; a folder that is absent holds nothing), when a name first needs it: no
    stat per file, and the folders after the one that holds every name are never listed."""
    rows_of: dict[str, dict[str, list[int]]] = {}  # parent -> name -> rows
    for i, text in enumerate(texts):
        parent, _, name = text.rpartition("/")
        rows_of.setdefault(parent, {}).setdefault(name, []).append(i)
    listings: dict[str, set[str]] = {}
    out: list[Path | None] = [None] * len(texts)
    for parent, wanted in rows_of.items():
        rest = dict(wanted)
        for folder in candidates(parent):
            if not rest:
                break
            key = os.fspath(folder)
            if key not in listings:
                listings[key] = _names_in(key)
            for name in rest.keys() & listings[key]:
                path = Path(key, name)
                for i in rest.pop(name):
                    out[i] = path
    return out


def _names_in(folder: str) -> set[str]:
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries}
    except (FileNotFoundError, NotADirectoryError):  # an absent folder holds nothing
        return set()


# ------------------------------------------------------------------ index builders of ByIndex
def index_folder(folder: Path, extension: str) -> dict[str, Path]:
    """`<stem>` -> path of every `<stem><extension>` directly in `folder` (one listing; RSNA's flat image folder);
    {} when the folder is absent."""
    files: dict[str, Path] = {}
    if folder.is_dir():
        with os.scandir(folder) as entries:
            files = {e.name[: -len(extension)]: folder / e.name for e in entries if e.name.endswith(extension)}
    log.info("Found %d %s files in %s", len(files), extension, folder)
    return files


def index_dicom_files(folder: Path, what: str) -> dict[str, Path]:
    """`<stem>` -> path of every `*.dcm` under `folder`, searched recursively (SIIM's nested layout); {} when the
    folder is absent. The same file name twice -> DataError naming both paths."""
    from chestx.data.errors import DataError

    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for directory, _, files in os.walk(folder):
        for name in files:
            if not name.lower().endswith(".dcm"):
                continue
            stem = name[:-4]
            path = Path(directory) / name
            if stem in found:
                raise DataError(f"{what}: the image {stem} is in two places, {str(found[stem])!r} and {str(path)!r}; "
                                "keep one copy under the image folder")
            found[stem] = path
    log.info("Found %d DICOM files under %s", len(found), folder)
    return found
