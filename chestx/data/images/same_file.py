"""One image file under two spellings: rows whose paths resolve to the same file (`./`, `..`, absolute vs relative,
symlinks), so that a label file cannot list one X-ray twice (and put it in train and in test) by writing it twice."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence


def resolved(path: str | Path, root: str | Path, folders: dict[str, str] | None = None) -> str:
    """The file `path` names: relative paths against `root`, `~` expanded, `.`/`..` and symlinks resolved.

    `folders` caches each folder's resolved path: then a file costs one lstat (is it a symlink?) instead of one per
    path component (os.path.realpath), which matters for 100,000 files in a few folders."""
    full = os.path.join(os.path.expanduser(str(root)), os.path.expanduser(str(path)))
    if folders is None:
        return os.path.realpath(full)
    folder, name = os.path.split(full)
    if name in ("", ".", "..") or os.path.islink(full):
        return os.path.realpath(full)
    real = folders.get(folder)
    if real is None:
        real = folders[folder] = os.path.realpath(folder)
    return os.path.join(real, name)


def same_files(paths: Sequence[str | Path | None], root: str | Path) -> list[tuple[int, int, str]]:
    """Every row j whose path resolves to the file of an earlier row i, as (i, j, file), in row order; [] when all
    differ. Rows whose path is None (a missing image) are skipped. One lstat per row, one realpath per folder."""
    seen: dict[str, int] = {}
    folders: dict[str, str] = {}
    pairs: list[tuple[int, int, str]] = []
    for j, path in enumerate(paths):
        if path is None:
            continue
        real = resolved(path, root, folders)
        i = seen.setdefault(real, j)
        if i != j:
            pairs.append((i, j, real))
    return pairs
