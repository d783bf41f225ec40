"""`BenchData`: a folder's images as a `ChestXData`, so that `chestx.perf` loads them exactly as `chestx.train` does.

A measurement needs a given number of batches in one epoch (an epoch boundary every few batches would time
worker restarts, not training), from however many images it was given. `BenchData` repeats the files, in turn,
into the rows each split needs (`rows={"train": ..., "val": ..., "test": ...}`); every row is its own patient,
every label 0 (speed does not depend on the values) under NIH's 14 findings. `ChestXDataModule(BenchData(...))`
then builds the training loader (pixel cache, augmentation seeded per image, uint8 batches, workers, pinned
memory) and the on-device normalisation of a training run, by the same code (`chestx.throughput.training`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from chestx.data.datasets.base import ChestXData
from chestx.data.labels.table import NIH_PATHOLOGIES, LabelTable
from chestx.data.labels.splits import SPLITS


class BenchData(ChestXData):
    """`files` repeated in turn into `rows[split]` rows per split; labels all 0, one patient per row."""

    distinct_images = False  # a throughput workload: the same files on purpose, never a training set

    def __init__(self, files: Sequence[str | Path], rows: dict[str, int], **settings: Any) -> None:
        files = [Path(f) for f in files]
        if not files:
            raise ValueError("BenchData needs at least one image file")
        if set(rows) != set(SPLITS) or any(int(n) < 1 for n in rows.values()):
            raise ValueError(f"rows={rows}: give each of {list(SPLITS)} at least one row")
        super().__init__(root=str(files[0].parent), **settings)
        self.files = files
        self.rows = {name: int(rows[name]) for name in SPLITS}

    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        split = np.repeat(np.array(SPLITS), [self.rows[name] for name in SPLITS])  # (N,) train..., val..., test...
        n, k = len(split), len(NIH_PATHOLOGIES)
        files = [self.files[i % len(self.files)] for i in range(n)]
        frame = pd.DataFrame({
            "image_id": [f.name for f in files], "patient_id": [f"row{i}" for i in range(n)],
            "path": [str(f) for f in files], "view": "PA", "age": np.nan, "sex": np.nan, "no_finding": True,
        })
        table = LabelTable(frame, np.zeros((n, k), np.float32), np.zeros((n, k), bool), list(NIH_PATHOLOGIES))
        return table, split

    def resolve_paths(self, table: LabelTable) -> tuple[list[Path | None], list[str]]:
        return [Path(p) for p in table.frame["path"]], []
