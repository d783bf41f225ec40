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

from chestx.data.errors import DataError, DataFileNotFoundError  # noqa: F401 (re-exported: DataFileNotFoundError)

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

# The one finding vocabulary of every dataset chestx reads: canonical name -> the other names that datasets use for
# exactly that finding. Two datasets share a finding when their names are the same (case and '_' vs ' ' forgiven) or
# listed here together; nothing else is matched (cross-dataset scoring, `data=merge`). The table of which dataset
# labels what is docs/datasets/findings.md (`chestx.data.datasets.vocabulary`).
FINDINGS: dict[str, tuple[str, ...]] = {
    "Pleural Effusion": ("Effusion",),  # CheXpert, MIMIC-CXR / NIH, PadChest, VinDr ("Pleural effusion")
    "Pleural Thickening": ("Pleural_Thickening",),  # NIH's spelling, kept by PadChest and VinDr loaders
    "Lung Opacity": ("Airspace opacity",),  # Google's NIH relabels (Majkowska 2020) = CheXpert's; torchxrayvision too
    "Nodule/Mass": ("Nodule or mass",),  # VinDr's and Google's one label for both
}
# Same name, different definitions: never shared across datasets (each dataset's own "normal").
NOT_SHARED: dict[str, str] = {
    NO_FINDING: "each dataset's normal has its own definition (NIH: none of its 14 labels; CheXpert / MIMIC: the "
                "labeller's No Finding, which ignores Support Devices; RSNA: the 'Normal' class)",
}
# Findings that look alike but are not the same finding, and why they are not matched.
NOT_MATCHED: tuple[tuple[str, str, str], ...] = (
    ("Infiltration", "Lung Opacity", "CheXpert's Lung Opacity is any opacity (edema, consolidation, ...), wider "
     "than NIH / PadChest / VinDr Infiltration"),
    ("Nodule", "Nodule/Mass", "one label for both cannot score a model with separate Nodule and Mass outputs "
     "without combining them (nih_expert's findings=nih scores each against the union, stated there)"),
    ("Mass", "Nodule/Mass", "as Nodule"),
    ("Nodule/Mass", "Lung Lesion", "CheXpert's Lung Lesion also counts other lesions"),
    ("Rib Fracture", "Fracture", "VinDr labels fracture sites separately (also Clavicle Fracture)"),
    ("Tube", "Support Devices", "PadChest's Support Devices already includes tubes and catheters; its Tube is a "
     "subset, not the same finding"),
    ("Enlarged Cardiomediastinum", "Cardiomegaly", "CheXpert labels both; the mediastinum is not the heart"),
)
def _norm(text: str) -> str:
    return str(text).strip().lower().replace("_", " ")


_CANONICAL = {_norm(alias): name for name, aliases in FINDINGS.items() for alias in (name, *aliases)}


def canonical_finding(name: str) -> str:
    """The vocabulary's name of a dataset's finding: `Effusion` -> `Pleural Effusion`; a name without synonyms is
    its own canonical name (case and '_' vs ' ' forgiven: `pleural_thickening` -> `Pleural Thickening`)."""
    return _CANONICAL.get(_norm(name), str(name).strip())


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
    for k, p in enumerate(pathologies):
        if _norm(p) == _norm(name):
            return k
    raise ValueError(f"{key}={name!r} is not one of the pathologies {list(pathologies)}{hint}")


def shared_pathologies(model: Sequence[str], data: Sequence[str]) -> list[tuple[int, int]]:
    """(model output index, data column index) of every finding both define, in the model's order.

    The same canonical finding (`canonical_finding`: equal names, or synonyms in FINDINGS), never a NOT_SHARED
    one; where the data has two columns of that finding, the one with the model's own name wins. A model trained
    on NIH scored on CheXpert gets Effusion <-> Pleural Effusion and the 6 findings of the same name.
    """
    pairs = []
    for k, name in enumerate(model):
        if _norm(name) in {_norm(n) for n in NOT_SHARED}:
            continue
        same = [j for j, other in enumerate(data) if canonical_finding(other) == canonical_finding(name)]
        exact = [j for j in same if _norm(data[j]) == _norm(name)]
        if same:
            pairs.append((k, (exact or same)[0]))
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


def refuse_blank_ids(path: str | Path, column: str, what: str) -> None:
    """DataError naming the file and lines when a row's image id (`column`) is blank (a region file's rows)."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=lambda c: str(c).strip() == column)
    blank = np.flatnonzero((raw.iloc[:, 0].str.strip() == "").to_numpy())
    if blank.size:
        lines = ", ".join(str(i + 2) for i in blank[:5]) + (" ..." if blank.size > 5 else "")
        raise DataError(f"{str(path)!r}: {blank.size} rows of this {what} have a blank {column!r} (line {lines}); "
                        "each row needs the image it is drawn on: fill in the id or delete the row")


def check_columns(frame: pd.DataFrame, required: Sequence[str], path: str | Path, what: str) -> None:
    """Raise DataError listing expected vs found columns when some are missing."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{what} label file {str(path)!r} lacks columns {missing}. Expected columns: {list(required)}; "
            f"found: {list(frame.columns)}. Use the file exactly as distributed (header row included)."
        )
