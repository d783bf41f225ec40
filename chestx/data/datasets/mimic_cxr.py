"""`data=mimic_cxr`: MIMIC-CXR-JPG 2.0.0 / 2.1.0 as PhysioNet ships it -> LabelTable, official split, image files.

Source: Johnson et al. 2019, "MIMIC-CXR-JPG, a large publicly available database of labeled chest radiographs"
(arXiv:1901.07042) and the PhysioNet page https://physionet.org/content/mimic-cxr-jpg/2.1.0/ ("Data
Description"). Files read from `data.root`:
- `mimic-cxr-2.0.0-chexpert.csv.gz` (or `-negbio.csv.gz`, `data.labeler`): one row per *study*, `subject_id`,
  `study_id`, then the 14 CheXpert observations (the file's columns are in alphabetical order: Atelectasis ...
  Lung Opacity, No Finding, Pleural Effusion ... Support Devices), each 1.0 / 0.0 / -1.0 (uncertain) / blank
  (not mentioned). Studies the labeller could not label have no row.
- `mimic-cxr-2.0.0-metadata.csv.gz`: one row per image, `dicom_id, subject_id, study_id,
  PerformedProcedureStepDescription, ViewPosition, Rows, Columns, StudyDate, StudyTime,
  ProcedureCodeSequence_CodeMeaning, ViewCodeSequence_CodeMeaning, PatientOrientationCodeSequence_CodeMeaning`;
  `StudyDate` is an anonymised (shifted, e.g. 21800506) YYYYMMDD integer.
- `mimic-cxr-2.0.0-split.csv.gz`: `dicom_id, study_id, subject_id, split` with split train / validate / test.
- images at `files/p<first two digits of subject_id>/p<subject_id>/s<study_id>/<dicom_id>.jpg`.
- optionally MIMIC-IV's `hosp/patients.csv.gz` (`data.patients_csv`; https://mimic.mit.edu/docs/iv/modules/hosp/
  patients/): `subject_id, gender, anchor_age, anchor_year, anchor_year_group, dod`. Age at a study =
  anchor_age + (year of StudyDate - anchor_year); anchor_age 91 stands for "over 89".
Uncompressed copies (`.csv`) are read as well.

Labels are per study and apply to each of its images; CheXpert's rules apply unchanged
(`chestx.data.datasets.chexpert.apply_label_rules`). torchxrayvision's `MIMIC_Dataset` (torchxrayvision/datasets.py)
joins the same label and metadata files on (subject_id, study_id) and builds the same image path; the
differences are listed in docs/datasets/mimic_cxr.md.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from chestx.data.datasets.chexpert import (
    UncertaintyPolicies, apply_label_rules, check_label_options, chexpert_tasks, parse_label_cells, resolve_uncertainty,
)
from chestx.data.labels.table import (
    CHEXPERT_PATHOLOGIES, NO_FINDING, DataError, DataFileNotFoundError, LabelTable,
    check_columns, select_pathologies,
)
from chestx.data.datasets.base import ChestXData, LabelFile, view_mask
from chestx.data.datasets.registry import register_dataset
from chestx.data.labels.splits import SPLITS

log = logging.getLogger(__name__)

LABELERS: tuple[str, ...] = ("chexpert", "negbio")
LABEL_FILE = "mimic-cxr-2.0.0-{labeler}.csv.gz"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
# The label files' observation columns, in the files' order (alphabetical; PhysioNet's page lists the same 14)
MIMIC_LABEL_COLUMNS: tuple[str, ...] = tuple(sorted(CHEXPERT_PATHOLOGIES))
METADATA_COLUMNS: tuple[str, ...] = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
METADATA_READ: tuple[str, ...] = ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate")
SPLIT_COLUMNS: tuple[str, ...] = ("dicom_id", "study_id", "subject_id", "split")
PATIENTS_READ: tuple[str, ...] = ("subject_id", "gender", "anchor_age", "anchor_year")
OFFICIAL_SPLITS: dict[str, str] = {"train": "train", "validate": "val", "test": "test"}
SPLIT_OPTIONS: tuple[str, ...] = ("official", "random")


def find_file(root: Path, name: str, key: str) -> Path:
    """`root/name`, or its uncompressed copy (`.csv`); DataFileNotFoundError naming both and the fix (the split file;
    the label files are `MIMIC_CXRData.label_files`)."""
    for candidate in (root / name, root / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    raise DataFileNotFoundError(
        f"{name} not found in data.root={str(root)!r} (nor {name.removesuffix('.gz')}); point {key} at the "
        "MIMIC-CXR-JPG folder as PhysioNet ships it (the one holding files/ and mimic-cxr-2.0.0-*.csv.gz)"
    )


def read_text_csv(path: Path, required: Sequence[str], what: str) -> pd.DataFrame:
    """A MIMIC file with every cell as stripped text ("" blank); missing columns -> DataError naming them."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as err:
        raise DataError(f"cannot read the {what} file {str(path)!r}: {err}; download it again from PhysioNet") from err
    check_columns(raw, required, path, what)
    return raw.apply(lambda column: column.str.strip())


