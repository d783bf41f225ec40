"""`data=merge`: several datasets as one, over the union of their findings (as torchxrayvision's multi-dataset models
are trained: Cohen et al. 2022, "TorchXRayVision: a library of chest X-ray datasets and models", `Merge_Dataset` and
`relabel_dataset`).

    python -m chestx.train data=merge 'sources=[nih_sample,chexpert]' data.sources.chexpert.root=/data   (conf/data/merge.yaml)

- Findings: the union of the sources' findings under their canonical names (`chestx.data.labels.table.FINDINGS`: NIH
  `Effusion` and CheXpert `Pleural Effusion` are one column, `Pleural Effusion`), in the order the sources list them.
  A finding a source does not label is unknown (NaN) for its images, so it is masked in the loss and the metrics.
  A finding never shared (`NOT_SHARED`: No Finding) keeps one column per source, `No Finding (<source>)`.
- Rows: every source's rows with its own split (each source's split is patient-level); image ids become
  `<source>/<image id>`. k-fold (`data.folds`) and `data.no_finding_fraction` of the merged config act on the union;
  each source's own options (uncertainty policy, views, split) act on its rows.
- Patients: ids become `<source>/<patient id>`, so sources from different image collections never share a patient.
  Sources drawn from one collection (each dataset's `image_pool` in the registry: NIH ChestX-ray14 holds nih,
  nih_sample, nih_expert, and the images of rsna_pneumonia and siim) may hold the same patients:
  - where they carry the collection's real patient ids (nih, nih_sample, nih_expert), the ids become
    `<pool key>/<patient id>` (one patient, whichever source: k-fold keeps it in one fold), and a patient whose
    sources put it in different splits stops the merge with a `DataError` naming examples: its images would train
    in one source and be validated or tested in another (leakage). Nothing is moved silently: every source's
    split stays the documented one (NIH's official test list, Google's expert sets), so scores stay comparable
    with published ones. Under `data.folds` only test vs train/val counts (k-fold re-splits the train+val pool).
  - where ids are anonymised (rsna_pneumonia, siim: new ids per image), disjointness cannot be checked: a WARNING
    says so. The same person, even the same image, may be in training through one source and in the test split
    of another; report such merges as possibly optimistic, or evaluate those sources with `test_data=` instead.
  The same image in two sources (e.g. nih and nih_expert) is two rows with each source's labels (logged).
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
from chestx.data.datasets.registry import (  # noqa: F401 (the pools, re-exported)
    NIH_CXR14, NIH_CXR14_ANONYMISED, ImagePool, info_of, register_dataset,
)
from chestx.data.labels.table import FRAME_COLUMNS, NOT_SHARED, DataError, LabelTable, canonical_finding

log = logging.getLogger(__name__)

SEPARATOR = "/"  # <source>/<image id>, <source>/<patient id> (or <pool key>/<patient id>)
MAX_EXAMPLES = 5  # patients named in an error


def image_pool(source: ChestXData) -> ImagePool | None:
    """The pool `source`'s images come from: its class's own `image_pool`, else its registered dataset's (base
    classes too; `chestx.data.datasets.registry`)."""
    declared = getattr(type(source), "image_pool", None)
    if isinstance(declared, ImagePool):
        return declared
    info = info_of(type(source))
    return None if info is None else info.image_pool


def merged_name(source: str, finding: str) -> str:
    """The merged column of one source's finding: its canonical name, or `<name> (<source>)` if never shared."""
    return f"{finding} ({source})" if finding in NOT_SHARED else canonical_finding(finding)


