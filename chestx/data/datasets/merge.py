"""`data=merge`: several datasets as one, over the union of their findings (as torchxrayvision's multi-dataset models
are trained: Cohen et al. 2022, "TorchXRayVision: a library of chest X-ray datasets and models", `Merge_Dataset` and
`relabel_dataset`).

    python -m chestx.train data=merge sources=[nih_sample,chexpert] sources.chexpert.root=/data   (see conf/data/merge.yaml)

- Findings: the union of the sources' findings under their canonical names (`chestx.data.labels.FINDINGS`: NIH
  `Effusion` and CheXpert `Pleural Effusion` are one column, `Pleural Effusion`), in the order the sources list them.
  A finding a source does not label is unknown (NaN) for its images, so it is masked in the loss and the metrics.
  A finding never shared (`NOT_SHARED`: No Finding) keeps one column per source, `No Finding (<source>)`.
- Rows: every source's rows with its own split (each source's split is patient-level, and patient ids are prefixed
  with the source's name, so no patient can cross sources); image ids become `<source>/<image id>`. k-fold
  (`data.folds`) and `data.no_finding_fraction` of the merged config act on the union; each source's own options
  (uncertainty policy, views, split) act on its rows.
- Validation: the union of the sources' validation splits (the checkpoint is chosen on it). Test: the union (the
  run's predictions.csv), and each source's test split on its own findings in `external/<source>/` (`chestx.train`;
  the report's cross-dataset matrix shows those as the run's internal cells).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from chestx.data.datasets.base import ChestXData
from chestx.data.labels import FRAME_COLUMNS, NOT_SHARED, DataError, LabelTable, canonical_finding

log = logging.getLogger(__name__)

SEPARATOR = "/"  # <source>/<image id>, <source>/<patient id>


def merged_name(source: str, finding: str) -> str:
    """The merged column of one source's finding: its canonical name, or `<name> (<source>)` if never shared."""
    return f"{finding} ({source})" if finding in NOT_SHARED else canonical_finding(finding)


class MergedData(ChestXData):
    """The union of `sources` (data config name -> dataset), one training set; see the module docstring."""

    def __init__(self, sources: Mapping[str, ChestXData] | None = None, root: str = ".", **kwargs) -> None:
        super().__init__(root=root, **kwargs)
        if not sources:
            raise DataError("data=merge has no sources: list them with sources=[<data config>,...], e.g. "
                            "sources=[nih_sample,chexpert] sources.chexpert.root=/data/chexpert")
        bad = {name: type(src).__name__ for name, src in sources.items() if not isinstance(src, ChestXData)}
        if bad:
            raise DataError(f"data.sources {bad} are not datasets: each source is a data config (conf/data/*.yaml)")
        self.sources = dict(sources)
        self._source_rows: dict[str, np.ndarray] = {}  # source -> rows of the merged table, before image lookup
        self._source_tables: dict[str, LabelTable] = {}

    @property
    def multiclass(self) -> list[bool]:
        return [False] * len(self.pathologies)

    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        parts, splits, columns = [], [], []
        for name, source in self.sources.items():
            if any(source.multiclass):
                raise DataError(f"sources.{name} uses data.uncertainty=multiclass, which a merged dataset cannot "
                                "train (one output per finding): choose another policy for that source")
            table, split = source.labels_only()
            columns += [merged_name(name, f) for f in table.pathologies if merged_name(name, f) not in columns]
            parts.append((name, table))
            splits.append(split)
            log.info("Merge: %s gives %d images of %d patients, findings %s", name, len(table),
                     table.frame["patient_id"].nunique(), table.pathologies)
        labels, uncertain, frames = [], [], []
        for name, table in parts:
            index = [columns.index(merged_name(name, f)) for f in table.pathologies]
            block = np.full((len(table), len(columns)), np.nan, dtype=np.float32)  # (N_source, K_union)
            block[:, index] = table.labels
            mask = np.zeros(block.shape, dtype=bool)
            mask[:, index] = table.uncertain
            labels.append(block)
            uncertain.append(mask)
            frames.append(self._frame(name, table.frame))
            self._source_tables[name] = table
        frame = pd.concat(frames, ignore_index=True)
        sizes = np.cumsum([0, *[len(t) for _, t in parts]])
        self._source_rows = {name: np.arange(sizes[i], sizes[i + 1]) for i, (name, _) in enumerate(parts)}
        unknown = {c: int(np.isnan(np.concatenate(labels)[:, k]).sum()) for k, c in enumerate(columns)}
        log.info("Merge: %d images, %d findings (union); images without a finding's label (masked): %s",
                 len(frame), len(columns), unknown)
        return (LabelTable(frame, np.concatenate(labels), np.concatenate(uncertain), columns),
                np.concatenate(splits))

    @staticmethod
    def _frame(name: str, frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[[c for c in FRAME_COLUMNS if c in frame.columns]].copy()
        out["source"] = name
        out["source_image_id"] = frame["image_id"].astype(str).to_numpy()
        out["image_id"] = name + SEPARATOR + out["source_image_id"]
        out["patient_id"] = name + SEPARATOR + frame["patient_id"].astype(str).to_numpy()
        for column in ("frontal_lateral",):  # metadata some sources have
            if column in frame.columns:
                out[column] = frame[column].to_numpy()
        return out

    def resolve_paths(self, table: LabelTable) -> tuple[list[Path | None], list[str]]:
        """Each source finds its own images; rows are matched back through `source_image_id`."""
        paths: list[Path | None] = [None] * len(table)
        missing: list[str] = []
        frame = table.frame
        for name, source in self.sources.items():
            rows = np.flatnonzero(frame["source"].to_numpy() == name)
            own = self._source_tables[name]
            position = pd.Series(np.arange(len(own)), index=own.frame["image_id"].astype(str).to_numpy())
            found, lost = source.resolve_paths(own.subset(position.loc[frame["source_image_id"].iloc[rows]].to_numpy()))
            for row, path in zip(rows, found):
                paths[row] = path
            missing += [name + SEPARATOR + str(m) for m in lost]
        return paths, missing
