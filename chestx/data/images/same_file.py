"""One image file under two spellings: rows whose paths resolve to the same file (`./`, `..`, absolute vs relative,
symlinks), so that a label file cannot list one X-ray twice (and put it in train and in test) by writing it twice."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence


def resolved(path: str | Path, root: str | Path) -> str:
    """The file `path` names: relative paths against `root`, `~` expanded, `.`/`..` and symlinks resolved."""
    path = os.path.expanduser(str(path))
    return os.path.realpath(os.path.join(os.path.expanduser(str(root)), path))


def same_files(paths: Sequence[str | Path | None], root: str | Path) -> list[tuple[int, int, str]]:
    """Every row j whose path resolves to the file of an earlier row i, as (i, j, file), in row order; [] when all
    differ. Rows whose path is None (a missing image) are skipped. One realpath per row (a few stat calls)."""
    seen: dict[str, int] = {}
    pairs: list[tuple[int, int, str]] = []
    for j, path in enumerate(paths):
        if path is None:
            continue
        real = resolved(path, root)
        i = seen.setdefault(real, j)
        if i != j:
            pairs.append((i, j, real))
    return pairs