@register_dataset("merge")  # findings: the union of its sources'
class MergedData(ChestXData):
    """The union of `sources` (data config name -> dataset), one training set; see the module docstring."""

    def __init__(self, sources: Mapping[str, ChestXData] | None = None, root: str = ".", **kwargs) -> None:
        super().__init__(root=root, **kwargs)
        if not sources:
            raise DataError("data=merge has no sources: list them with sources=[<data config>,...], e.g. "
                            "sources=[nih_sample,chexpert] data.sources.chexpert.root=/data/chexpert")
        bad = {name: type(src).__name__ for name, src in sources.items() if not isinstance(src, ChestXData)}
        if bad:
            raise DataError(f"data.sources {bad} are not datasets: each source is a data config (conf/data/*.yaml)")
        self.sources = dict(sources)
        self._source_rows: dict[str, np.ndarray] = {}  # source -> rows of the merged table, before image lookup
        self._source_tables: dict[str, LabelTable] = {}

    @property
    def multiclass(self) -> list[bool]:
        return [False] * len(self.pathologies)

    def label_paths(self) -> dict[str, Path]:
        """Every source's label files, as `<source>/<role>`."""
        return {f"{name}/{role}": path for name, source in self.sources.items()
                for role, path in source.label_paths().items()}

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
        prefixes = self._check_shared_pools(parts, splits)
        labels, uncertain, frames = [], [], []
        for name, table in parts:
            index = [columns.index(merged_name(name, f)) for f in table.pathologies]
            block = np.full((len(table), len(columns)), np.nan, dtype=np.float32)  # (N_source, K_union)
            block[:, index] = table.labels
            mask = np.zeros(block.shape, dtype=bool)
            mask[:, index] = table.uncertain
            labels.append(block)
            uncertain.append(mask)
            frames.append(self._frame(name, table.frame, prefixes[name]))
            self._source_tables[name] = table
        frame = pd.concat(frames, ignore_index=True)
        sizes = np.cumsum([0, *[len(t) for _, t in parts]])
        self._source_rows = {name: np.arange(sizes[i], sizes[i + 1]) for i, (name, _) in enumerate(parts)}
        unknown = {c: int(np.isnan(np.concatenate(labels)[:, k]).sum()) for k, c in enumerate(columns)}
        log.info("Merge: %d images, %d findings (union); images without a finding's label (masked): %s",
                 len(frame), len(columns), unknown)
        return (LabelTable(frame, np.concatenate(labels), np.concatenate(uncertain), columns),
                np.concatenate(splits))

    def _check_shared_pools(self, parts: list[tuple[str, LabelTable]], splits: list[np.ndarray]) -> dict[str, str]:
        """Patient-id prefix of each source; stop on a patient that sources of one pool put in different splits,
        warn where a pool's ids are anonymised (see the module docstring)."""
        pools = {name: image_pool(self.sources[name]) for name, _ in parts}
        prefixes = {name: pool.key if pool is not None and pool.real_ids else name for name, pool in pools.items()}
        for pool_name in sorted({p.name for p in pools.values() if p is not None}):
            members = [name for name, _ in parts if pools[name] is not None and pools[name].name == pool_name]
            if len(members) < 2:
                continue
            anonymised = [name for name in members if not pools[name].real_ids]
            if anonymised:
                log.warning("Merge: sources %s all hold %s images, but %s carry anonymised patient ids: chestx cannot "
                            "check that a patient (or an image) is not in training through one source and in "
                            "validation / test through another. Treat the scores as possibly optimistic, or score "
                            "those sources with test_data=[...] instead of merging them (docs/data.md, data=merge)",
                            members, pool_name, anonymised)
            real = [(name, table, split) for (name, table), split in zip(parts, splits)
                    if name in members and pools[name].real_ids]
            if len(real) >= 2:
                self._check_patients(pool_name, prefixes, real)
        return prefixes

    def _check_patients(self, pool: str, prefixes: dict[str, str],
                        sources: list[tuple[str, LabelTable, np.ndarray]]) -> None:
        """Stop when sources that share real patient ids put one patient in different splits (under data.folds:
        test vs train/val, since k-fold re-splits the train+val pool)."""
        names = [name for name, _, _ in sources]
        rows = pd.concat([pd.DataFrame({
            "patient": prefixes[name] + SEPARATOR + table.frame["patient_id"].astype(str).to_numpy(),
            "image": table.frame["image_id"].astype(str).to_numpy(), "split": split, "source": name})
            for name, table, split in sources], ignore_index=True)
        twice = rows.groupby("image")["source"].nunique()
        if (twice > 1).any():
            log.warning("Merge: %d images are in more than one of %s (e.g. %s): each is one row per source, with that "
                        "source's labels (they may disagree)", int((twice > 1).sum()), names,
                        twice.index[twice > 1][0])
        side = rows["split"].replace({"val": "train"}) if self.folds is not None else rows["split"]
        per_patient = rows.assign(side=side).drop_duplicates(["patient", "source", "split"])
        bad = per_patient.groupby("patient")["side"].nunique()
        bad = bad.index[bad > 1]
        if len(bad) == 0:
            log.info("Merge: sources %s share %s patient ids; every shared patient is in one split", names, pool)
            return
        shown = per_patient[per_patient["patient"].isin(bad[:MAX_EXAMPLES])].sort_values(["patient", "source"])
        examples = "; ".join(f"{patient}: " + ", ".join(f"{s} {sp}" for s, sp in zip(g["source"], g["split"]))
                             for patient, g in shown.groupby("patient", sort=True))
        pool_only = set(rows.loc[rows["patient"].isin(bad), "split"]) <= {"train", "val"}
        hint = ("add data.folds=K (k-fold re-splits the union's train+val pool by patient, which settles train vs "
                "val), " if pool_only else "")
        raise DataError(
            f"data=merge: {len(bad)} {pool} patients are in different splits in sources {names} (e.g. {examples}): "
            "their images would train in one source and be validated or tested in another. Each source keeps its "
            f"documented split, so nothing is moved. Fix: {hint}give the sources split rules that agree "
            "(data.sources.<name>.split / seed), or merge only one of them and score the other with "
            "test_data=[<name>]")

    @staticmethod
    def _frame(name: str, frame: pd.DataFrame, patient_prefix: str) -> pd.DataFrame:
        out = frame[[c for c in FRAME_COLUMNS if c in frame.columns]].copy()
        out["source"] = name
        out["source_image_id"] = frame["image_id"].astype(str).to_numpy()
        out["image_id"] = name + SEPARATOR + out["source_image_id"]
        out["patient_id"] = patient_prefix + SEPARATOR + frame["patient_id"].astype(str).to_numpy()
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
