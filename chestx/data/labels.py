"""Pathology names, the `LabelTable` container and label-file helpers shared by all datasets.

Label convention (docs/design.md): `labels` is float32 (N, K) with 1 / 0 / NaN (NaN = unknown,
masked in loss and metrics; soft values only under CheXpert `lsr_*`), `uncertain` is bool (N, K)
and marks source labels that were "uncertain" (CheXpert -1.0). `frame.no_finding` is the source's
own "normal" flag (NIH `Finding Labels` == "No Finding", CheXpert `No Finding` == 1), whatever
classes or policy are chosen.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

# CheXNet order (Rajpurkar et al. 2017), also the order of NIH's chexnet_split list files.
NIH_PATHOLOGIES: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NO_FINDING = "No Finding"

# The 14 observations in the column order of CheXpert's train.csv / valid.csv.
CHEXPERT_PATHOLOGIES: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
# The 5 tasks of the CheXpert competition (Irvin et al. 2019).
CHEXPERT_COMPETITION_TASKS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion",
)

FRAME_COLUMNS: tuple[str, ...] = ("image_id", "patient_id", "path", "view", "age", "sex", "no_finding")

# The findings NIH ChestX-ray14 and CheXpert both label, as (NIH name, CheXpert name): what a model
# trained on one is scored on in the other (cross-dataset evaluation). Same finding, by name, except
# NIH `Effusion` = CheXpert `Pleural Effusion`. Left out on purpose (README): NIH Infiltration, Mass,
# Nodule, Emphysema, Fibrosis, Pleural_Thickening, Hernia and CheXpert Lung Opacity, Lung Lesion,
# Enlarged Cardiomediastinum, Pleural Other, Fracture, Support Devices have no counterpart of the same
# definition (Lung Lesion is not "Mass or Nodule", Lung Opacity is not "Infiltration"), and the two
# "No Finding" differ (CheXpert's ignores Support Devices); nothing is mapped by guesswork.
SHARED_FINDINGS: tuple[tuple[str, str], ...] = (
    ("Atelectasis", "Atelectasis"),
    ("Cardiomegaly", "Cardiomegaly"),
    ("Consolidation", "Consolidation"),
    ("Edema", "Edema"),
    ("Effusion", "Pleural Effusion"),
    ("Pneumonia", "Pneumonia"),
    ("Pneumothorax", "Pneumothorax"),
)


class DataError(ValueError):
    """A label file or a data option is wrong; the message names the file/option, the value and the fix."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A label or list file does not exist (also a FileNotFoundError)."""


@dataclass
class LabelTable:
    """One row per image: metadata `frame` aligned row for row with `labels` and `uncertain`."""

    frame: pd.DataFrame  # (N, ...) columns image_id, patient_id, path, view, age, sex, no_finding (+extras)
    labels: np.ndarray  # (N, K) float32: 1 / 0 / NaN (soft values under lsr_*)
    uncertain: np.ndarray  # (N, K) bool: source label was uncertain (-1.0)
    pathologies: list[str]

    def __post_init__(self) -> None:
        n, k = len(self.frame), len(self.pathologies)
        if self.labels.shape != (n, k) or self.uncertain.shape != (n, k):
            raise DataError(
                f"LabelTable shapes disagree: frame has {n} rows and {k} pathologies, but labels are "
                f"{self.labels.shape} and uncertain {self.uncertain.shape}; build them from the same rows"
            )
        missing = [c for c in FRAME_COLUMNS if c not in self.frame.columns]
        if missing:
            raise DataError(f"LabelTable frame lacks columns {missing}; found {list(self.frame.columns)}")

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, rows: np.ndarray) -> "LabelTable":
        """Rows selected by a bool mask (N,) or an integer index array."""
        rows = np.asarray(rows)
        if rows.dtype == bool and rows.shape != (len(self),):
            raise DataError(f"subset mask has shape {rows.shape}, expected ({len(self)},)")
        idx = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
        return LabelTable(
            frame=self.frame.iloc[idx].reset_index(drop=True),
            labels=self.labels[idx],
            uncertain=self.uncertain[idx],
            pathologies=list(self.pathologies),
        )

    @classmethod
    def concat(cls, tables: Sequence["LabelTable"]) -> "LabelTable":
        """Stack tables with the same pathologies (e.g. CheXpert train.csv + valid.csv)."""
        if not tables:
            raise DataError("LabelTable.concat needs at least one table")
        first = list(tables[0].pathologies)
        for t in tables[1:]:
            if list(t.pathologies) != first:
                raise DataError(f"cannot concat tables with pathologies {first} and {list(t.pathologies)}")
        return cls(
            frame=pd.concat([t.frame for t in tables], ignore_index=True),
            labels=np.concatenate([t.labels for t in tables]),
            uncertain=np.concatenate([t.uncertain for t in tables]),
            pathologies=first,
        )


