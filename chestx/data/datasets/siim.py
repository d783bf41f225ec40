"""SIIM-ACR Pneumothorax Segmentation (Kaggle 2019): `train-rle.csv` -> `LabelTable`, run-length masks, DICOM tree.

Sources: the competition's data page and its `mask_functions.py` (`rle2mask`, `mask2rle`),
kaggle.com/c/siim-acr-pneumothorax-segmentation; torchxrayvision `datasets.py`, `SIIM_Pneumothorax_Dataset`
(which copies `rle2mask`).

Files, as the competition's download gives them under `data.root`:
    train-rle.csv          header `ImageId, EncodedPixels` (the second name starts with a space); one row per
                           pneumothorax region, several rows for an image with several; `-1` = no pneumothorax
    dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm     ImageId = SOPInstanceUID
Label rule: Pneumothorax = 1 when any of the image's rows is a mask, 0 when its rows are `-1`.

Run-length encoding (`rle2mask`): the tokens are pairs (gap, length) over the 1024 x 1024 image read column by
column (pixel index = column * 1024 + row, i.e. `mask.reshape(width, height).T`); each run starts `gap` pixels
after the end of the previous run (the first after pixel 0), a "relative" encoding, not the absolute starts of
the later, standard Kaggle RLE. `rle_decode` is `rle2mask(...).T` as a bool (H, W) array, vectorised.

Patients: the file has no patient id and the competition's images carry an anonymised per-image PatientID,
so by default each image is its own patient (`patient_ids: image`); `patient_ids: dicom` groups images by the
headers' PatientID instead (every image file must then be present).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from chestx.data.datasets.dicom_meta import parse_dicom_age, read_dicom_headers
from chestx.data.datasets.image_finders import ByIndex, index_dicom_files
from chestx.data.labels.table import DataError, DataFileNotFoundError, LabelTable, check_columns
from chestx.data.datasets.base import ChestXData, LabelFile
from chestx.data.datasets.registry import NIH_CXR14_ANONYMISED, Regions, register_dataset

log = logging.getLogger(__name__)

SIIM_PATHOLOGY = "Pneumothorax"
SIIM_LABEL_FILES: tuple[str, ...] = ("train-rle.csv", "siim-pneumothorax-train-rle.csv.gz")
SIIM_IMAGE_DIR = "dicom-images-train"
SIIM_SIZE = 1024  # masks are on the 1024 x 1024 grid of the DICOM images
NO_MASK = "-1"
PATIENT_ID_SOURCES = ("image", "dicom")


def rle_decode(rle: str, height: int = SIIM_SIZE, width: int = SIIM_SIZE) -> np.ndarray:
    """SIIM's relative run-length string -> (height, width) bool mask; "-1" -> all False.

    ValueError when the tokens are not an even number of non-negative integers, a run has length 0, or the
    runs end beyond the image (e.g. an absolute-start RLE read as relative).
    """
    text = str(rle).strip()
    if text == NO_MASK:
        return np.zeros((height, width), dtype=bool)
    try:
        values = np.array(text.split(), dtype=np.int64)  # (2R,)
    except ValueError as err:
        raise ValueError(f"run-length string is not integers: {text[:40]!r}") from err
    if values.size == 0 or values.size % 2 or (values < 0).any():
        raise ValueError(f"run-length string must be pairs of non-negative integers (gap, length); got "
                         f"{values.size} numbers: {text[:40]!r}")
    gaps, lengths = values[0::2], values[1::2]  # (R,)
    if (lengths == 0).any():
        raise ValueError(f"run-length string has a run of length 0: {text[:40]!r}")
    ends = np.cumsum(gaps + lengths)  # (R,) exclusive end of each run
    if ends[-1] > height * width:
        raise ValueError(f"runs end at pixel {int(ends[-1])}, beyond the {height} x {width} image: not SIIM's "
                         "relative encoding (gap after the previous run, length)")
    starts = ends - lengths  # (R,)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # (P,) within a run
    flat = np.zeros(height * width, dtype=bool)  # (H * W,) column-major
    flat[np.repeat(starts, lengths) + offsets] = True
    return flat.reshape(width, height).T  # (H, W)


def read_siim_rows(csv_path: str | Path) -> pd.DataFrame:
    """`train-rle.csv` rows, checked: image_id, encoded (stripped text), one row per file row.

    Column names are matched after stripping spaces (the file's ` EncodedPixels`); a blank cell, or a value that
    is neither `-1` nor pairs of integers -> DataError naming the file, lines and image ids.
    """
    path = Path(csv_path).expanduser()
    if not path.is_file():
        raise DataFileNotFoundError(f"SIIM label file not found: {str(path)!r}; point data.csv at train-rle.csv "
                                    "(or data.root at the folder that holds it)")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot parse SIIM label file {str(path)!r}: {err}") from err
    raw.columns = [str(c).strip() for c in raw.columns]
    check_columns(raw, ["ImageId", "EncodedPixels"], path, "SIIM-ACR (train-rle.csv, header 'ImageId, EncodedPixels')")
    ids, encoded = raw["ImageId"].str.strip(), raw["EncodedPixels"].str.strip()
    blank = ((ids == "") | (encoded == "")).to_numpy()
    if blank.any():
        lines = [f"line {i + 2} ({ids.iloc[i] or '<no ImageId>'})" for i in np.flatnonzero(blank)[:3]]
        raise DataError(f"{str(path)!r}: {int(blank.sum())} rows have a blank ImageId or EncodedPixels ({lines}); "
                        f"an image without pneumothorax is written {NO_MASK}")
    valid = (encoded == NO_MASK) | encoded.str.fullmatch(r"\d+ \d+(?: \d+ \d+)*")
    bad = ~valid.to_numpy()
    if bad.any():
        lines = [f"line {i + 2} ({ids.iloc[i]}: {encoded.iloc[i][:20]!r})" for i in np.flatnonzero(bad)[:3]]
        raise DataError(f"{str(path)!r}: {int(bad.sum())} EncodedPixels values are neither {NO_MASK} nor pairs of "
                        f"integers ({lines}); use the competition's train-rle.csv unchanged")
    return pd.DataFrame({"image_id": ids, "encoded": encoded})


def read_siim(csv_path: str | Path, image_dir: str = SIIM_IMAGE_DIR) -> LabelTable:
    """One row per image (first-appearance order): Pneumothorax 1 when any row is a mask. Frame extras:
    `n_masks`. Each image is its own patient here; sex / age / view unknown (`SIIMData` reads the headers)."""
    rows = read_siim_rows(csv_path)
    rows["mask"] = rows["encoded"] != NO_MASK
    per = rows.groupby("image_id", sort=False)["mask"].agg(["any", "all", "sum"])  # (N, 3)
    mixed = per["any"] & ~per["all"]
    if mixed.any():
        log.warning("%s: %d images have both %s rows and masks; they count as pneumothorax (e.g. %s)", csv_path,
                    int(mixed.sum()), NO_MASK, per.index[mixed][:3].tolist())
    ids = per.index.to_series(index=range(len(per)))
    labels = per["any"].to_numpy(dtype=np.float32)[:, None]  # (N, 1)
    frame = pd.DataFrame({
        "image_id": ids,
        "patient_id": ids,
        "path": image_dir + "/" + ids + ".dcm",  # the study/series folders are found by searching
        "view": pd.Series(np.nan, index=ids.index, dtype="str"),
        "age": np.full(len(per), np.nan),
        "sex": pd.Series(np.nan, index=ids.index, dtype="str"),
        "no_finding": np.zeros(len(per), dtype=bool),  # SIIM labels pneumothorax only: no "normal" flag
        "n_masks": per["sum"].to_numpy(dtype=np.int64),
    })
    log.info("Read %d SIIM images (%d rows) from %s: %d with pneumothorax", len(frame), len(rows), csv_path,
             int(labels.sum()))
    return LabelTable(frame=frame, labels=labels, uncertain=np.zeros(labels.shape, dtype=bool),
                      pathologies=[SIIM_PATHOLOGY])


def siim_masks(csv_path: str | Path, image_ids: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """image_id -> (1024, 1024) bool, the union of the image's masks, for images with pneumothorax
    (optionally only `image_ids`: each mask is 1 MiB). For a pointing game: a heatmap's peak is a hit when it
    lies in the mask."""
    rows = read_siim_rows(csv_path)
    rows = rows[rows["encoded"] != NO_MASK]
    if image_ids is not None:
        rows = rows[rows["image_id"].isin(list(image_ids))]
    out: dict[str, np.ndarray] = {}
    for image_id, encoded in zip(rows["image_id"], rows["encoded"]):
        mask = rle_decode(encoded)
        out[image_id] = out[image_id] | mask if image_id in out else mask
    return out


def read_siim_boxes(csv_path: str | Path, extension: str = ".dcm") -> pd.DataFrame:
    """The bounding box of every mask, in the pointing game's box format (`read_bbox_list`): image_id (the file
    name `<ImageId><extension>`), pathology, x, y, w, h in 1024 px coordinates; one row per mask row."""
    rows = read_siim_rows(csv_path)
    records = []
    for image_id, encoded in zip(rows["image_id"], rows["encoded"]):
        if encoded == NO_MASK:
            continue
        mask = rle_decode(encoded)
        r = np.flatnonzero(mask.any(axis=1))
        c = np.flatnonzero(mask.any(axis=0))
        records.append({"image_id": image_id + extension, "pathology": SIIM_PATHOLOGY, "x": float(c[0]),
                        "y": float(r[0]), "w": float(c[-1] - c[0] + 1), "h": float(r[-1] - r[0] + 1)})
    return pd.DataFrame(records, columns=["image_id", "pathology", "x", "y", "w", "h"])


def read_siim_regions(path: str | Path, extension: str = ".dcm") -> pd.DataFrame:
    """SIIM-ACR train-rle.csv -> one mask region per image with pneumothorax: image_id (`<ImageId><extension>`),
    pathology, x, y, w, h (bounding box of the union of the image's masks, 1024 px), masks (the image's run-length
    strings, decoded again by the pointing game: a decoded mask is 1 MiB). Rows checked by `read_siim_rows`."""
    rows = read_siim_rows(path)
    rows = rows[rows["encoded"] != NO_MASK]
    records = []
    for image_id, encoded in rows.groupby("image_id", sort=False)["encoded"]:
        union = np.logical_or.reduce([rle_decode(e) for e in encoded])  # (1024, 1024)
        r, c = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
        if r.size == 0:
            raise ValueError(f"mask of shape {union.shape} has no pixel set: no region to point at")
        records.append({"image_id": image_id + extension, "pathology": SIIM_PATHOLOGY, "x": float(c[0]),
                        "y": float(r[0]), "w": float(c[-1] - c[0] + 1), "h": float(r[-1] - r[0] + 1),
                        "masks": tuple(encoded)})
    return pd.DataFrame(records, columns=["image_id", "pathology", "x", "y", "w", "h", "masks"])


@register_dataset(
    "siim", findings=(SIIM_PATHOLOGY,), image_pool=NIH_CXR14_ANONYMISED,  # NIH images as DICOM, anonymised PatientID
    left_out=f"nothing as a label: {SIIM_PATHOLOGY} is 1 where the image has a mask (`EncodedPixels` not -1); the "
             "masks themselves are read for localisation (pointing game), not as findings.",
    regions=Regions("mask", frozenset({"ImageId", "EncodedPixels"}), read_siim_regions, float(SIIM_SIZE),
                    "SIIM train-rle.csv"),
)
class SIIMData(ChestXData):
    """SIIM-ACR Pneumothorax (the competition's training set) as Kaggle ships it; a patient-level random split
    (the test set's labels are not part of the download)."""

    label_files = {"labels": LabelFile(SIIM_LABEL_FILES, key="csv")}
    images = ByIndex(lambda data: index_dicom_files(data._image_folder(), "SIIM"))  # SOPInstanceUID -> file

    def __init__(
        self,
        root: str,
        csv: str | None = None,
        image_dir: str | None = None,
        patient_ids: str = "image",
        views: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if patient_ids not in PATIENT_ID_SOURCES:
            raise DataError(f"data.patient_ids={patient_ids!r} is not one of {list(PATIENT_ID_SOURCES)}: 'image' makes "
                            "each image its own patient, 'dicom' groups images by the DICOM PatientID")
        self.csv = csv
        self.image_dir = image_dir
        self.patient_ids = patient_ids
        self.views = [views] if isinstance(views, str) else (list(views) if views else None)
        self._headers: pd.DataFrame | None = None  # read once: labels_only() and prepare() both load the table

    def _image_folder(self) -> Path:
        if self.image_dir:
            return self.root / self.image_dir
        return self.root / SIIM_IMAGE_DIR if (self.root / SIIM_IMAGE_DIR).is_dir() else self.root

    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        table = read_siim(self.label_file(), self.image_dir or SIIM_IMAGE_DIR)
        files = self.image_index()
        if self._headers is None or len(self._headers) != len(table):
            self._headers = read_dicom_headers([files.get(i) for i in table.frame["image_id"]])
        meta = self._headers
        frame = table.frame.assign(sex=meta["sex"].to_numpy(), view=meta["view"].to_numpy(),
                                   age=parse_dicom_age(meta["age"], "SIIM"),
                                   dicom_patient_id=meta["dicom_patient_id"].to_numpy())
        if self.patient_ids == "dicom":
            unknown = frame["dicom_patient_id"].isna().to_numpy()
            if unknown.any():
                raise DataError(
                    f"data.patient_ids=dicom needs every image's DICOM PatientID, but {int(unknown.sum())} SIIM images "
                    f"have no file under {str(self._image_folder())!r} (first: "
                    f"{frame['image_id'][unknown].head(3).tolist()}); provide them or set data.patient_ids=image")
            frame["patient_id"] = frame["dicom_patient_id"]
            log.info("SIIM patients from the DICOM PatientID: %d images of %d patients", len(frame),
                     frame["patient_id"].nunique())
        table = LabelTable(frame=frame, labels=table.labels, uncertain=table.uncertain, pathologies=table.pathologies)
        table = self.keep_views(table, self.views, column="ViewPosition", unknown="error", what="SIIM",
                                fix=" (image file or header missing); provide the images")
        return table, self.make_split(table)
