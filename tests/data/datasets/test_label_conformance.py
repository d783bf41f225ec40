"""Conformance of chestx's label rules with an independent reference, on the real NIH and CheXpert label files.

Sources of the rules:
- Wang et al. 2017, "ChestX-ray8: Hospital-scale chest X-ray database and benchmarks on weakly-supervised
  classification and localization of common thorax diseases", CVPR: NIH ChestX-ray14 labels (`Finding Labels`,
  `No Finding`), views and the official train_val / test lists; the CheXNet 70/10/20 list split (Rajpurkar et al. 2017).
- Irvin et al. 2019, "CheXpert: a large chest radiograph dataset with uncertainty labels and expert comparison",
  AAAI: CheXpert's 1 / 0 / -1 / blank cells, the competition tasks and the U-Ignore, U-Zeros, U-Ones and
  U-MultiClass policies.
- Pham et al. 2021, "Interpreting chest X-rays via CNNs that exploit hierarchical disease dependencies and
  uncertainty labels", Neurocomputing: label smoothing of uncertain labels (LSR, `lsr_zeros` / `lsr_ones`).
- The label rule sheet decided for issue 8 (splits, undersampling draw, `blank=mask` with `No Finding`, targets).

The reference implementation in the first half of this file uses only pandas and numpy and shares no code with
`chestx.data` (chestx is imported only inside the test bodies, to get what is compared). The tests compare chestx
with it cell by cell (label matrix, uncertain mask, evaluation and multiclass training targets, `no_finding`,
split, rows kept by `no_finding_fraction`) over the option grid (CheXpert: every policy and mix x blank x
frontal-only x 5/14 tasks; NIH: every split x views x 14/15 classes; no_finding_fraction cycling), and check
figures published with the data.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pytest

# --------------------------------------------------------------------------------------------------------------
# Reference: constants restated from the papers (not imported from chestx)
# --------------------------------------------------------------------------------------------------------------
NIH_CSV = "Data_Entry_2017_v2020.csv"
# CheXNet order (also the order of the 14 0/1 columns of the chexnet_split list files)
NIH_14: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
# CheXpert's 14 observations in the CSV's column order
CHEX_14: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
CHEX_COMPETITION: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
LSR_RANGES: dict[str, tuple[float, float]] = {"lsr_zeros": (0.0, 0.3), "lsr_ones": (0.55, 0.85)}
SPLIT_NAMES = np.array(["train", "val", "test"])
SEED = 0
VAL_FRACTION = 0.1
NIH_RATIOS = (0.7, 0.1, 0.2)


@dataclass
class RefTable:
    """The reference's rows (before `no_finding_fraction` undersampling) and the rows it keeps."""

    ids: np.ndarray  # (N,) object: image id (NIH image name, CheXpert CSV Path)
    patients: np.ndarray  # (N,) object: patient id as str
    labels: np.ndarray  # (N, K) float32: 1 / 0 / NaN; NaN also where a value is a seeded LSR draw (`soft`)
    uncertain: np.ndarray  # (N, K) bool: source cell was -1.0
    normal: np.ndarray  # (N,) bool: the image's `no_finding` flag
    split: np.ndarray  # (N,) str: train / val / test
    keep: np.ndarray  # (N,) bool: survives no_finding_fraction undersampling
    pathologies: list[str]
    policies: list[str] = field(default_factory=list)  # CheXpert: one uncertainty policy per pathology
    soft: np.ndarray | None = None  # (N, K) bool: cell is a draw from an LSR range
    soft_low: np.ndarray | None = None  # (K,) lower end of that column's LSR range (NaN: not LSR)
    soft_high: np.ndarray | None = None  # (K,)

    def __post_init__(self) -> None:
        if self.soft is None:
            k = len(self.pathologies)
            self.soft = np.zeros(self.labels.shape, dtype=bool)
            self.soft_low = np.full(k, np.nan)
            self.soft_high = np.full(k, np.nan)

    def rows(self, index: np.ndarray) -> "RefTable":
        return RefTable(
            ids=self.ids[index], patients=self.patients[index], labels=self.labels[index],
            uncertain=self.uncertain[index], normal=self.normal[index], split=self.split[index],
            keep=self.keep[index], pathologies=list(self.pathologies), policies=list(self.policies),
            soft=self.soft[index], soft_low=self.soft_low, soft_high=self.soft_high,
        )

    def kept(self) -> "RefTable":
        return self.rows(np.flatnonzero(self.keep))

    def evaluation(self) -> np.ndarray:
        """Evaluation target: uncertain and soft cells NaN, whatever the policy."""
        out = self.labels.copy()
        out[self.uncertain | self.soft] = np.nan
        return out

    def multiclass_classes(self, columns: np.ndarray) -> np.ndarray:
        """U-MultiClass training class of the given columns: 2 uncertain, 1 / 0 by label >= 0.5, -1 ignored."""
        labels, uncertain = self.labels[:, columns], self.uncertain[:, columns]
        classes = np.where(np.isnan(labels), -1, (labels >= 0.5).astype(np.int64))
        return np.where(uncertain, 2, classes)