def _unique(frame: pd.DataFrame, keys: list[str], path: Path) -> None:
    twice = frame.duplicated(keys, keep=False)
    if twice.any():
        example = frame.loc[twice, keys].iloc[0].to_dict()
        raise DataError(f"{str(path)!r}: {int(twice.sum())} rows repeat {keys} (e.g. {example}); each must appear "
                        "once: use the file as PhysioNet ships it")


def image_path(subject_id: str, study_id: str, dicom_id: str) -> str:
    """files/p10/p10000032/s50414267/02aa804e-....jpg (relative to data.root), PhysioNet's layout."""
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg"


def study_years(study_date: pd.Series) -> np.ndarray:
    """(N,) float year of each anonymised YYYYMMDD StudyDate (NaN when blank or not a date)."""
    date = pd.to_numeric(study_date, errors="coerce")
    return np.floor(date.to_numpy(dtype=np.float64) / 10_000)


def read_patients(patients_csv: str | Path) -> pd.DataFrame:
    """MIMIC-IV patients.csv(.gz) -> frame indexed by subject_id (text) with gender, anchor_age, anchor_year."""
    path = Path(patients_csv).expanduser()
    if not path.is_file():
        raise DataFileNotFoundError(f"data.patients_csv={str(path)!r} does not exist; point it at MIMIC-IV's "
                                    "hosp/patients.csv.gz, or set it to null (no sex / age)")
    raw = read_text_csv(path, PATIENTS_READ, "MIMIC-IV patients")
    _unique(raw, ["subject_id"], path)
    out = pd.DataFrame({
        "gender": raw["gender"].where(raw["gender"] != "", np.nan),
        "anchor_age": pd.to_numeric(raw["anchor_age"], errors="coerce"),
        "anchor_year": pd.to_numeric(raw["anchor_year"], errors="coerce"),
    })
    out.index = raw["subject_id"]
    return out


