"""`data=csv`: any folder of labelled chest X-rays described by one CSV file (one row per image).

The user names the columns (`data.image_column`, `data.patient_column`, `data.findings`, `data.split_column`,
`data.sex_column`, `data.age_column`, `data.view_column`, `data.no_finding_column`); label cells follow
CheXpert's encoding (Irvin et al. 2019: 1 positive, 0 negative, -1 uncertain, blank not mentioned, also
written 1.0 / 0.0 / -1.0) and every CheXpert option applies with the same rules (`chestx.data.datasets.chexpert`:
`parse_label_cells`, `apply_label_rules`: uncertainty policies, `blank`, the No Finding rule under
`blank=mask`). The split comes from a split column (`data.split_values` names its train / val / test
values; a patient in two splits stops the run) or, without one, from a seeded patient-level random split
(`data.ratios`, as NIH's `data.split=random`). Reference page: docs/datasets/csv.md.

torchxrayvision has no generic CSV dataset; its per-dataset classes (torchxrayvision/datasets.py,
`CheX_Dataset`) read the same 1 / 0 / -1 / blank encoding, which is what this reader accepts.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from chestx.data.datasets.chexpert import (
    UNCERTAINTY_POLICIES, UncertaintyPolicies, apply_label_rules, check_label_options, parse_label_cells,
    resolve_uncertainty,
)
from chestx.data.labels.table import DataError, DataFileNotFoundError, LabelTable, select_pathologies
from chestx.data.datasets.base import ChestXData, LabelFile, view_mask
from chestx.data.images.same_file import same_files
from chestx.data.datasets.registry import register_dataset
from chestx.data.labels.splits import SPLITS

log = logging.getLogger(__name__)

# data.<key> -> what the column holds (the keys that name columns, besides data.findings)
COLUMN_KEYS: tuple[str, ...] = (
    "image_column", "patient_column", "split_column", "sex_column", "age_column", "view_column", "no_finding_column",
)
DEFAULT_SPLIT_VALUES: dict[str, str] = {"train": "train", "val": "val", "test": "test"}


def _as_list(value: Any) -> list[str]:
    """A YAML scalar or list (also Hydra's ListConfig) -> list of stripped strings."""
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        value = [value]
    return [str(v).strip() for v in value]


def split_value_map(split_values: Mapping[str, Any] | None) -> dict[str, str]:
    """data.split_values {train: v, val: [v1, v2], test: v} -> {file value: split name}."""
    given = dict(split_values) if split_values is not None else dict(DEFAULT_SPLIT_VALUES)
    unknown = sorted(set(map(str, given)) - set(SPLITS))
    if unknown:
        raise DataError(f"data.split_values has keys {unknown}; its keys are {list(SPLITS)}, each mapped to the "
                        "value (or list of values) the split column uses, e.g. {train: train, val: valid, test: test}")
    out: dict[str, str] = {}
    for name, values in given.items():
        for value in _as_list(values):
            if out.get(value, name) != name:
                raise DataError(f"data.split_values maps {value!r} to both {out[value]!r} and {name!r}; "
                                "give each value of the split column one split")
            out[value] = str(name)
    return out


def _text(raw: pd.DataFrame, column: str | None) -> pd.Series:
    """A column as stripped text with blanks as NaN; all NaN when the column is not configured."""
    if column is None:
        return pd.Series(np.nan, index=raw.index, dtype="object")
    text = raw[column].astype(str).str.strip()
    return text.where(text != "", np.nan)


def _rows_named(rows: np.ndarray, limit: int = 5) -> str:
    return ", ".join(f"row {r} (line {r + 2})" for r in rows[:limit]) + (" ..." if len(rows) > limit else "")


def read_label_folder_csv(
    csv_path: str | Path,
    image_column: str,
    patient_column: str | None = None,
    labels: Sequence[str] | None = None,
    split_column: str | None = None,
    sex_column: str | None = None,
    age_column: str | None = None,
    view_column: str | None = None,
    no_finding_column: str | None = None,
    uncertainty: str | Mapping[str, str] = "ignore",
    blank: str = "zeros",
    lsr_zeros: Sequence[float] = (0.0, 0.3),
    lsr_ones: Sequence[float] = (0.55, 0.85),
    seed: int = 0,
) -> LabelTable:
    """Read a user's label CSV into a LabelTable (every row; no view filter, no split).

    `frame.image_id` and `frame.path` are the image column as written (stripped); `patient_id` the patient
    column, or the image path when there is none (each image its own patient, logged). `labels=None`: every
    column that no other key names. Blank image paths or patient ids, duplicated image paths, label values
    other than 1 / 0 / -1 / blank and non-numeric ages stop with a DataError naming the file, column and rows.
    The split column, when given, is carried as `frame.split_value` (stripped text).
    """
    path = Path(csv_path).expanduser()
    if not path.is_file():
        raise DataFileNotFoundError(f"label file not found: {str(path)!r}; set data.csv to the CSV (relative to "
                                    "data.root, or an absolute path)")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")  # a spreadsheet's BOM
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot parse the label file {str(path)!r} (data.csv): {err}") from err
    named = {"image_column": image_column, "patient_column": patient_column, "split_column": split_column,
             "sex_column": sex_column, "age_column": age_column, "view_column": view_column,
             "no_finding_column": no_finding_column}
    for key, column in named.items():
        if column is not None and column not in raw.columns:
            raise DataError(f"data.{key}={column!r} is not a column of {str(path)!r}; its columns are "
                            f"{list(raw.columns)}: set data.{key} to one of them" +
                            ("" if key == "image_column" else ", or to null if the file has none"))
    taken = {c for c in named.values() if c is not None}
    if labels is None:
        names = [c for c in raw.columns if c not in taken]
        if not names:
            raise DataError(f"{str(path)!r} has no label column: every column is named by another data.* key "
                            f"({sorted(taken)}); add the label columns to the file or list them in data.findings")
        log.info("data.findings=null: the label columns are every column no other key names: %s", names)
    else:
        names = select_pathologies(_as_list(labels), list(raw.columns), f"data.findings ({str(path)!r} columns)")
        clash = [c for c in names if c in taken - {no_finding_column}]
        if clash:
            raise DataError(f"data.findings lists {clash}, which other data.*_column keys already name "
                            f"({ {k: v for k, v in named.items() if v in clash} }); a column is either a label or not")
    policies = resolve_uncertainty(uncertainty, names, known=names)
    ranges = check_label_options(blank, lsr_zeros, lsr_ones)

    images = raw[image_column].astype(str).str.strip()  # (N,)
    empty = np.flatnonzero((images == "").to_numpy())
    if len(empty):
        raise DataError(f"{str(path)!r}: {len(empty)} rows have a blank data.image_column={image_column!r} "
                        f"({_rows_named(empty)}); every row needs an image path: fill them in or delete those rows")
    twice = images[images.duplicated(keep=False)]
    if len(twice):
        first = twice.iloc[0]
        rows = np.flatnonzero((images == first).to_numpy())
        raise DataError(f"{str(path)!r}: {twice.nunique()} image paths appear more than once in "
                        f"data.image_column={image_column!r}, e.g. {first!r} in {_rows_named(rows)}; "
                        "list each image once (one row per image, labels in its columns)")
    if patient_column is None:
        patients = images.copy()
        log.info("data.patient_column is not set: each of the %d images of %s is its own patient (splits and the "
                 "patient bootstrap treat them as independent); set data.patient_column=<column> if patients have "
                 "several images", len(images), path)
    else:
        patients = raw[patient_column].astype(str).str.strip()
        empty = np.flatnonzero((patients == "").to_numpy())
        if len(empty):
            raise DataError(f"{str(path)!r}: {len(empty)} rows have a blank data.patient_column={patient_column!r} "
                            f"({_rows_named(empty)}); fill in the patient ids, or set data.patient_column=null to "
                            "make each image its own patient")

    source = parse_label_cells(raw, names, path, key="data.findings", row_names=images)  # (N, K) 1 / 0 / -1 / NaN
    if no_finding_column is None:
        normal = np.zeros(len(raw), dtype=bool)  # (N,)
    else:
        normal = parse_label_cells(raw, [no_finding_column], path, row_names=images)[:, 0] == 1.0
    labels_, uncertain = apply_label_rules(source, names, policies, blank, normal, ranges, seed)  # (N, K) each

    age_text = _text(raw, age_column)
    age = pd.to_numeric(age_text, errors="coerce")  # (N,) float years, NaN unknown
    bad = np.flatnonzero((age.isna() & age_text.notna()).to_numpy())
    if len(bad):
        raise DataError(f"{str(path)!r}: data.age_column={age_column!r} holds {age_text.iloc[bad[0]]!r} in "
                        f"{_rows_named(bad)}; ages are numbers of years, or blank when unknown")
    frame = pd.DataFrame({
        "image_id": images,
        "patient_id": patients,
        "path": images,  # relative to data.root, or absolute (CSVData.resolve_paths)
        "view": _text(raw, view_column),
        "age": age.to_numpy(dtype=np.float64),
        "sex": _text(raw, sex_column),
        "no_finding": normal,
    })
    if split_column is not None:
        frame["split_value"] = raw[split_column].astype(str).str.strip()
    unknown = {key: int(frame[col].isna().sum()) for key, col in (("sex_column", "sex"), ("age_column", "age"),
                                                                   ("view_column", "view"))}
    missing = {k: v for k, v in unknown.items() if named[k] is not None and v}
    if missing:
        log.info("%s: rows with a blank value (unknown; subgroup 'unknown'): %s", path, missing)
    log.info("Read %d images of %d patients from %s; labels %s, uncertainty %s, blank=%s, %d uncertain cells",
             len(frame), frame["patient_id"].nunique(), path, names, dict(zip(names, policies)), blank,
             int(uncertain.sum()))
    return LabelTable(frame=frame, labels=labels_, uncertain=uncertain, pathologies=list(names))


def split_from_column(frame: pd.DataFrame, values: Mapping[str, str], csv_path: Path, split_column: str) -> np.ndarray:
    """split (N,) from `frame.split_value` through {file value: split}; unmapped values and a patient in two
    splits -> DataError naming the rows / the patient."""
    given = frame["split_value"].astype(str)
    split = given.map(dict(values))  # (N,) NaN where unmapped
    bad = np.flatnonzero(split.isna().to_numpy())
    if len(bad):
        seen = sorted(set(given.iloc[bad]))[:5]
        raise DataError(f"{str(csv_path)!r}: data.split_column={split_column!r} holds values {seen} that "
                        f"data.split_values ({ {v: k for k, v in values.items()} }) does not map, in {len(bad)} rows "
                        f"({_rows_named(bad)}); map them in data.split_values, e.g. "
                        "data.split_values={train: train, val: valid, test: test}, or fix the file")
    split = split.to_numpy().astype("<U5")
    per_patient = pd.DataFrame({"p": frame["patient_id"].astype(str), "s": split}).groupby("p")["s"].unique()
    leaking = per_patient[per_patient.map(len) > 1]
    if len(leaking):
        patient = leaking.index[0]
        rows = np.flatnonzero((frame["patient_id"].astype(str) == patient).to_numpy())
        raise DataError(
            f"{str(csv_path)!r}: patient {patient!r} is in the splits {sorted(leaking.iloc[0])} of "
            f"data.split_column={split_column!r} ({_rows_named(rows)}); {len(leaking)} patients are in more than one "
            "split, which leaks patients between training and testing: put each patient's images in one split, or "
            "drop data.split_column for a patient-level random split (data.ratios)"
        )
    return split


@register_dataset("csv")  # findings: the user's label columns
class CSVData(UncertaintyPolicies, ChestXData):
    """Any labelled image folder described by one CSV (`data=csv`); the keys are documented in conf/data/csv.yaml."""

    label_files = {"labels": LabelFile(key="csv")}  # data.csv, relative to data.root or absolute; images: UnderRoot

    def __init__(
        self,
        root: str,
        csv: str | None = None,
        image_column: str | None = None,
        patient_column: str | None = None,
        findings: Sequence[str] | None = None,
        split_column: str | None = None,
        split_values: Mapping[str, Any] | None = None,
        sex_column: str | None = None,
        age_column: str | None = None,
        view_column: str | None = None,
        views: Sequence[str] | None = None,
        no_finding_column: str | None = None,
        uncertainty: str | Mapping[str, str] = "ignore",
        blank: str = "zeros",
        lsr_zeros: Sequence[float] = (0.0, 0.3),
        lsr_ones: Sequence[float] = (0.55, 0.85),
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, **kwargs)
        self.csv = csv
        self.image_column = image_column
        self.patient_column = patient_column
        self.labels = None if findings is None else _as_list(findings)
        self.split_column = split_column
        self.split_values = split_value_map(split_values)
        self.sex_column = sex_column
        self.age_column = age_column
        self.view_column = view_column
        self.views = [v.upper() for v in _as_list(views)] if views else None
        self.no_finding_column = no_finding_column
        self.uncertainty = uncertainty if isinstance(uncertainty, str) else dict(uncertainty)
        if isinstance(self.uncertainty, str) and self.uncertainty not in UNCERTAINTY_POLICIES:
            raise DataError(f"data.uncertainty={uncertainty!r} is not one of {list(UNCERTAINTY_POLICIES)} "
                            "(or a mapping {default: zeros, <label column>: ones})")
        self.blank = blank
        self.lsr_zeros, self.lsr_ones = tuple(lsr_zeros), tuple(lsr_ones)
        check_label_options(blank, lsr_zeros, lsr_ones)
        if self.views and view_column is None:
            raise DataError(f"data.views={self.views} needs data.view_column=<the column holding each image's view>")
        if self.no_finding_fraction < 1.0 and no_finding_column is None:
            raise DataError(f"data.no_finding_fraction={self.no_finding_fraction} undersamples normal images, which "
                            "needs data.no_finding_column=<the column that is 1 for a normal image>")

    @property
    def csv_path(self) -> Path:
        if not self.csv:
            raise DataError("data=csv needs data.csv=<the label CSV> (relative to data.root, or absolute), and "
                            "data.image_column=<its image path column>")
        path = self.label_file()
        assert path is not None
        return path

    @property
    def tasks(self) -> list[str]:
        """The label columns (UncertaintyPolicies: one policy each)."""
        return self.pathologies

    @property
    def uncertainty_keys(self) -> list[str]:
        """data.uncertainty may key any label column."""
        return self.pathologies

    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        path = self.csv_path
        if not self.image_column:
            raise DataError(f"data=csv needs data.image_column=<the column of {str(path)!r} that holds each image's "
                            "path, relative to data.root or absolute>")
        table = read_label_folder_csv(
            path, self.image_column, self.patient_column, self.labels, self.split_column, self.sex_column,
            self.age_column, self.view_column, self.no_finding_column, self.uncertainty, self.blank,
            self.lsr_zeros, self.lsr_ones, self.seed,
        )
        self._refuse_same_file(table, path)
        if self.split_column is not None:
            split = split_from_column(table.frame, self.split_values, path, self.split_column)
            log.info("Split from data.split_column=%r: %s", self.split_column,
                     {name: int((split == name).sum()) for name in SPLITS})
        else:
            split = self.make_split(table)
        if self.views:  # after the split, as it always was: the split is drawn over every row of the file
            keep = view_mask(table.frame["view"], self.views, repr(str(path)), column=f"{self.view_column!r}")
            table, split = table.subset(keep), split[keep]
        return table, split

    def _refuse_same_file(self, table: LabelTable, path: Path) -> None:
        """DataError when two rows name one file under two spellings (resolved against data.root: `./`, `..`,
        absolute vs relative, symlinks); the same spelling twice is refused while reading (read_label_folder_csv)."""
        texts = table.frame["path"].astype(str).tolist()
        pairs = same_files(texts, self.root)
        if pairs:
            i, j, real = pairs[0]
            raise DataError(
                f"{str(path)!r}: {len(pairs)} rows name an image file that an earlier row already names under "
                f"another spelling in data.image_column={self.image_column!r}, e.g. {_rows_named(np.array([i]))} "
                f"{texts[i]!r} and {_rows_named(np.array([j]))} {texts[j]!r} are both {real!r} (resolved against "
                f"data.root={str(self.root)!r}); list each image once (one row per image, labels in its columns)"
            )