def ref_random_groups(patients: np.ndarray, ratios: Sequence[float], seed: int) -> np.ndarray:
    """Rule sheet's random patient split: 0 train / 1 val / 2 test per row."""
    unique, row_patient = np.unique(patients.astype(str), return_inverse=True)
    n = len(unique)
    rank = np.empty(n, dtype=np.int64)
    rank[np.random.default_rng(seed).permutation(n)] = np.arange(n)
    bounds = np.cumsum([round(ratios[0] * n), round(ratios[1] * n)])
    return np.searchsorted(bounds, rank, side="right")[row_patient]


def ref_keep(split: np.ndarray, normal: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Rule sheet's undersampling: drop a row iff train, normal and u >= fraction (u over all N rows)."""
    if fraction >= 1.0:
        return np.ones(len(split), dtype=bool)
    u = np.random.default_rng(seed).random(len(split))
    return ~((split == "train") & normal & (u >= fraction))


def ref_policies(uncertainty: str | Mapping[str, str], tasks: Sequence[str]) -> list[str]:
    if isinstance(uncertainty, str):
        return [uncertainty] * len(tasks)
    default = uncertainty.get("default", "ignore")
    return [uncertainty.get(t, default) for t in tasks]


def ref_tasks(tasks: str | Sequence[str]) -> list[str]:
    if tasks == "competition":
        return list(CHEX_COMPETITION)
    if tasks == "all":
        return list(CHEX_14)
    return list(tasks)


def _member(values: np.ndarray, wanted: Sequence[str]) -> np.ndarray:
    """values[i] in wanted, as a bool array (hash look-ups; np.isin on object arrays is very slow)."""
    wanted = set(wanted)
    return np.fromiter((str(v) in wanted for v in values), dtype=bool, count=len(values))


def _first_tokens(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


class CheXpertReference:
    """Irvin et al. 2019 labels from train.csv / valid.csv, read once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.train = pd.read_csv(folder / "train.csv")
        self.valid = pd.read_csv(folder / "valid.csv")
        self._sources: dict[bool, dict[str, Any]] = {}
        self._groups: dict[tuple[bool, int, float], np.ndarray] = {}

    def source(self, frontal_only: bool) -> dict[str, Any]:
        """Rows of [train.csv; valid.csv] (frontal ones if asked) with their raw 14 observation cells."""
        if frontal_only not in self._sources:
            parts = [self.train, self.valid]
            if frontal_only:
                parts = [p[p["Frontal/Lateral"] == "Frontal"] for p in parts]
            both = pd.concat(parts, ignore_index=True)
            paths = both["Path"].astype(str).to_numpy(dtype=object)
            self._sources[frontal_only] = {
                "ids": paths,
                "patients": both["Path"].astype(str).str.extract(r"(patient\d+)", expand=False).to_numpy(dtype=object),
                "values": both[list(CHEX_14)].to_numpy(dtype=np.float64),  # (N, 14) 1 / 0 / -1 / NaN
                "normal": (both["No Finding"] == 1.0).to_numpy(dtype=bool),
                "n_train": len(parts[0]),
            }
        return self._sources[frontal_only]

    def groups(self, frontal_only: bool, seed: int, val_fraction: float) -> np.ndarray:
        """train.csv rows: 0 train / 1 val by the random patient rule with ratios (1 - f, f, 0)."""
        key = (frontal_only, seed, val_fraction)
        if key not in self._groups:
            src = self.source(frontal_only)
            patients = src["patients"][: src["n_train"]]
            self._groups[key] = ref_random_groups(patients, (1.0 - val_fraction, val_fraction, 0.0), seed)
        return self._groups[key]

    def labels(
        self, frontal_only: bool, tasks: Sequence[str], policies: Sequence[str], blank: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """labels (NaN at LSR cells), uncertain, soft, soft_low, soft_high for the selected tasks."""
        src = self.source(frontal_only)
        columns = [CHEX_14.index(t) for t in tasks]
        values = src["values"][:, columns]  # (N, K)
        uncertain = values == -1.0
        is_blank = np.isnan(values)
        labels = values.copy()
        if blank == "zeros":
            labels[is_blank] = 0.0
        elif blank == "mask":
            # No Finding == 1: the labeller says the other observations are absent (Support Devices aside)
            absent_by_normal = src["normal"][:, None] & is_blank & (np.array(tasks) != "Support Devices")[None, :]
            labels[absent_by_normal] = 0.0
        else:
            raise ValueError(blank)
        soft = np.zeros(values.shape, dtype=bool)
        low, high = np.full(len(tasks), np.nan), np.full(len(tasks), np.nan)
        for k, policy in enumerate(policies):
            cells = uncertain[:, k]
            if policy in ("ignore", "multiclass"):
                labels[cells, k] = np.nan
            elif policy == "zeros":
                labels[cells, k] = 0.0
            elif policy == "ones":
                labels[cells, k] = 1.0
            elif policy in LSR_RANGES:
                labels[cells, k] = np.nan
                soft[:, k] = cells
                low[k], high[k] = LSR_RANGES[policy]
            else:
                raise ValueError(policy)
        return labels.astype(np.float32), uncertain, soft, low, high

    def table(
        self,
        uncertainty: str | Mapping[str, str] = "ignore",
        blank: str = "zeros",
        frontal_only: bool = True,
        tasks: str | Sequence[str] = "competition",
        no_finding_fraction: float = 1.0,
        seed: int = SEED,
        val_fraction: float = VAL_FRACTION,
    ) -> RefTable:
        names = ref_tasks(tasks)
        policies = ref_policies(uncertainty, names)
        src = self.source(frontal_only)
        labels, uncertain, soft, low, high = self.labels(frontal_only, names, policies, blank)
        n_test = len(src["ids"]) - src["n_train"]
        split = np.concatenate([SPLIT_NAMES[self.groups(frontal_only, seed, val_fraction)], np.full(n_test, "test")])
        return RefTable(
            ids=src["ids"], patients=src["patients"], labels=labels, uncertain=uncertain, normal=src["normal"],
            split=split, keep=ref_keep(split, src["normal"], no_finding_fraction, seed), pathologies=names,
            policies=policies, soft=soft, soft_low=low, soft_high=high,
        )


class NIHReference:
    """Wang et al. 2017 labels from the label file, the official lists and the CheXNet lists, read once."""

    def __init__(self, folder: Path) -> None:
        raw = pd.read_csv(folder / NIH_CSV)
        self.ids = raw["Image Index"].astype(str).str.strip().to_numpy(dtype=object)
        self.patients = raw["Patient ID"].astype(str).str.strip().to_numpy(dtype=object)
        self.views = raw["View Position"].astype(str).str.strip().str.upper().to_numpy(dtype=object)
        findings = raw["Finding Labels"].astype(str).to_numpy(dtype=object)
        split_findings = [f.split("|") for f in findings]  # the '|'-separated tokens of each row
        self.tokens = {t for tokens in split_findings for t in tokens}
        column = {name: k for k, name in enumerate(NIH_14)}
        self.csv_labels = np.zeros((len(findings), len(NIH_14)), dtype=np.float32)  # (N, 14)
        for i, tokens in enumerate(split_findings):
            for t in tokens:
                if t in column:
                    self.csv_labels[i, column[t]] = 1.0
        self.csv_normal = findings == "No Finding"
        self.official = {
            "train": _first_tokens(folder / "train_val_list.txt"),
            "test": _first_tokens(folder / "test_list.txt"),
        }
        self.list_sizes: dict[str, int] = {}
        lists = []
        for name in SPLIT_NAMES:  # each line: image name, then 14 0/1 in CheXNet order
            rows = pd.read_csv(folder / "chexnet_split" / f"{name}_list.txt", sep=r"\s+", header=None,
                               names=["image", *NIH_14], dtype={"image": str})
            self.list_sizes[str(name)] = len(rows)
            lists.append(rows.assign(split=str(name)))
        listed = pd.concat(lists, ignore_index=True)
        position = pd.Index(listed["image"].astype(str)).get_indexer(self.ids)  # -1: image in no CheXNet list
        self.chexnet_listed = position >= 0
        self.list_labels = listed[list(NIH_14)].to_numpy(dtype=np.float32)[position]  # (N, 14) in label-file order
        self.chexnet_split = listed["split"].to_numpy(dtype=object)[position]

    def table(
        self,
        include_no_finding: bool = False,
        views: Sequence[str] | None = None,
        split: str = "official",
        chexnet_labels: str = "lists",
        no_finding_fraction: float = 1.0,
        seed: int = SEED,
        val_fraction: float = VAL_FRACTION,
        ratios: Sequence[float] = NIH_RATIOS,
    ) -> RefTable:
        rows = np.ones(len(self.ids), dtype=bool) if views is None else _member(self.views, [v.upper() for v in views])
        ids, patients = self.ids[rows], self.patients[rows]
        if split == "chexnet" and chexnet_labels == "lists":
            labels = self.list_labels[rows]
            normal = labels.sum(axis=1) == 0
        else:
            labels = self.csv_labels[rows]
            normal = self.csv_normal[rows]
        names = list(NIH_14)
        if include_no_finding:
            labels = np.concatenate([labels, normal[:, None].astype(np.float32)], axis=1)
            names.append("No Finding")
        if split == "official":
            assigned = np.full(len(ids), "", dtype=object)
            assigned[_member(ids, self.official["train"])] = "train"
            assigned[_member(ids, self.official["test"])] = "test"
            pool = assigned == "train"
            pool_patients = np.sort(np.unique(patients[pool].astype(str)))
            n_val = round(val_fraction * len(pool_patients))
            val_patients = np.random.default_rng(seed).permutation(pool_patients)[:n_val]
            assigned[pool & _member(patients, val_patients.tolist())] = "val"
            split_of = assigned.astype(str)
        elif split == "chexnet":
            split_of = self.chexnet_split[rows].astype(str)
        elif split == "random":
            split_of = SPLIT_NAMES[ref_random_groups(patients, ratios, seed)]
        else:
            raise ValueError(split)
        return RefTable(
            ids=ids, patients=patients, labels=labels.astype(np.float32), uncertain=np.zeros(labels.shape, dtype=bool),
            normal=normal, split=split_of, keep=ref_keep(split_of, normal, no_finding_fraction, seed), pathologies=names,
        )


# --------------------------------------------------------------------------------------------------------------
# Comparison of chestx's output with the reference (problems are collected, so that one run names them all)
# --------------------------------------------------------------------------------------------------------------
def _examples(ids: np.ndarray, rows: np.ndarray, n: int = 3) -> list[str]:
    return [str(ids[r]) for r in rows[:n]]


def _cell_problems(
    what: str, got: np.ndarray, want: np.ndarray, pathologies: Sequence[str], ids: np.ndarray,
    skip: np.ndarray | None = None,
) -> list[str]:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return [f"{what}: shape {got.shape}, reference {want.shape}"]
    got_nan, want_nan = np.isnan(got), np.isnan(want)
    bad = (got_nan != want_nan) | (~got_nan & ~want_nan & (got != want))
    if skip is not None:
        bad &= ~skip
    out = []
    for k in np.flatnonzero(bad.any(axis=0)):
        rows = np.flatnonzero(bad[:, k])
        shown = [f"{ids[r]}: chestx {got[r, k]} reference {want[r, k]}" for r in rows[:3]]
        out.append(f"{what}[{pathologies[k]}]: {len(rows)} of {len(got)} cells differ, e.g. {shown}")
    return out


def _align(ref: RefTable, got_ids: np.ndarray, problems: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(reference rows, chestx rows) of the images both hold; differing row sets or order -> problems."""
    if _same_ids(got_ids, ref.ids):
        every = np.arange(len(got_ids))
        return every, every
    if pd.Index(got_ids).has_duplicates:
        problems.append(f"chestx's frame repeats image ids, e.g. {pd.Index(got_ids)[pd.Index(got_ids).duplicated()][:3].tolist()}")
    position = pd.Index(ref.ids).get_indexer(got_ids)
    extra = np.flatnonzero(position < 0)
    missing = np.flatnonzero(~pd.Index(ref.ids).isin(got_ids))
    if len(extra):
        problems.append(f"rows: chestx keeps {len(extra)} rows the reference does not (absent, or dropped by "
                        f"undersampling), e.g. {_examples(got_ids, extra)}")
    if len(missing):
        kinds = pd.Series([f"{s}{' normal' if n else ''}" for s, n in zip(ref.split[missing], ref.normal[missing])])
        problems.append(
            f"rows: chestx lacks {len(missing)} reference rows ({kinds.value_counts().to_dict()}), "
            f"e.g. {_examples(ref.ids, missing)}"
        )
    if not len(extra) and not len(missing):
        first = int(np.flatnonzero(got_ids != ref.ids)[0])
        problems.append(f"rows: same images in another order; row {first} is {got_ids[first]} (reference {ref.ids[first]})")
    common = np.flatnonzero(position >= 0)
    return position[common], common


def _same_ids(got_ids: np.ndarray, want_ids: np.ndarray) -> bool:
    return len(got_ids) == len(want_ids) and bool((got_ids == want_ids).all())


def _undersampling_properties(full: RefTable, got_ids: np.ndarray, fraction: float) -> list[str]:
    """Rule-sheet properties of the rows chestx keeps, independent of the exact draw."""
    present = full.keep if _same_ids(got_ids, full.ids[full.keep]) else pd.Index(full.ids).isin(got_ids)
    dropped = ~present
    out = []
    wrongly = dropped & ~((full.split == "train") & full.normal)
    if wrongly.any():
        kinds = pd.Series([f"{s}{' normal' if n else ''}" for s, n in zip(full.split[wrongly], full.normal[wrongly])])
        out.append(f"undersampling dropped {int(wrongly.sum())} rows that are not normal training rows "
                   f"({kinds.value_counts().to_dict()}), e.g. {_examples(full.ids, np.flatnonzero(wrongly))}")
    candidates = (full.split == "train") & full.normal
    n, kept = int(candidates.sum()), int((candidates & present).sum())
    bound = 6.0 * math.sqrt(n * fraction * (1.0 - fraction)) + 1.0
    if abs(kept - n * fraction) > bound:
        out.append(f"undersampling kept {kept} of {n} normal training rows; Binomial({n}, {fraction}) expects "
                   f"{n * fraction:.0f} +- {bound:.0f}")
    return out


def conformance_problems(
    full: RefTable, table: Any, split: np.ndarray, fraction: float,
    multiclass: Sequence[bool] | None = None, policies: Sequence[str] | None = None,
) -> list[str]:
    """Every disagreement between chestx's (table, split) and the reference `full` (before undersampling)."""
    from chestx.data.labels.table import evaluation_targets
    from chestx.models.losses import multiclass_classes
    import torch

    problems: list[str] = []
    ref = full.kept()
    frame = table.frame
    got_ids = frame["image_id"].astype(str).to_numpy(dtype=object)
    if list(table.pathologies) != ref.pathologies:
        return [f"pathologies: chestx {list(table.pathologies)}, reference {ref.pathologies}"]
    if fraction < 1.0:
        problems += _undersampling_properties(full, got_ids, fraction)
    r, g = _align(ref, got_ids, problems)
    ids = ref.ids[r]
    split = np.asarray(split).astype(str)
    if len(split) != len(frame):
        problems.append(f"split has {len(split)} entries for {len(frame)} rows")
    else:
        bad = np.flatnonzero(split[g] != ref.split[r])
        if len(bad):
            pairs = pd.Series([f"{a}->{b}" for a, b in zip(ref.split[r][bad], split[g][bad])]).value_counts().to_dict()
            problems.append(f"split: {len(bad)} rows differ (reference->chestx {pairs}), e.g. {_examples(ids, bad)}")
    patients = frame["patient_id"].astype(str).to_numpy(dtype=object)[g]
    bad = np.flatnonzero(patients != ref.patients[r].astype(str))
    if len(bad):
        problems.append(f"patient_id: {len(bad)} rows differ, e.g. {_examples(ids, bad)} -> {patients[bad[:3]].tolist()}")
    if "no_finding" not in frame.columns or frame["no_finding"].dtype != bool:
        problems.append(f"frame column no_finding missing or not bool: {frame.dtypes.get('no_finding')}")
    else:
        normal = frame["no_finding"].to_numpy(dtype=bool)[g]
        bad = np.flatnonzero(normal != ref.normal[r])
        if len(bad):
            problems.append(f"no_finding: {len(bad)} rows differ (chestx {int(normal.sum())} normal, reference "
                            f"{int(ref.normal[r].sum())}), e.g. {_examples(ids, bad)}")

    labels, uncertain = np.asarray(table.labels)[g], np.asarray(table.uncertain)[g]
    if table.labels.dtype != np.float32 or table.uncertain.dtype != bool:
        problems.append(f"dtypes: labels {table.labels.dtype}, uncertain {table.uncertain.dtype} (float32, bool)")
    soft = ref.soft[r]
    problems += _cell_problems("labels", labels, ref.labels[r], ref.pathologies, ids, skip=soft)
    problems += _cell_problems("uncertain", uncertain, ref.uncertain[r], ref.pathologies, ids)
    for k in np.flatnonzero(soft.any(axis=0)):
        values = labels[soft[:, k], k].astype(np.float64)
        low, high = ref.soft_low[k], ref.soft_high[k]
        outside = ~((values >= low) & (values <= high))  # NaN is outside too
        if outside.any():
            problems.append(f"LSR {ref.pathologies[k]}: {int(outside.sum())} of {len(values)} uncertain cells outside "
                            f"[{low}, {high}], e.g. {values[outside][:3].tolist()}")
        elif len(values) >= 100:  # uniform: mean and share below the midpoint, 6 standard errors
            n, mid = len(values), (low + high) / 2
            if abs(values.mean() - mid) > 6 * (high - low) / math.sqrt(12 * n) or \
                    abs((values < mid).mean() - 0.5) > 6 * 0.5 / math.sqrt(n):
                problems.append(f"LSR {ref.pathologies[k]}: {n} draws with mean {values.mean():.4f} and "
                                f"{(values < mid).mean():.3f} below {mid}: not uniform on [{low}, {high}]")

    evaluation = evaluation_targets(np.asarray(table.labels), np.asarray(table.uncertain))
    if evaluation.dtype != np.float32:
        problems.append(f"evaluation_targets dtype {evaluation.dtype}, expected float32")
    problems += _cell_problems("evaluation target", np.asarray(evaluation)[g], ref.evaluation()[r], ref.pathologies, ids)

    if policies is not None and list(policies) != ref.policies:
        problems.append(f"uncertainty_policies: chestx {list(policies)}, reference {ref.policies}")
    if multiclass is not None:
        want = [p == "multiclass" for p in (ref.policies or ["none"] * len(ref.pathologies))]
        if list(multiclass) != want or not all(isinstance(m, (bool, np.bool_)) for m in multiclass):
            problems.append(f"multiclass flags: chestx {list(multiclass)}, reference {want}")
        columns = np.flatnonzero(want)
        if len(columns):
            classes = multiclass_classes(torch.from_numpy(labels[:, columns]), torch.from_numpy(uncertain[:, columns]))
            if classes.dtype != torch.long:
                problems.append(f"multiclass_classes dtype {classes.dtype}, expected torch.long")
            problems += _cell_problems("multiclass class", classes.numpy(), ref.multiclass_classes(columns)[r],
                                       [ref.pathologies[c] for c in columns], ids)
    return problems


# --------------------------------------------------------------------------------------------------------------
# Fixtures: real data, read once per module (skipped, via conftest, when ../shared/data is absent)
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def each_label_file_parsed_once() -> Any:
    """The cases read the same real label files (CheXpert's train.csv of 223,414 rows, NIH's 112,120): pandas parses
    each once per module and every call of chestx's `read_label_csv` gets its own copy of that frame, so chestx's
    rules (column checks, labels, views, split, undersampling) still run on the real file in every case."""
    from chestx.data.datasets import chexpert, nih

    parsed: dict[tuple, pd.DataFrame] = {}
    read = chexpert.read_label_csv
    assert nih.read_label_csv is read

    def read_once(csv_path: Any, required: Sequence[str], what: str, **read_csv_kwargs: Any) -> pd.DataFrame:
        key = (str(Path(csv_path).expanduser().resolve()), what, repr(sorted(read_csv_kwargs.items())))
        if key not in parsed:
            parsed[key] = read(csv_path, required, what, **read_csv_kwargs)
        frame = parsed[key].copy(deep=True)
        from chestx.data.labels.table import check_columns

        check_columns(frame, required, csv_path, what)
        return frame

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chexpert, "read_label_csv", read_once)
        patch.setattr(nih, "read_label_csv", read_once)
        yield


@pytest.fixture(scope="module")
def chex_ref(chexpert_dir: Path) -> CheXpertReference:
    return CheXpertReference(chexpert_dir)


@pytest.fixture(scope="module")
def nih_ref(nih_dir: Path) -> NIHReference:
    return NIHReference(nih_dir)


def chexpert_datamodule(chexpert_dir: Path, **options: Any) -> Any:
    from chestx.data.datasets.chexpert import CheXpertData

    options.setdefault("seed", SEED)
    options.setdefault("val_fraction", VAL_FRACTION)
    if "tasks" in options:  # the reference's name; the dataset's key is data.findings
        options["findings"] = options.pop("tasks")
    return CheXpertData(root=str(chexpert_dir), **options)


def nih_datamodule(nih_dir: Path, **options: Any) -> Any:
    from chestx.data.datasets.nih import NIHData

    options.setdefault("seed", SEED)
    return NIHData(root=str(nih_dir), csv=str(nih_dir / NIH_CSV), split_dir=str(nih_dir), **options)


# --------------------------------------------------------------------------------------------------------------
# The reference itself against figures published with the data
# --------------------------------------------------------------------------------------------------------------
def test_reference_nih_matches_published_figures(nih_ref: NIHReference) -> None:
    assert len(nih_ref.ids) == 112_120 and len(set(nih_ref.patients)) == 30_805
    assert nih_ref.tokens == set(NIH_14) | {"No Finding"}  # the 14 findings of Wang et al. and No Finding
    assert int(nih_ref.csv_normal.sum()) == 60_361
    assert (nih_ref.csv_labels[nih_ref.csv_normal] == 0).all() and (nih_ref.csv_labels[~nih_ref.csv_normal].sum(1) >= 1).all()
    assert len(set(nih_ref.official["train"])) == 86_524 and len(set(nih_ref.official["test"])) == 25_596
    assert nih_ref.list_sizes == {"train": 78_468, "val": 11_219, "test": 22_433}
    assert nih_ref.chexnet_listed.all()
    official = nih_ref.table(split="official")
    assert (official.split != "").all()
    for name in SPLIT_NAMES:  # patient-disjoint, as the papers' splits are
        assert not set(official.patients[official.split == name]) & set(official.patients[official.split != name])


def test_reference_chexpert_matches_published_figures(chex_ref: CheXpertReference) -> None:
    assert len(chex_ref.train) == 223_414 and len(chex_ref.valid) == 234
    src = chex_ref.source(frontal_only=False)
    assert len(set(src["patients"][: src["n_train"]])) == 64_540
    assert chex_ref.source(frontal_only=True)["n_train"] == 191_027
    # torchxrayvision's CheX_Dataset (views PA, AP; blank -> 0 where No Finding, -1 -> NaN): 17,621 / 29,718
    frontal = chex_ref.train[chex_ref.train["Frontal/Lateral"] == "Frontal"]
    pa_ap = frontal["AP/PA"].isin(["PA", "AP"]).to_numpy()
    labels, *_ = chex_ref.labels(True, ["Atelectasis"], ["ignore"], "mask")
    atelectasis = labels[: len(frontal), 0][pa_ap]
    assert int((atelectasis == 0).sum()) == 17_621 and int((atelectasis == 1).sum()) == 29_718


# --------------------------------------------------------------------------------------------------------------
# CheXpert grid: every policy (and per-pathology mixes) x blank, with frontal_only and tasks arranged so that each
# policy meets both values of each (its two cases differ in all three) and every pair of blank, frontal_only and tasks
# values occurs; no_finding_fraction cycles through 1.0, 0.5, 0.2. Each case is one datamodule call (about a second).
# --------------------------------------------------------------------------------------------------------------
POLICIES: list[tuple[str, str | dict[str, str]]] = [
    ("ignore", "ignore"),
    ("zeros", "zeros"),
    ("ones", "ones"),
    ("multiclass", "multiclass"),
    ("lsr_zeros", "lsr_zeros"),
    ("lsr_ones", "lsr_ones"),
    ("zeros+At,Ed_ones", {"default": "zeros", "Atelectasis": "ones", "Edema": "ones"}),
    ("multiclass+At_ones", {"default": "multiclass", "Atelectasis": "ones"}),
    ("zeros+Fracture_multiclass", {"default": "zeros", "Fracture": "multiclass"}),
    ("ignore+Edema_lsr_ones", {"default": "ignore", "Edema": "lsr_ones"}),
    ("nodefault+Card_multiclass", {"Cardiomegaly": "multiclass"}),
]
FRACTIONS = (1.0, 0.5, 0.2)


def _chexpert_grid() -> list[Any]:
    """The whole grid: every policy and mix x blank x frontal-only x 5 / 14 tasks; no_finding_fraction cycles."""
    cases = []
    for name, policy in POLICIES:
        for blank in ("zeros", "mask"):
            for frontal_only in (True, False):
                for task_set in ("competition", "all"):
                    fraction = FRACTIONS[len(cases) % 3]
                    case_id = f"{name}-blank_{blank}-{'frontal' if frontal_only else 'allviews'}-{task_set}-nff{fraction}"
                    cases.append(pytest.param(policy, blank, frontal_only, task_set, fraction, id=case_id))
    return cases


@pytest.mark.parametrize("uncertainty, blank, frontal_only, tasks, fraction", _chexpert_grid())
def test_chexpert_conforms(
    chexpert_dir: Path, chex_ref: CheXpertReference,
    uncertainty: str | dict[str, str], blank: str, frontal_only: bool, tasks: str, fraction: float,
) -> None:
    options = dict(blank=blank, frontal_only=frontal_only, tasks=tasks, no_finding_fraction=fraction)
    dm = chexpert_datamodule(
        chexpert_dir, uncertainty=uncertainty if isinstance(uncertainty, str) else dict(uncertainty), **options
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unselected per-pathology keys warn; checked in its own test
        table, split = dm.labels_only()
    full = chex_ref.table(uncertainty=uncertainty, **options)
    problems = conformance_problems(full, table, split, fraction, dm.multiclass, dm.uncertainty_policies)
    assert not problems, "\n".join(problems)


def test_chexpert_seeded_split_and_undersampling(chexpert_dir: Path, chex_ref: CheXpertReference) -> None:
    """Another seed and val_fraction: the split and undersampling follow them (no hard-coded 0 / 0.1)."""
    options = dict(uncertainty="zeros", blank="mask", frontal_only=True, tasks="competition",
                   no_finding_fraction=0.3, seed=3, val_fraction=0.2)
    dm = chexpert_datamodule(chexpert_dir, **options)
    table, split = dm.labels_only()
    full = chex_ref.table(**options)
    problems = conformance_problems(full, table, split, 0.3, dm.multiclass, dm.uncertainty_policies)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("uncertainty", [
    pytest.param("lsr_zeros", id="lsr_zeros"),
    pytest.param({"default": "ignore", "Edema": "lsr_ones"}, id="ignore+Edema_lsr_ones"),
])
def test_chexpert_lsr_is_seeded(chexpert_dir: Path, chex_ref: CheXpertReference, uncertainty: Any) -> None:
    from chestx.data.datasets.chexpert import read_chexpert

    def read(seed: int) -> Any:
        return read_chexpert(chexpert_dir / "train.csv", pathologies=list(CHEX_COMPETITION), uncertainty=uncertainty,
                             blank="zeros", frontal_only=True, lsr_zeros=LSR_RANGES["lsr_zeros"],
                             lsr_ones=LSR_RANGES["lsr_ones"], seed=seed)

    first, again, other = read(0), read(0), read(1)
    ref = chex_ref.table(uncertainty=uncertainty, blank="zeros", frontal_only=True, tasks="competition")
    n_train = chex_ref.source(True)["n_train"]
    soft = ref.soft[:n_train]
    assert soft.sum() > 10_000  # tens of thousands of uncertain cells in the frontal training rows
    problems = _cell_problems("labels", first.labels, ref.labels[:n_train], ref.pathologies, ref.ids, skip=soft)
    assert not problems, "\n".join(problems)
    np.testing.assert_array_equal(first.labels, again.labels)  # same seed, same values
    assert (first.labels[soft] != other.labels[soft]).mean() > 0.99  # another seed, other draws
    np.testing.assert_array_equal(first.labels[~soft], other.labels[~soft])  # only the draws move


def test_chexpert_unselected_policy_key_is_ignored_with_a_warning(
    chexpert_dir: Path, chex_ref: CheXpertReference, caplog: pytest.LogCaptureFixture
) -> None:
    from chestx.data.datasets.chexpert import read_chexpert

    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        table = read_chexpert(chexpert_dir / "train.csv", pathologies=list(CHEX_COMPETITION),
                              uncertainty={"default": "zeros", "Fracture": "multiclass"}, blank="zeros",
                              frontal_only=False, seed=0)
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("Fracture" in m for m in messages), messages
    ref = chex_ref.table(uncertainty="zeros", blank="zeros", frontal_only=False, tasks="competition")
    n_train = chex_ref.source(False)["n_train"]
    problems = _cell_problems("labels", table.labels, ref.labels[:n_train], ref.pathologies, ref.ids)
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------------------------
# NIH grid: views x split (official, chexnet with list / csv labels, random), all 16 (views change the split's patient
# pool and the undersampling draw), with include_no_finding and no_finding_fraction spread so that every pair of
# option values occurs
# --------------------------------------------------------------------------------------------------------------
NIH_SPLITS: list[tuple[str, dict[str, str]]] = [
    ("official", {"split": "official"}),
    ("chexnet_lists", {"split": "chexnet", "chexnet_labels": "lists"}),
    ("chexnet_csv", {"split": "chexnet", "chexnet_labels": "csv"}),
    ("random", {"split": "random"}),
]
NIH_VIEWS: list[list[str] | None] = [None, ["PA"], ["AP"], ["PA", "AP"]]


def _nih_grid() -> list[Any]:
    """Every split x views x 14 / 15 classes; no_finding_fraction cycles through 1.0 / 0.5 / 0.2."""
    cases = []
    for split_name, split_options in NIH_SPLITS:
        for views in NIH_VIEWS:
            for include in (False, True):
                fraction = FRACTIONS[len(cases) % 3]
                view_id = "all" if views is None else "+".join(views)
                case_id = f"{split_name}-views_{view_id}-{15 if include else 14}classes-nff{fraction}"
                cases.append(pytest.param(split_options, views, include, fraction, id=case_id))
    return cases


@pytest.mark.parametrize("split_options, views, include_no_finding, fraction", _nih_grid())
def test_nih_conforms(
    nih_dir: Path, nih_ref: NIHReference,
    split_options: dict[str, str], views: list[str] | None, include_no_finding: bool, fraction: float,
) -> None:
    dm = nih_datamodule(nih_dir, include_no_finding=include_no_finding, views=views, no_finding_fraction=fraction,
                        **split_options)
    table, split = dm.labels_only()
    full = nih_ref.table(include_no_finding=include_no_finding, views=views, no_finding_fraction=fraction,
                         **split_options)
    problems = conformance_problems(full, table, split, fraction)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("options", [
    pytest.param({"split": "official", "val_fraction": 0.2}, id="official-val0.2"),
    pytest.param({"split": "random", "ratios": (0.6, 0.15, 0.25)}, id="random-60-15-25"),
])
def test_nih_seeded_split_and_undersampling(nih_dir: Path, nih_ref: NIHReference, options: dict[str, Any]) -> None:
    """Another seed, val_fraction and ratios: the split and undersampling follow them."""
    dm = nih_datamodule(nih_dir, include_no_finding=True, no_finding_fraction=0.4, **{**options, "seed": 7})
    table, split = dm.labels_only()
    full = nih_ref.table(include_no_finding=True, no_finding_fraction=0.4, seed=7, **options)
    problems = conformance_problems(full, table, split, 0.4)
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------------------------
# Regressions: the figures of issue 8
# --------------------------------------------------------------------------------------------------------------
def test_chexpert_default_training_split_has_15246_normals(chexpert_dir: Path, chex_ref: CheXpertReference) -> None:
    ref = chex_ref.table(frontal_only=True, tasks="competition")
    expected = int((ref.normal & (ref.split == "train")).sum())
    assert expected == 15_246  # issue 8: No Finding = 1 in the default training split
    table, split = chexpert_datamodule(chexpert_dir, frontal_only=True).labels_only()
    got = int((table.frame["no_finding"].to_numpy(dtype=bool) & (np.asarray(split) == "train")).sum())
    assert got == expected


def test_chexpert_mask_keeps_no_finding_negatives(chexpert_dir: Path, chex_ref: CheXpertReference) -> None:
    """blank=mask, frontal train.csv rows: a No Finding image's blank Atelectasis is a negative (issue 8: 1,025)."""
    from chestx.data.datasets.chexpert import read_chexpert

    ref = chex_ref.table(uncertainty="ignore", blank="mask", frontal_only=True, tasks="competition")
    n_train = chex_ref.source(True)["n_train"]
    column = ref.pathologies.index("Atelectasis")
    atelectasis = ref.labels[:n_train, column]
    assert int((atelectasis == 0).sum()) == 17_625 and int((atelectasis == 1).sum()) == 29_720
    table = read_chexpert(chexpert_dir / "train.csv", pathologies=list(CHEX_COMPETITION), uncertainty="ignore",
                          blank="mask", frontal_only=True, seed=0)
    got = table.labels[:, list(table.pathologies).index("Atelectasis")]
    assert int((got == 0).sum()) == 17_625 and int((got == 1).sum()) == 29_720
    problems = _cell_problems("labels", table.labels, ref.labels[:n_train], ref.pathologies, ref.ids)
    assert not problems, "\n".join(problems)


def test_nih_chexnet_list_labels_figures(nih_dir: Path, nih_ref: NIHReference) -> None:
    """chexnet split: list labels give 242 test Pneumonia positives (csv 260); 188 cells of 181 images differ."""
    lists_ref = nih_ref.table(split="chexnet", chexnet_labels="lists")
    csv_ref = nih_ref.table(split="chexnet", chexnet_labels="csv")
    pneumonia = NIH_14.index("Pneumonia")
    test = lists_ref.split == "test"
    assert int(lists_ref.labels[test, pneumonia].sum()) == 242 and int(csv_ref.labels[test, pneumonia].sum()) == 260
    differ = lists_ref.labels != csv_ref.labels
    assert int(differ.sum()) == 188 and int(differ.any(axis=1).sum()) == 181

    lists_table, lists_split = nih_datamodule(nih_dir, split="chexnet", chexnet_labels="lists").labels_only()
    csv_table, csv_split = nih_datamodule(nih_dir, split="chexnet", chexnet_labels="csv").labels_only()
    column = list(lists_table.pathologies).index("Pneumonia")
    assert int(lists_table.labels[np.asarray(lists_split) == "test", column].sum()) == 242
    assert int(csv_table.labels[np.asarray(csv_split) == "test", column].sum()) == 260
    assert list(lists_table.frame["image_id"]) == list(csv_table.frame["image_id"])
    got_differ = lists_table.labels != csv_table.labels
    assert int(got_differ.sum()) == 188 and int(got_differ.any(axis=1).sum()) == 181


def test_nih_undersampling_finds_normals_with_no_finding_class(nih_dir: Path, nih_ref: NIHReference) -> None:
    """include_no_finding=true, no_finding_fraction<1: the normals are found (the 15th column is not a finding)."""
    full = nih_ref.table(include_no_finding=True, split="official", no_finding_fraction=0.5)
    expected_dropped = int((~full.keep).sum())
    normal_train = int((full.normal & (full.split == "train")).sum())
    assert normal_train > 40_000 and abs(expected_dropped - normal_train / 2) < 6 * math.sqrt(normal_train / 4)
    table, split = nih_datamodule(nih_dir, include_no_finding=True, split="official",
                                  no_finding_fraction=0.5).labels_only()
    assert len(full.ids) - len(table.frame) == expected_dropped
    np.testing.assert_array_equal(table.frame["image_id"].astype(str).to_numpy(dtype=object), full.kept().ids)