def read_mimic_cxr(
    labels_csv: str | Path,
    metadata_csv: str | Path,
    pathologies: Sequence[str] = CHEXPERT_PATHOLOGIES,
    uncertainty: str | Mapping[str, str] = "ignore",
    blank: str = "zeros",
    views: Sequence[str] | None = ("PA", "AP"),
    lsr_zeros: Sequence[float] = (0.0, 0.3),
    lsr_ones: Sequence[float] = (0.55, 0.85),
    seed: int = 0,
    patients_csv: str | Path | None = None,
) -> LabelTable:
    """One row per image of the metadata file (its order) whose study has a label row, under the CheXpert rules.

    `views`: keep these `ViewPosition` values (`view_mask`: case-insensitive, a blank one never matches); None
    keeps all, blank ones included.
    `frame`: image_id = dicom_id, patient_id = subject_id, path (relative to the dataset folder), view =
    ViewPosition, sex / age from `patients_csv` (NaN without it), no_finding = the study's No Finding == 1,
    and study_id, study_date. Images of studies without a label row are left out (logged with counts).
    """
    labels_csv, metadata_csv = Path(labels_csv), Path(metadata_csv)
    names = select_pathologies(pathologies, CHEXPERT_PATHOLOGIES, "MIMIC-CXR (CheXpert observations)")
    policies = resolve_uncertainty(uncertainty, names)
    ranges = check_label_options(blank, lsr_zeros, lsr_ones)

    meta = read_text_csv(metadata_csv, METADATA_READ, "MIMIC-CXR metadata")
    _unique(meta, ["dicom_id"], metadata_csv)
    studies = read_text_csv(labels_csv, ["subject_id", "study_id", *MIMIC_LABEL_COLUMNS], "MIMIC-CXR label")
    _unique(studies, ["subject_id", "study_id"], labels_csv)
    row_names = "subject_id " + studies["subject_id"] + ", study_id " + studies["study_id"]
    values = parse_label_cells(studies, MIMIC_LABEL_COLUMNS, labels_csv, row_names=row_names)  # (S, 14) per study

    if views is not None:  # the base class's one view rule: a blank ViewPosition never matches
        keep = view_mask(meta["ViewPosition"], views, f"MIMIC-CXR metadata {str(metadata_csv)!r}",
                         column="ViewPosition")
        meta = meta.loc[keep].reset_index(drop=True)

    study_row = pd.MultiIndex.from_frame(studies[["subject_id", "study_id"]]).get_indexer(
        pd.MultiIndex.from_frame(meta[["subject_id", "study_id"]]))  # (N,) label row of each image, -1 none
    unlabelled = study_row < 0
    if unlabelled.any():
        log.info("%d of %d images (%d studies) have no row in %s (the labeller gave their study no label): left out",
                 int(unlabelled.sum()), len(meta), meta.loc[unlabelled, "study_id"].nunique(), labels_csv.name)
        meta, study_row = meta.loc[~unlabelled].reset_index(drop=True), study_row[~unlabelled]
    if meta.empty:
        raise DataError(f"no image of {str(metadata_csv)!r} has a label row in {str(labels_csv)!r}: use the files of "
                        "one MIMIC-CXR-JPG release")
    per_image = values[study_row]  # (N, 14) each image gets its study's labels
    source = per_image[:, [MIMIC_LABEL_COLUMNS.index(n) for n in names]]  # (N, K)
    normal = per_image[:, MIMIC_LABEL_COLUMNS.index(NO_FINDING)] == 1.0  # (N,)
    labels, uncertain = apply_label_rules(source, names, policies, blank, normal, ranges, seed)  # (N, K) each

    subjects = meta["subject_id"]
    sex = pd.Series(np.nan, index=meta.index, dtype="object")
    age = np.full(len(meta), np.nan)  # (N,) years
    if patients_csv is None:
        log.warning("MIMIC-CXR has no sex or age of its own: without data.patients_csv=<MIMIC-IV hosp/patients.csv.gz> "
                    "every image's sex and age are unknown, and the sex and age subgroups hold one group, 'unknown'")
    else:
        patients = read_patients(patients_csv)
        found = subjects.isin(patients.index).to_numpy()
        rows = patients.reindex(subjects)
        sex = pd.Series(rows["gender"].to_numpy(), index=meta.index, dtype="object")
        age = (rows["anchor_age"].to_numpy(dtype=np.float64)
               + study_years(meta["StudyDate"]) - rows["anchor_year"].to_numpy(dtype=np.float64))
        log.info("MIMIC-IV patients %s: sex and age of %d of %d images (%d subjects not in the file: unknown); age = "
                 "anchor_age + StudyDate year - anchor_year", patients_csv, int(found.sum()), len(meta),
                 subjects[~found].nunique())
    view = meta["ViewPosition"]
    frame = pd.DataFrame({
        "image_id": meta["dicom_id"],
        "patient_id": subjects,
        "path": [image_path(s, t, d) for s, t, d in zip(subjects, meta["study_id"], meta["dicom_id"])],
        "view": view.where(view != "", np.nan),
        "age": age,
        "sex": sex,
        "no_finding": normal,
        "study_id": meta["study_id"],
        "study_date": pd.to_numeric(meta["StudyDate"], errors="coerce").astype("Int64"),
    })
    log.info("Read %d MIMIC-CXR images of %d studies and %d patients (%s); uncertainty %s, blank=%s, %d uncertain "
             "cells", len(frame), frame["study_id"].nunique(), frame["patient_id"].nunique(), labels_csv.name,
             dict(zip(names, policies)), blank, int(uncertain.sum()))
    return LabelTable(frame=frame, labels=labels, uncertain=uncertain, pathologies=list(names))