def evaluation_targets(labels: np.ndarray, uncertain: np.ndarray) -> np.ndarray:
    """Ground truth for every metric: `labels` with uncertain and soft (0 < y < 1) cells set to NaN.

    The one home of this rule: whatever the training policy turned an uncertain cell into, it is never
    scored, so policies are compared on the same labels. Returns float32 (N, K).
    """
    out = np.array(labels, dtype=np.float32, copy=True)  # (N, K)
    out[np.asarray(uncertain, dtype=bool)] = np.nan
    out[(out > 0) & (out < 1)] = np.nan
    return out


def find_pathology(name: str, pathologies: Sequence[str], key: str = "pathology", hint: str = "") -> int:
    """Index of `name` in `pathologies`, forgiving case and '_' vs ' ' (`pleural effusion`,
    `Pleural_Thickening`); ValueError naming the option `key`, the valid names and `hint` otherwise."""
    def norm(text: str) -> str:
        return str(text).strip().lower().replace("_", " ")

    for k, p in enumerate(pathologies):
        if norm(p) == norm(name):
            return k
    raise ValueError(f"{key}={name!r} is not one of the pathologies {list(pathologies)}{hint}")


def shared_pathologies(model: Sequence[str], data: Sequence[str]) -> list[tuple[int, int]]:
    """(model output index, data column index) of every finding both define, in the model's order.

    Names equal (forgiving case and '_' vs ' ') or paired in SHARED_FINDINGS (either direction);
    a model trained on NIH scored on CheXpert gets Effusion <-> Pleural Effusion, and so on.
    """
    def norm(text: str) -> str:
        return str(text).strip().lower().replace("_", " ")

    aliases: dict[str, set[str]] = {}
    for nih, chexpert in SHARED_FINDINGS:
        aliases.setdefault(norm(nih), set()).add(norm(chexpert))
        aliases.setdefault(norm(chexpert), set()).add(norm(nih))
    column = {norm(name): j for j, name in enumerate(data)}
    pairs = []
    for k, name in enumerate(model):
        if norm(name) in column:  # the same name wins over an alias
            pairs.append((k, column[norm(name)]))
            continue
        same = [column[n] for n in aliases.get(norm(name), set()) if n in column]
        if same:
            pairs.append((k, min(same)))
    return pairs


def select_pathologies(requested: Iterable[str], available: Sequence[str], what: str) -> list[str]:
    """Validate a pathology list against `available`; keeps the requested order."""
    if isinstance(requested, str):
        requested = [requested]
    out = list(requested)
    unknown = [p for p in out if p not in available]
    if unknown:
        raise DataError(f"unknown {what} pathologies {unknown}; valid names are {list(available)}")
    dupes = sorted({p for p in out if out.count(p) > 1})
    if dupes:
        raise DataError(f"{what} pathologies {dupes} are listed more than once: list each once")
    if not out:
        raise DataError(f"no {what} pathologies selected: pass at least one of {list(available)}")
    return out


def read_label_csv(csv_path: str | Path, required: Sequence[str], what: str, **read_csv_kwargs) -> pd.DataFrame:
    """Read a label CSV; missing file or missing columns -> DataError naming path and columns."""
    path = Path(csv_path).expanduser()
    if not path.is_file():
        raise DataFileNotFoundError(
            f"{what} label file not found: {str(path)!r}; point the csv option at the file "
            f"(or data.root at the folder that holds it)"
        )
    try:
        frame = pd.read_csv(path, **read_csv_kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot parse {what} label file {str(path)!r}: {err}") from err
    check_columns(frame, required, path, what)
    return frame


def required_text(values: pd.Series, column: str, path: str | Path, what: str) -> pd.Series:
    """A column every row must have (image paths, image and patient ids) as stripped strings.

    Missing values policy (pandas 3 keeps NaN through `astype(str)`): a blank or missing cell stops with the file,
    the column and the first rows (1-based line numbers of the file, header = line 1), never a silent "nan" id.
    """
    text = values.astype("string").str.strip()  # (N,) pd.NA where missing
    blank = text.isna() | (text == "")
    if blank.any():
        lines = [int(i) + 2 for i in np.flatnonzero(blank.to_numpy())[:5]]
        raise DataError(
            f"{what} file {str(path)!r}: {int(blank.sum())} rows have an empty {column!r} (first at lines {lines}); "
            f"every row needs one: fill them in or remove those rows"
        )
    return text.astype(str)


def optional_text(values: pd.Series) -> pd.Series:
    """A metadata column (sex, view) as stripped strings; blank or missing cells stay missing (NaN), which the
    subgroup and explore tables show as `unknown`."""
    text = values.astype("string").str.strip()
    return text.astype(object).where((text.notna() & (text != "")).to_numpy(dtype=bool), np.nan)


def check_columns(frame: pd.DataFrame, required: Sequence[str], path: str | Path, what: str) -> None:
    """Raise DataError listing expected vs found columns when some are missing."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{what} label file {str(path)!r} lacks columns {missing}. Expected columns: {list(required)}; "
            f"found: {list(frame.columns)}. Use the file exactly as distributed (header row included)."
        )
