"""VinDr-CXR: radiologists' labels (Kaggle competition file or PhysioNet release) -> `LabelTable`, boxes, files.

Sources:
- Nguyen et al. 2022, "VinDr-CXR: An open dataset of chest X-rays with radiologist's annotations", Scientific Data
  9:429 (arXiv:2012.15029): 18,000 PA scans, 15,000 training images each read independently by 3 of 17 radiologists,
  3,000 test images labelled by the consensus of 5; 22 local labels (boxes) and 6 global labels.
- PhysioNet release https://physionet.org/content/vindr-cxr/1.0.0/: `annotations/image_labels_train.csv` (one row
  per image and radiologist: `image_id`, `rad_id`, then one 0/1 column per label), `image_labels_test.csv` (one
  consensus row per image, no `rad_id`; its "Other disease" column is "Other diseases" in the training file),
  `annotations/annotations_{train,test}.csv` (boxes), DICOM images `train/<image_id>.dicom`, `test/<image_id>.dicom`.
  `PHYSIONET_LABELS` is the paper's label list in the files' column order (the PhysioNet page gives no header;
  the order and the test file's "Other disease" were checked against public code that reads the release).
- Kaggle "VinBigData Chest X-ray Abnormalities Detection" `train.csv` (torchxrayvision ships it as
  `vinbigdata-train.csv.gz`): one row per radiologist finding, `image_id, class_name, class_id, rad_id, x_min, y_min,
  x_max, y_max`, 14 local labels (class_id 0-13) and "No finding" (class_id 14, blank box); its test labels were
  never released. DICOM images `train/<image_id>.dicom`.
- torchxrayvision `torchxrayvision/datasets.py`, `VinBrain_Dataset`: a label is 1 when any radiologist marked it.

Rules: a finding is 1 when `any` radiologist (torchxrayvision's rule) or a strict `majority` of the image's
radiologists marked it, else 0; the PhysioNet test consensus is taken as given. VinDr has no patient id: each image
is its own patient (the split is image-level). `frame.no_finding` is True where no label of the file is positive
after aggregation. Sex and age are not in the label files (only in the DICOM headers: `dicom_demographics`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from chestx.data.datasets.dicom_meta import parse_dicom_age, read_dicom_headers
from chestx.data.labels.table import (
    NO_FINDING, DataError, DataFileNotFoundError, LabelTable, check_columns, refuse_blank_ids, select_pathologies,
)
from chestx.data.datasets.base import ChestXData, LabelFile
from chestx.data.datasets.image_finders import InFolders
from chestx.data.datasets.registry import Regions, register_dataset

log = logging.getLogger(__name__)

AGGREGATIONS: tuple[str, ...] = ("any", "majority")
LAYOUTS: tuple[str, ...] = ("auto", "kaggle", "physionet")
NO_FINDING_LABEL = "No finding"
# Kaggle class_id 0..13 -> class_name; 14 is "No finding"
KAGGLE_CLASSES: tuple[str, ...] = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD", "Infiltration",
    "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis",
)
KAGGLE_NO_FINDING_ID = 14
KAGGLE_COLUMNS: tuple[str, ...] = ("image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max")
KAGGLE_CSV_NAMES: tuple[str, ...] = ("train.csv", "vinbigdata-train.csv.gz", "vinbigdata-train.csv")
# PhysioNet label columns after image_id (and rad_id): 22 local labels, 5 global diseases, "No finding"
PHYSIONET_LABELS: tuple[str, ...] = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
    "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst",
    "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD", "Lung tumor", "Pneumonia", "Tuberculosis",
    "Other diseases", NO_FINDING_LABEL,
)
PHYSIONET_TRAIN = Path("annotations") / "image_labels_train.csv"
PHYSIONET_TEST = Path("annotations") / "image_labels_test.csv"
PHYSIONET_BOXES = (Path("annotations") / "annotations_train.csv", Path("annotations") / "annotations_test.csv")
# VinDr label name (either release's spelling) -> chestx finding
VINDR_LABELS: dict[str, str] = {
    "Aortic enlargement": "Aortic Enlargement", "Atelectasis": "Atelectasis", "Calcification": "Calcification",
    "Cardiomegaly": "Cardiomegaly", "Clavicle fracture": "Clavicle Fracture", "Consolidation": "Consolidation",
    "Edema": "Edema", "Emphysema": "Emphysema", "Enlarged PA": "Enlarged PA", "ILD": "ILD",
    "Infiltration": "Infiltration", "Lung Opacity": "Lung Opacity", "Lung cavity": "Lung Cavity",
    "Lung cyst": "Lung Cyst", "Mediastinal shift": "Mediastinal Shift", "Nodule/Mass": "Nodule/Mass",
    "Pleural effusion": "Effusion", "Pleural thickening": "Pleural_Thickening", "Pneumothorax": "Pneumothorax",
    "Pulmonary fibrosis": "Fibrosis", "Rib fracture": "Rib Fracture", "Other lesion": "Other Lesion",
    "COPD": "COPD", "Lung tumor": "Lung Tumor", "Pneumonia": "Pneumonia", "Tuberculosis": "Tuberculosis",
    "Other diseases": "Other Diseases", "Other disease": "Other Diseases",
}
VINDR_KAGGLE_FINDINGS: tuple[str, ...] = tuple(VINDR_LABELS[c] for c in KAGGLE_CLASSES)  # labelled by both releases
VINDR_FINDINGS: tuple[str, ...] = tuple(VINDR_LABELS[c] for c in PHYSIONET_LABELS[:-1])  # all 27 (PhysioNet)
VIEW = "PA"  # every VinDr-CXR image is a postero-anterior view (Nguyen et al. 2022)


def _findings(findings: str | Sequence[str], available: Sequence[str]) -> list[str]:
    """data.findings: 'kaggle' (the 14 both releases label), 'all' (every label of the file) or a list."""
    if isinstance(findings, str):
        if findings not in ("kaggle", "all"):
            raise DataError(f"data.findings={findings!r}: use 'kaggle', 'all' or a list of {list(VINDR_FINDINGS)}")
        findings = VINDR_KAGGLE_FINDINGS if findings == "kaggle" else available
    return select_pathologies(findings, available, "VinDr-CXR")


def _aggregate(votes: np.ndarray, known: np.ndarray, aggregation: str) -> np.ndarray:
    """(N, C) positive votes and readers with a value -> 1 / 0 / NaN (no reader gave a value)."""
    positive = votes >= 1 if aggregation == "any" else 2 * votes > known
    out = positive.astype(np.float32)
    out[known == 0] = np.nan
    return out


def _read(csv_path: Path) -> pd.DataFrame:
    if not csv_path.is_file():
        raise DataFileNotFoundError(f"VinDr-CXR label file not found: {str(csv_path)!r}; set data.csv / data.root "
                                    "(Kaggle train.csv, or the PhysioNet folder holding annotations/)")
    try:
        return pd.read_csv(csv_path, dtype={"image_id": str, "rad_id": str, "class_name": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as err:
        raise DataError(f"cannot parse VinDr-CXR label file {str(csv_path)!r}: {err}") from err


def _blank(values: pd.Series) -> pd.Series:
    """(R,) True where a text cell is missing or only spaces."""
    text = values.astype("string").str.strip()
    return (text.isna() | (text == "")).fillna(True).astype(bool)


def _lines(mask: pd.Series) -> list[int]:
    """The first 5 rows of `mask` as 1-based line numbers of the file (header = line 1)."""
    return [int(i) + 2 for i in np.flatnonzero(mask.to_numpy())[:5]]


def _check_class_names(names: pd.Series, known: Sequence[str], csv_path: Path, hint: str) -> None:
    """Stop on blank or unknown class_name values, naming the blank rows and the unknown names (sorted)."""
    blank = _blank(names)
    unknown = sorted(set(names[~blank]) - set(known))
    problems = []
    if unknown:
        problems.append(f"unknown class_name values {unknown} (e.g. row {int(np.flatnonzero(names.isin(unknown))[0])})")
    if blank.any():
        problems.append(f"{int(blank.sum())} rows have a blank class_name (first at lines {_lines(blank)})")
    if problems:
        raise DataError(f"{str(csv_path)!r}: {'; '.join(problems)}; {hint}")


def _kaggle_votes(raw: pd.DataFrame, csv_path: Path) -> tuple[pd.Index, list[str], np.ndarray, np.ndarray]:
    """Kaggle rows -> image ids, label names, (N, C) radiologists marking each label, (N,) radiologists per image."""
    check_columns(raw, KAGGLE_COLUMNS, csv_path, "VinDr-CXR (Kaggle)")
    names = raw["class_name"].astype(str).str.strip()
    expected = {**{n: i for i, n in enumerate(KAGGLE_CLASSES)}, NO_FINDING_LABEL: KAGGLE_NO_FINDING_ID}
    _check_class_names(names, list(expected), csv_path, f"VinDr-CXR's Kaggle classes are {list(expected)}. Use the "
                       "competition's train.csv unchanged")
    wrong_id = pd.to_numeric(raw["class_id"], errors="coerce").to_numpy() != names.map(expected).to_numpy()
    if wrong_id.any():
        row = int(np.flatnonzero(wrong_id)[0])
        raise DataError(f"{str(csv_path)!r}: {int(wrong_id.sum())} rows have a class_id that is not their class_name's "
                        f"(e.g. row {row}: {names.iloc[row]!r} with class_id {raw['class_id'].iloc[row]!r})")
    if raw["image_id"].isna().any() or raw["rad_id"].isna().any():
        row = int(np.flatnonzero(raw["image_id"].isna() | raw["rad_id"].isna())[0])
        raise DataError(f"{str(csv_path)!r}: blank image_id or rad_id (e.g. row {row}); every finding names both")
    images = pd.Index(pd.unique(raw["image_id"].astype(str)))
    label_names = [*KAGGLE_CLASSES, NO_FINDING_LABEL]
    marks = pd.DataFrame({"image": images.get_indexer(raw["image_id"].astype(str)),
                          "label": names.map({n: i for i, n in enumerate(label_names)}).to_numpy(),
                          "rad": raw["rad_id"].astype(str)}).drop_duplicates()  # several boxes of one reader: one vote
    votes = np.zeros((len(images), len(label_names)), dtype=np.float64)  # (N, C)
    np.add.at(votes, (marks["image"].to_numpy(), marks["label"].to_numpy()), 1.0)
    readers = marks.groupby("image")["rad"].nunique().reindex(range(len(images))).to_numpy(np.float64)  # (N,)
    return images, label_names, votes, readers


def _physionet_frame(raw: pd.DataFrame, csv_path: Path) -> tuple[list[str], np.ndarray]:
    """PhysioNet label columns (checked) and their (R, C) values 1 / 0 / NaN."""
    columns = [c for c in raw.columns if c not in ("image_id", "rad_id")]
    unknown = [c for c in columns if c not in VINDR_LABELS and c != NO_FINDING_LABEL]
    if unknown or "image_id" not in raw.columns:
        raise DataError(f"{str(csv_path)!r}: not a VinDr-CXR image_labels file: unknown columns {unknown}; expected "
                        f"image_id, [rad_id,] then {list(PHYSIONET_LABELS)} (PhysioNet annotations/image_labels_*.csv)")
    spelled = {("Other diseases" if c == "Other disease" else c) for c in columns}  # the test file's spelling
    absent = [c for c in PHYSIONET_LABELS if c not in spelled]
    if absent:
        raise DataError(f"{str(csv_path)!r} lacks label columns {absent}; use the PhysioNet file unchanged")
    values = raw[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)  # (R, C)
    bad = (~np.isnan(values) & ~np.isin(values, (0.0, 1.0))) | (np.isnan(values) & raw[columns].notna().to_numpy())
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{str(csv_path)!r}: {int(bad.sum())} label cells are not 0 / 1, e.g. {columns[c]!r}="
                        f"{raw[columns[c]].iloc[r]!r} in row {r} (image {raw['image_id'].iloc[r]})")
    if np.isnan(values).any():
        log.warning("%s: %d blank label cells are unknown (NaN)", csv_path, int(np.isnan(values).sum()))
    return columns, values


def read_vindr(
    csv_path: str | Path,
    findings: str | Sequence[str] = "kaggle",
    aggregation: str = "any",
    image_folder: str = "train",
) -> LabelTable:
    """Read a VinDr-CXR label file into a LabelTable; its layout is recognised from its columns.

    Kaggle `train.csv` (class_name per row) and PhysioNet `image_labels_train.csv` (rad_id column): one row per image,
    labels aggregated over its radiologists by `aggregation` ("any" / "majority"). PhysioNet `image_labels_test.csv`
    (no rad_id): the consensus, as given. `findings`: "kaggle" (the 14 local labels of the competition), "all" (every
    label of the file: 14 for Kaggle, 27 for PhysioNet) or a list of chestx names (`VINDR_LABELS` values).
    `frame.path` is `<image_folder>/<image_id>.dicom`. Labels are never uncertain.
    """
    csv_path = Path(csv_path).expanduser()
    if aggregation not in AGGREGATIONS:
        raise DataError(f"data.aggregation={aggregation!r} is not one of {list(AGGREGATIONS)}")
    raw = _read(csv_path)
    if "image_id" not in raw.columns:
        raise DataError(f"{str(csv_path)!r} has no image_id column (found {list(raw.columns)[:8]}): not a VinDr-CXR "
                        "label file (Kaggle train.csv or PhysioNet annotations/image_labels_{train,test}.csv)")
    if "class_name" in raw.columns:
        layout = "Kaggle train.csv"
        images, label_names, votes, readers = _kaggle_votes(raw, csv_path)
        known = np.repeat(readers[:, None], len(label_names), axis=1)  # every reader says yes or no to every class
        labels = _aggregate(votes, known, aggregation)
    else:
        columns, values = _physionet_frame(raw, csv_path)
        label_names = [("Other diseases" if c == "Other disease" else c) for c in columns]
        ids = raw["image_id"].astype(str).str.strip()
        id_columns = [c for c in ("image_id", "rad_id") if c in raw.columns]
        blank = pd.concat([_blank(raw[c]) for c in id_columns], axis=1).any(axis=1)
        if blank.any():  # groupby would drop such rows silently, a consensus row would become image "nan"
            raise DataError(f"{str(csv_path)!r}: {int(blank.sum())} rows have a blank {' or '.join(id_columns)} "
                            f"(first at lines {_lines(blank)}); every row names its image"
                            f"{' and radiologist' if 'rad_id' in raw.columns else ''}: use the PhysioNet file "
                            "unchanged")
        if "rad_id" in raw.columns:
            layout = "PhysioNet per-radiologist labels"
            twice = raw.assign(image_id=ids).duplicated(["image_id", "rad_id"])
            if twice.any():
                raise DataError(f"{str(csv_path)!r}: {int(twice.sum())} (image_id, rad_id) pairs appear twice "
                                f"(e.g. {ids[twice].iloc[0]}); each radiologist reads an image once")
            grouped = pd.DataFrame(values, columns=label_names).groupby(ids.to_numpy(), sort=False)
            images = pd.Index(grouped.size().index)
            votes = grouped.sum(min_count=1).fillna(0.0).to_numpy()  # (N, C)
            known = grouped.count().to_numpy(dtype=np.float64)  # (N, C) readers with a value
            readers = grouped.size().to_numpy(dtype=np.float64)
            labels = _aggregate(votes, known, aggregation)
        else:
            layout = "PhysioNet test consensus"
            if ids.duplicated().any():
                raise DataError(f"{str(csv_path)!r}: image ids appear twice (e.g. {ids[ids.duplicated()].iloc[0]}) in "
                                "a consensus file (one row per image)")
            images, labels, readers = pd.Index(ids), values.astype(np.float32), np.full(len(ids), np.nan)
            log.info("%s: the test consensus of 5 radiologists, taken as given (data.aggregation does not apply)",
                     csv_path)
    finding_of = [VINDR_LABELS.get(n) for n in label_names]  # None: "No finding"
    available = [f for f in finding_of if f is not None]
    names = _findings(findings, available)
    source = [finding_of.index(name) for name in names]
    labels_only = [i for i, f in enumerate(finding_of) if f is not None]
    normal = (labels[:, labels_only] == 0).all(axis=1)  # (N,) no label of the file is positive (or unknown)
    if NO_FINDING_LABEL in label_names and "rad_id" not in raw.columns and "class_name" not in raw.columns:
        given = labels[:, label_names.index(NO_FINDING_LABEL)] == 1
        if (given != normal).any():
            log.warning("%s: 'No finding' disagrees with the labels on %d images; frame.no_finding follows the labels",
                        csv_path, int((given != normal).sum()))
    frame = pd.DataFrame({
        "image_id": images.astype(str), "patient_id": images.astype(str),  # no patient id in VinDr-CXR
        "path": [f"{image_folder}/{i}.dicom" for i in images], "view": VIEW,
        "age": np.full(len(images), np.nan), "sex": np.full(len(images), np.nan, dtype=object),
        "readers": readers, "no_finding": normal,
    })
    log.info("Read %d VinDr-CXR images from %s (%s; aggregation=%s, %d findings); no patient id: each image is its "
             "own patient", len(frame), csv_path, layout, aggregation if "consensus" not in layout else "consensus",
             len(names))
    return LabelTable(frame=frame, labels=labels[:, source].astype(np.float32),
                      uncertain=np.zeros((len(frame), len(names)), dtype=bool), pathologies=names)


def read_vindr_boxes(csv_path: str | Path) -> pd.DataFrame:
    """Radiologists' boxes: image_id, rad_id, pathology (chestx name), class_name, x_min, y_min, x_max, y_max.

    From the Kaggle train.csv or PhysioNet annotations_{train,test}.csv; pixel coordinates of the original DICOM
    image (x to the right, y down). "No finding" rows carry no box and are skipped; one row per box, so an image
    read by 3 radiologists can have 3 boxes of one finding (the pointing game counts a hit in any of them).
    """
    csv_path = Path(csv_path).expanduser()
    raw = _read(csv_path)
    check_columns(raw, ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max"), csv_path, "VinDr-CXR boxes")
    names = raw["class_name"].astype(str).str.strip()
    _check_class_names(names, [*VINDR_LABELS, NO_FINDING_LABEL], csv_path, f"known: {sorted(VINDR_LABELS)}")
    coords = raw[["x_min", "y_min", "x_max", "y_max"]].apply(pd.to_numeric, errors="coerce")
    finding = names != NO_FINDING_LABEL
    blank = finding & coords.isna().any(axis=1)
    if blank.any():
        log.warning("%s: %d finding rows without a complete box are skipped (e.g. row %d)", csv_path,
                    int(blank.sum()), int(np.flatnonzero(blank)[0]))
    keep = (finding & ~blank).to_numpy()
    out = pd.DataFrame({
        "image_id": raw["image_id"].astype(str).str.strip(),
        "rad_id": raw["rad_id"].astype(str) if "rad_id" in raw.columns else "consensus",
        "pathology": names.map(VINDR_LABELS), "class_name": names,
    }).join(coords)[keep].reset_index(drop=True)
    reversed_box = (out["x_max"] <= out["x_min"]) | (out["y_max"] <= out["y_min"])
    if reversed_box.any():
        raise DataError(f"{str(csv_path)!r}: {int(reversed_box.sum())} boxes have x_max <= x_min or y_max <= y_min "
                        f"(e.g. image {out['image_id'][reversed_box].iloc[0]})")
    log.info("Read %d VinDr-CXR boxes of %d images from %s (%d 'No finding' rows without a box)", len(out),
             out["image_id"].nunique(), csv_path, int((~finding).sum()))
    return out


def read_vindr_regions(path: str | Path) -> pd.DataFrame:
    """`read_vindr_boxes` as the pointing game reads boxes: image_id, pathology, x, y, w, h (each image's pixels);
    a blank image_id -> DataError naming the file and lines."""
    refuse_blank_ids(path, "image_id", "VinDr-CXR file")
    boxes = read_vindr_boxes(path)
    return pd.DataFrame({"image_id": boxes["image_id"], "pathology": boxes["pathology"], "x": boxes["x_min"],
                         "y": boxes["y_min"], "w": boxes["x_max"] - boxes["x_min"],
                         "h": boxes["y_max"] - boxes["y_min"]})


def _left_out() -> str:
    unmapped = ", ".join(f"`{label}`" for label in PHYSIONET_LABELS if label not in VINDR_LABELS)
    physionet_only = [f for f in VINDR_FINDINGS if f not in VINDR_KAGGLE_FINDINGS]
    return (f"{unmapped} is not a finding: it is No Finding (never shared). With data.findings=kaggle (the default: "
            f"the 14 labels both releases have) the {len(physionet_only)} labels only the PhysioNet release has are "
            f"left out: {', '.join(f'`{f}`' for f in physionet_only)} (data.findings=all reads them from the "
            "PhysioNet layout).")


@register_dataset(
    "vindr_cxr", findings=(*VINDR_FINDINGS, NO_FINDING), left_out=_left_out,
    regions=Regions("box", frozenset({"image_id", "class_name", "x_min", "y_min", "x_max", "y_max"}),
                    read_vindr_regions, float("nan"), "VinDr-CXR train.csv / annotations_*.csv"),
)
class VinDrData(ChestXData):
    """VinDr-CXR from its Kaggle layout (`train.csv`, `train/*.dicom`) or PhysioNet layout (`annotations/`,
    `train/`, `test/`); `layout=auto` recognises the folder.

    Kaggle: no test labels, so the image-level random split by `ratios` (seeded) makes all three splits.
    PhysioNet: the official test split is `image_labels_test.csv`; validation is `val_fraction` of the training
    images (seeded). Each image is its own patient (VinDr has no patient id).
    """

    # frame.path is <train|test>/<image_id>.dicom: in that folder of data.root (as both releases ship), else in root
    images = InFolders(lambda data, folder: [data.root / folder, data.root])

    def __init__(
        self,
        root: str,
        layout: str = "auto",
        csv: str | None = None,
        findings: str | Sequence[str] = "kaggle",
        aggregation: str = "any",
        dicom_demographics: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if layout not in LAYOUTS:
            raise DataError(f"data.layout={layout!r} is not one of {list(LAYOUTS)}")
        if aggregation not in AGGREGATIONS:
            raise DataError(f"data.aggregation={aggregation!r} is not one of {list(AGGREGATIONS)}")
        self.layout_option = layout
        self.csv = csv
        self.findings = findings if isinstance(findings, str) else list(findings)
        self.aggregation = aggregation
        self.dicom_demographics = dicom_demographics

    @property
    def layout(self) -> str:
        """'kaggle' or 'physionet': data.layout, or what the folder holds."""
        if self.layout_option != "auto":
            return self.layout_option
        if (self.root / PHYSIONET_TRAIN).is_file():
            return "physionet"
        if self.csv or any((self.root / name).is_file() for name in KAGGLE_CSV_NAMES):
            return "kaggle"
        raise DataError(f"data.root={str(self.root)!r} holds neither {PHYSIONET_TRAIN} (PhysioNet) nor one of "
                        f"{list(KAGGLE_CSV_NAMES)} (Kaggle); point data.root at the VinDr-CXR folder or set data.csv")

    @property
    def label_files(self) -> dict[str, LabelFile]:
        """Kaggle: the competition's train.csv (data.csv); PhysioNet: the training and test label files."""
        if self.layout == "kaggle":
            return {"labels": LabelFile(KAGGLE_CSV_NAMES, key="csv")}
        return {"train": LabelFile((str(PHYSIONET_TRAIN),), key=None),
                "test": LabelFile((str(PHYSIONET_TEST),), key=None)}

    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        if self.layout == "kaggle":
            table = read_vindr(self.label_file(), self.findings, self.aggregation)
            log.info("VinDr-CXR Kaggle layout: its test labels were never released, so train / val / test are an "
                     "image-level random split of train.csv (ratios %s, seed %d)", self.ratios, self.seed)
            split = self.make_split(table)
        else:
            train = read_vindr(self.label_file("train"), self.findings, self.aggregation, image_folder="train")
            test = read_vindr(self.label_file("test"), self.findings, image_folder="test")
            table, split = self.carve_validation(train, test)
        if self.dicom_demographics:
            table = self._with_demographics(table)
        return table, split

    def _with_demographics(self, table: LabelTable) -> LabelTable:
        paths, missing = self.resolve_paths(table)
        headers = read_dicom_headers(paths)  # PatientSex (0010,0040), PatientAge (0010,1010): kept by VinDr's
        sex = headers["sex"].astype(object).to_numpy()  # de-identification (vindr-cxr repository, tags.csv)
        age = parse_dicom_age(headers["age"], "VinDr-CXR DICOM headers")
        log.info("VinDr-CXR demographics from DICOM headers: sex known for %d, age for %d of %d images (%d files "
                 "missing)", int(pd.notna(sex).sum()), int(np.isfinite(age).sum()), len(paths), len(missing))
        frame = table.frame.assign(sex=sex, age=age)
        return LabelTable(frame=frame, labels=table.labels, uncertain=table.uncertain, pathologies=table.pathologies)

    def boxes(self) -> pd.DataFrame:
        """The radiologists' boxes of this layout's label files (`read_vindr_boxes`), for the pointing game."""
        if self.layout == "kaggle":
            return read_vindr_boxes(self.label_file())
        files = [self.root / p for p in PHYSIONET_BOXES if (self.root / p).is_file()]
        if not files:
            raise DataFileNotFoundError(f"no {[str(p) for p in PHYSIONET_BOXES]} under data.root={str(self.root)!r}")
        return pd.concat([read_vindr_boxes(f) for f in files], ignore_index=True)