def read_official_split(frame: pd.DataFrame, split_csv: Path) -> np.ndarray:
    """split (N,) from the split file by dicom_id (train / validate / test -> train / val / test).

    An image absent from the file, a split value other than those three, or a dicom_id whose subject / study
    differ from the metadata's -> DataError naming the file, the rows and the fix.
    """
    raw = read_text_csv(split_csv, SPLIT_COLUMNS, "MIMIC-CXR split")
    _unique(raw, ["dicom_id"], split_csv)
    odd = sorted(set(raw["split"]) - set(OFFICIAL_SPLITS))
    if odd:
        raise DataError(f"{str(split_csv)!r}: split values {odd[:5]} are not {list(OFFICIAL_SPLITS)}; use the file as "
                        "PhysioNet ships it, or data.split=random")
    rows = pd.Index(raw["dicom_id"]).get_indexer(frame["image_id"])  # (N,) split-file row of each image
    absent = rows < 0
    if absent.any():
        raise DataError(f"{int(absent.sum())} of {len(frame)} images are not in {str(split_csv)!r} (e.g. "
                        f"{frame['image_id'][absent].head(3).tolist()}); use the split file of the same release, or "
                        "data.split=random for a seeded patient-level split")
    matched = raw.iloc[rows]
    differ = ((matched["subject_id"].to_numpy() != frame["patient_id"].to_numpy())
              | (matched["study_id"].to_numpy() != frame["study_id"].to_numpy()))
    if differ.any():
        raise DataError(f"{str(split_csv)!r} gives {int(differ.sum())} images another subject_id / study_id than "
                        f"the metadata file (e.g. dicom_id {frame['image_id'][differ].iloc[0]!r}); use the files of "
                        "one MIMIC-CXR-JPG release")
    split = matched["split"].map(OFFICIAL_SPLITS).to_numpy().astype("<U5")
    log.info("MIMIC-CXR official split (%s): %s", split_csv.name, {name: int((split == name).sum()) for name in SPLITS})
    return split


@register_dataset("mimic_cxr", findings=CHEXPERT_PATHOLOGIES,
                  left_out="as chexpert: the same 14 columns from the chosen labeller (data.labeler), the same "
                           "data.findings default.")
class MIMIC_CXRData(UncertaintyPolicies, ChestXData):  # noqa: N801
    """MIMIC-CXR-JPG 2.0.0 / 2.1.0 (`data=mimic_cxr`); keys documented in conf/data/mimic_cxr.yaml.

    The class name spells the config name on purpose: chestx names a dataset's `external/<name>/` folder
    (`chestx.evaluate ckpt=...`) and its column in the cross-dataset report by the class name without
    `Data`, lower-cased, and `chestx.train test_data=[mimic_cxr]` by the config key: both are `mimic_cxr`.
    """

    root_hint = "the MIMIC-CXR-JPG folder as PhysioNet ships it (the one holding files/ and mimic-cxr-2.0.0-*.csv.gz)"

    @property
    def label_files(self) -> dict[str, LabelFile]:
        """The chosen labeller's file (one row per study) and the metadata file (one row per image), each also read
        uncompressed (`.csv`); both in data.root."""
        names = {"labels": LABEL_FILE.format(labeler=self.labeler), "metadata": METADATA_FILE}
        return {role: LabelFile((name, name.removesuffix(".gz")), key=None) for role, name in names.items()}

    def __init__(
        self,
        root: str,
        labeler: str = "chexpert",
        split: str = "official",
        views: Sequence[str] | None = ("PA", "AP"),
        patients_csv: str | None = None,
        uncertainty: str | Mapping[str, str] = "ignore",
        blank: str = "zeros",
        findings: str | Sequence[str] = "competition",
        lsr_zeros: Sequence[float] = (0.0, 0.3),
        lsr_ones: Sequence[float] = (0.55, 0.85),
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if labeler not in LABELERS:
            raise DataError(f"data.labeler={labeler!r} is not one of {list(LABELERS)} (the label file "
                            "mimic-cxr-2.0.0-<labeler>.csv.gz)")
        if split not in SPLIT_OPTIONS:
            raise DataError(f"data.split={split!r} is not one of {list(SPLIT_OPTIONS)}")
        self.labeler = labeler
        self.split_name = split
        self.views = None if views is None else [str(v).strip().upper() for v in
                                                 ([views] if isinstance(views, str) else views)]
        self.patients_csv = patients_csv
        self.uncertainty = uncertainty if isinstance(uncertainty, str) else dict(uncertainty)
        self.blank = blank
        self.tasks = chexpert_tasks(findings)
        self.lsr_zeros, self.lsr_ones = tuple(lsr_zeros), tuple(lsr_ones)
        check_label_options(blank, lsr_zeros, lsr_ones)
        resolve_uncertainty(self.uncertainty, self.tasks)  # unknown policies stop now, before any file is read

    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        table = read_mimic_cxr(
            self.label_file("labels"), self.label_file("metadata"), pathologies=self.tasks,
            uncertainty=self.uncertainty, blank=self.blank, views=self.views, lsr_zeros=self.lsr_zeros,
            lsr_ones=self.lsr_ones, seed=self.seed, patients_csv=self.patients_csv,
        )
        if self.split_name == "official":
            return table, read_official_split(table.frame, find_file(self.root, SPLIT_FILE, "data.root"))
        return table, self.make_split(table)
