"""RSNA Pneumonia Detection Challenge (Kaggle 2018, stage 2): label file, detailed classes, boxes -> `LabelTable`.

Sources: Shih et al. 2019, "Augmenting the NIH chest radiograph dataset with expert annotations of possible
pneumonia", Radiology: AI (doi:10.1148/ryai.2019180041); the competition's data page
(kaggle.com/c/rsna-pneumonia-detection-challenge/data); torchxrayvision `datasets.py`, `RSNA_Pneumonia_Dataset`.

Files, as Kaggle ships them under `data.root`:
    stage_2_train_labels.csv          patientId,x,y,width,height,Target: one row per box (1024 px coordinates),
                                      one row with blank box and Target 0 for an image without (the `.zip` the
                                      lab downloads is read as it is)
    stage_2_detailed_class_info.csv   patientId,class: "Lung Opacity" | "No Lung Opacity / Not Normal" | "Normal"
                                      (optional; one row per label-file row)
    stage_2_train_images/<patientId>.dcm
Each patientId is one image (26,684 in stage 2): the id is per image, not per person, so the random split
is per image. Sex, age and view are read from the DICOM headers (`chestx.data.datasets.dicom_meta`), or from a CSV
dump of them (`data.headers`, e.g. torchxrayvision's `kaggle_stage_2_train_images_dicom_headers.csv.gz`).

Findings (`findings`): `Pneumonia` and `Lung Opacity` are both `Target` (an image with any box: "lung opacity
suspicious for pneumonia", the competition's positive class); `No Finding` is the detailed class `Normal` and
needs the detailed file. `frame.no_finding` is that class too (all False without the file).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from chestx.data.datasets.dicom_meta import parse_dicom_age, read_dicom_headers, read_header_csv
from chestx.data.datasets.image_finders import ByIndex, index_folder
from chestx.data.labels.table import NO_FINDING, DataError, DataFileNotFoundError, LabelTable, read_label_csv
from chestx.data.datasets.base import ChestXData, LabelFile
from chestx.data.datasets.registry import NIH_CXR14_ANONYMISED, Regions, register_dataset

log = logging.getLogger(__name__)

RSNA_COLUMNS: tuple[str, ...] = ("patientId", "x", "y", "width", "height", "Target")
RSNA_DETAILED_COLUMNS: tuple[str, ...] = ("patientId", "class")
RSNA_CLASSES: tuple[str, ...] = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
RSNA_FINDINGS: tuple[str, ...] = ("Pneumonia", "Lung Opacity", NO_FINDING)  # what `findings` may list
RSNA_LABEL_FILES: tuple[str, ...] = ("stage_2_train_labels.csv", "stage_2_train_labels.csv.zip",
                                     "kaggle_stage_2_train_labels.csv.zip")
RSNA_DETAILED_FILE = "stage_2_detailed_class_info.csv"
RSNA_IMAGE_DIR = "stage_2_train_images"
RSNA_BOX_SIZE = 1024  # boxes are in the coordinates of the 1024 x 1024 DICOM images
BOX = ["x", "y", "width", "height"]


def _rows(ids: pd.Series, bad: np.ndarray, n: int = 3) -> list[str]:
    """First label-file rows (2-based line numbers, header = 1) and ids where `bad` holds."""
    where = np.flatnonzero(bad)[:n]
    return [f"line {i + 2} ({ids.iloc[i]})" for i in where]


def read_rsna_rows(csv_path: str | Path) -> pd.DataFrame:
    """The label file's rows, checked: patientId present, Target 0/1, boxes exactly on Target-1 rows,
    one Target per patientId. DataError naming the file, lines and ids otherwise."""
    path = Path(csv_path).expanduser()
    raw = read_label_csv(path, RSNA_COLUMNS, "RSNA Pneumonia", dtype={"patientId": str})
    ids = raw["patientId"].str.strip()
    if ids.isna().any() or (ids == "").any():
        bad = (ids.isna() | (ids == "")).to_numpy()
        raise DataError(f"{str(path)!r}: {int(bad.sum())} rows have no patientId ({_rows(ids, bad)})")
    target = pd.to_numeric(raw["Target"], errors="coerce")
    bad = ~target.isin([0, 1]).to_numpy()
    if bad.any():
        raise DataError(f"{str(path)!r}: 'Target' must be 0 or 1; {int(bad.sum())} rows are not "
                        f"({_rows(ids, bad)}: {raw['Target'][bad].head(3).tolist()})")
    boxes = raw[BOX].apply(pd.to_numeric, errors="coerce")
    has_box = boxes.notna().all(axis=1).to_numpy()
    partial = boxes.notna().any(axis=1).to_numpy() & ~has_box
    wrong = partial | (has_box != (target == 1).to_numpy())
    if wrong.any():
        raise DataError(
            f"{str(path)!r}: {int(wrong.sum())} rows break the RSNA rule 'a box (x, y, width, height) on every "
            f"Target 1 row and on no Target 0 row' ({_rows(ids, wrong)}); use the competition's file unchanged"
        )
    rows = pd.DataFrame({"patient_id": ids, "target": target.astype(np.int64)}).join(boxes)
    mixed = rows.groupby("patient_id", sort=False)["target"].nunique() > 1
    if mixed.any():
        raise DataError(f"{str(path)!r}: patientIds {mixed.index[mixed][:3].tolist()} have rows with Target 0 and 1; "
                        "each image has one Target")
    return rows


def read_rsna_detailed(csv_path: str | Path, patient_ids: pd.Index) -> pd.Series:
    """Detailed class of each patientId (aligned with `patient_ids`) from stage_2_detailed_class_info.csv."""
    path = Path(csv_path).expanduser()
    raw = read_label_csv(path, RSNA_DETAILED_COLUMNS, "RSNA detailed class", dtype=str)
    ids, classes = raw["patientId"].str.strip(), raw["class"].str.strip()
    unknown = ~classes.isin(RSNA_CLASSES).to_numpy()
    if unknown.any():
        raise DataError(f"{str(path)!r}: unknown classes {sorted(classes[unknown].fillna('<blank>').unique())[:5]} "
                        f"({_rows(ids, unknown)}); the classes are {list(RSNA_CLASSES)}")
    per_patient = pd.DataFrame({"id": ids, "cls": classes}).drop_duplicates()
    twice = per_patient["id"].duplicated()
    if twice.any():
        raise DataError(f"{str(path)!r}: patientIds {per_patient['id'][twice].head(3).tolist()} have two classes")
    aligned = per_patient.set_index("id")["cls"].reindex(patient_ids)
    if aligned.isna().any():
        raise DataError(f"{str(path)!r} has no class for {int(aligned.isna().sum())} patientIds of the label file "
                        f"(first: {aligned.index[aligned.isna()][:3].tolist()}); use the file of the same stage")
    return aligned


def read_rsna(
    csv_path: str | Path,
    findings: Sequence[str] = ("Pneumonia",),
    detailed_csv: str | Path | None = None,
    image_dir: str = RSNA_IMAGE_DIR,
    extension: str = ".dcm",
) -> LabelTable:
    """RSNA's label file -> one row per image (patientId, in first-appearance order), labels of `findings`.

    `sex`, `age`, `view` are left unknown here (`RSNAPneumoniaData` fills them from the DICOM headers).
    Frame extras: `target` (0/1), `n_boxes`, `detailed_class` (NaN without the detailed file).
    """
    findings = list(findings)
    unknown = [f for f in findings if f not in RSNA_FINDINGS]
    if unknown or not findings or len(set(findings)) < len(findings):
        raise DataError(f"data.findings={findings}: list each at most once, from {list(RSNA_FINDINGS)}")
    rows = read_rsna_rows(csv_path)
    per = rows.groupby("patient_id", sort=False).agg(target=("target", "first"), n_boxes=("x", "count"))  # (N, 2)
    detailed = None
    if detailed_csv is not None:
        detailed = read_rsna_detailed(detailed_csv, per.index)
        opacity = (detailed == "Lung Opacity").to_numpy()
        disagree = opacity != (per["target"] == 1).to_numpy()
        if disagree.any():
            raise DataError(f"{str(detailed_csv)!r}: class 'Lung Opacity' must be exactly the Target 1 images of "
                            f"{str(csv_path)!r}; {int(disagree.sum())} images disagree "
                            f"(first: {per.index[disagree][:3].tolist()})")
    elif NO_FINDING in findings:
        raise DataFileNotFoundError(
            f"data.findings includes {NO_FINDING!r} (the detailed class 'Normal'), which needs "
            f"{RSNA_DETAILED_FILE}; put it in data.root or set data.detailed_csv=<its path>")
    target = per["target"].to_numpy(dtype=np.float32)  # (N,)
    normal = (detailed == "Normal").to_numpy() if detailed is not None else np.zeros(len(per), dtype=bool)
    columns = {"Pneumonia": target, "Lung Opacity": target, NO_FINDING: normal.astype(np.float32)}
    labels = np.stack([columns[f] for f in findings], axis=1).astype(np.float32)  # (N, K)
    ids = per.index.to_series(index=range(len(per)))
    frame = pd.DataFrame({
        "image_id": ids,
        "patient_id": ids,
        "path": image_dir + "/" + ids + extension,
        "view": pd.Series(np.nan, index=ids.index, dtype="str"),
        "age": np.full(len(per), np.nan),
        "sex": pd.Series(np.nan, index=ids.index, dtype="str"),
        "no_finding": normal,
        "target": per["target"].to_numpy(),
        "n_boxes": per["n_boxes"].to_numpy(),
        "detailed_class": detailed.to_numpy() if detailed is not None else np.full(len(per), np.nan),
    })
    log.info("Read %d RSNA images from %s: %d with Target 1 (%d boxes)%s", len(frame), csv_path, int(target.sum()),
             int(per["n_boxes"].sum()), "" if detailed is None else
             f"; detailed classes {detailed.value_counts().to_dict()}")
    return LabelTable(frame=frame, labels=labels, uncertain=np.zeros(labels.shape, dtype=bool), pathologies=findings)


def read_rsna_boxes(
    csv_path: str | Path, pathologies: Sequence[str] = ("Pneumonia", "Lung Opacity"), extension: str = ".dcm"
) -> pd.DataFrame:
    """RSNA boxes in the pointing game's format (`chestx.explain.pointing_game.read_bbox_list`): image_id (the
    image file name, `<patientId><extension>`, which is what the pointing game matches), pathology, x, y, w, h in
    1024 px coordinates; each box once per name in `pathologies` (the boxes mark Target, i.e. both names)."""
    rows = read_rsna_rows(csv_path)
    boxed = rows[rows["target"] == 1]
    parts = [pd.DataFrame({"image_id": boxed["patient_id"] + extension, "pathology": name, "x": boxed["x"],
                           "y": boxed["y"], "w": boxed["width"], "h": boxed["height"]}) for name in pathologies]
    return pd.concat(parts, ignore_index=True)


# ------------------------------------------------------------------------------------------- data= config


def _left_out() -> str:
    positive, normal = RSNA_CLASSES[0], RSNA_CLASSES[-1]  # "Lung Opacity" -> Target, "Normal" -> No Finding
    other = ", ".join(f"`{c}`" for c in RSNA_CLASSES if c not in (positive, normal))
    return (f"the detailed class {other}: abnormal, but without an opacity suspicious for pneumonia; what is "
            "abnormal is not named, so no finding can hold it. Those images are 0 for Pneumonia and Lung Opacity "
            f"(`Target` 0) and not No Finding (the class `{normal}`). The default data.findings=[Pneumonia] reads one "
            "column of the three.")


@register_dataset(
    "rsna_pneumonia", findings=RSNA_FINDINGS, left_out=_left_out,
    image_pool=NIH_CXR14_ANONYMISED,  # NIH images re-issued as DICOM, new patientId per image
    regions=Regions("box", frozenset({"patientId", "Target"}), read_rsna_boxes, float(RSNA_BOX_SIZE),
                    "RSNA stage_2_train_labels.csv"),
)
class RSNAPneumoniaData(ChestXData):
    """RSNA Pneumonia Detection (stage 2 train set) as Kaggle ships it; a patient-level random split.

    The competition's test labels were never released, so train / val / test are drawn from the 26,684
    labelled images (`ratios`, seeded by `seed`).
    """

    label_files = {"labels": LabelFile(RSNA_LABEL_FILES, key="csv"),
                   "detailed": LabelFile((RSNA_DETAILED_FILE,), key="detailed_csv", required=False)}
    images = ByIndex(lambda data: index_folder(data.root / data.image_dir, data.extension))  # patientId -> file

    def __init__(
        self,
        root: str,
        csv: str | None = None,
        detailed_csv: str | None = None,
        image_dir: str = RSNA_IMAGE_DIR,
        extension: str = ".dcm",
        headers: str | None = None,
        findings: Sequence[str] = ("Pneumonia",),
        views: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        self.csv = csv
        self.detailed_csv = detailed_csv
        self.image_dir = image_dir
        self.extension = extension
        self.headers = headers
        self.findings = [findings] if isinstance(findings, str) else list(findings)
        self.views = [views] if isinstance(views, str) else (list(views) if views else None)
        self._headers: pd.DataFrame | None = None  # read once: labels_only() and prepare() both load the table

    def _detailed_file(self) -> Path | None:
        path = self.label_file("detailed")
        if path is None:
            log.info("No %s in data.root: detailed classes unknown (frame.no_finding all False)", RSNA_DETAILED_FILE)
        return path

    def _metadata(self, ids: pd.Series) -> pd.DataFrame:
        """sex / age / view (and the header's PatientID) per image: header CSV, else DICOM headers of present files."""
        if self._headers is None or len(self._headers) != len(ids):
            self._headers = self._read_metadata(ids)
        return self._headers

    def _read_metadata(self, ids: pd.Series) -> pd.DataFrame:
        if self.headers:
            return read_header_csv(self.headers, "PatientID", ids, "RSNA")
        if self.extension.lower() != ".dcm":
            log.warning("data.extension=%s: no DICOM headers to read, sex / age / view unknown (set data.headers "
                        "to a header CSV)", self.extension)
            return read_dicom_headers([None] * len(ids))
        files = self.image_index()
        return read_dicom_headers([files.get(i) for i in ids])

    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        table = read_rsna(self.label_file(), self.findings, self._detailed_file(), self.image_dir, self.extension)
        meta = self._metadata(table.frame["image_id"])
        known = meta["dicom_patient_id"].notna().to_numpy()
        differ = known & (meta["dicom_patient_id"].to_numpy() != table.frame["image_id"].to_numpy())
        if differ.any():
            raise DataError(f"{int(differ.sum())} RSNA images have a DICOM PatientID other than their file name "
                            f"(first: {table.frame['image_id'][differ].head(3).tolist()}); the image folder "
                            "data.image_dir must hold the competition's files named <patientId>.dcm")
        frame = table.frame.assign(sex=meta["sex"].to_numpy(), view=meta["view"].to_numpy(),
                                   age=parse_dicom_age(meta["age"], "RSNA"))
        table = LabelTable(frame=frame, labels=table.labels, uncertain=table.uncertain,
                           pathologies=table.pathologies)
        table = self.keep_views(table, self.views, column="ViewPosition", unknown="error", what="RSNA", fix=(
            " (image file or header missing); provide the images (or data.headers=<header CSV>)"))
        return table, self.make_split(table)
