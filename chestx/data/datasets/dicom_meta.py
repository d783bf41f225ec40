"""Patient id, sex, age and view of DICOM-distributed datasets (RSNA Pneumonia, SIIM-ACR), read from the headers.

The Kaggle releases of RSNA Pneumonia Detection and SIIM-ACR Pneumothorax ship one DICOM file per image and no
metadata table: sex, age and view are in each file's header. `read_dicom_headers` reads only the tags it needs
(pydicom `dcmread(path, stop_before_pixels=True, specific_tags=[...])`, pydicom 3 user guide "Reading only
specific elements"), a few hundred bytes per file.

What the real files hold (torchxrayvision's dump of the 26,684 RSNA headers,
`kaggle_stage_2_train_images_dicom_headers.csv.gz`): `PatientID` (= the file name's patientId), `PatientSex`
"M" / "F", `PatientAge` a plain number of years ("43", not the Age String "043Y" of DICOM PS3.5 Table 6.2-1;
some are NIH's impossible ages 148-155), `ViewPosition` "PA" / "AP", `Modality` CR, `BodyPartExamined` CHEST.
`parse_dicom_age` reads both spellings: "nnn" and "nnnY" are years, "nnnM" / "nnnW" / "nnnD" months / weeks /
days converted to years.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from chestx.data.errors import DataError

log = logging.getLogger(__name__)

# frame column <- DICOM keyword
HEADER_KEYWORDS: dict[str, str] = {
    "dicom_patient_id": "PatientID",
    "sex": "PatientSex",
    "age": "PatientAge",
    "view": "ViewPosition",
}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([DWMY]?)\s*$", re.IGNORECASE)
_YEARS_PER_UNIT = {"": 1.0, "Y": 1.0, "M": 1.0 / 12.0, "W": 7.0 / 365.25, "D": 1.0 / 365.25}


def _text(value: object) -> str | float:
    """A header value as stripped text; absent or empty -> NaN."""
    if value is None:
        return np.nan
    text = str(value).strip()
    return text if text else np.nan


def read_dicom_headers(paths: Sequence[Path | None]) -> pd.DataFrame:
    """One row per path: dicom_patient_id, sex, age (raw text), view; NaN where the path is None or a tag is absent.

    A file that is not DICOM -> DataError naming the file (pydicom's reason appended).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    keywords = list(HEADER_KEYWORDS.values())
    rows: list[dict[str, object]] = []
    for path in paths:
        if path is None:
            rows.append({})
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=keywords)
        except (InvalidDicomError, OSError, ValueError, EOFError) as err:
            raise DataError(
                f"cannot read the DICOM header of {str(path)!r}: {err}; the image folder must hold the dataset's "
                ".dcm files as distributed (re-copy the file, or remove it and set data.missing_images=drop)"
            ) from err
        rows.append({column: _text(ds.get(keyword)) for column, keyword in HEADER_KEYWORDS.items()})
    frame = pd.DataFrame(rows, columns=list(HEADER_KEYWORDS), index=range(len(rows)))
    read = sum(p is not None for p in paths)
    log.info("Read %d DICOM headers (%s); %d rows have no file", read, ", ".join(keywords), len(paths) - read)
    return frame


def parse_dicom_age(ages: pd.Series, source: str) -> np.ndarray:
    """PatientAge text -> float years (N,); NaN where absent. Unparseable values -> NaN, logged with examples."""
    text = ages.astype("string")
    parts = text.str.extract(_AGE)  # (N, 2): number, unit
    number = pd.to_numeric(parts[0], errors="coerce").to_numpy(dtype=np.float64)
    unit = parts[1].fillna("").str.upper().map(_YEARS_PER_UNIT).to_numpy(dtype=np.float64)
    years = number * unit  # (N,)
    bad = text.notna().to_numpy() & np.isnan(years)
    if bad.any():
        log.warning("%s: %d PatientAge values are not a DICOM age (e.g. %s): age unknown for those images",
                    source, int(bad.sum()), text[bad].head(3).tolist())
    return years


def read_header_csv(path: str | Path, id_column: str, ids: pd.Series, what: str) -> pd.DataFrame:
    """Headers from a CSV dump (torchxrayvision's `kaggle_stage_2_train_images_dicom_headers.csv.gz` style).

    The CSV needs `id_column` and PatientSex, PatientAge, ViewPosition; returns the `read_dicom_headers` frame
    aligned with `ids` (NaN for ids the dump lacks, logged).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{what} header file data.headers={str(path)!r} not found; point it at a CSV of the "
                        "DICOM headers, or set data.headers=null to read them from the .dcm files")
    dump = pd.read_csv(path, dtype=str)
    required = [id_column, "PatientSex", "PatientAge", "ViewPosition"]
    missing = [c for c in required if c not in dump.columns]
    if missing:
        raise DataError(f"{what} header file data.headers={str(path)!r} lacks columns {missing} (found "
                        f"{list(dump.columns)}); it needs {required}, one row per image")
    dump = dump.drop_duplicates(id_column).set_index(id_column)
    aligned = dump.reindex(ids.astype(str).to_numpy())
    absent = int(aligned["PatientSex"].isna().sum())
    if absent:
        log.warning("%s: %d of %d images are not in the header file %s: their sex / age / view are unknown",
                    what, absent, len(ids), path)
    frame = pd.DataFrame({
        "dicom_patient_id": ids.astype(str).to_numpy(),
        "sex": aligned["PatientSex"].str.strip().to_numpy(),
        "age": aligned["PatientAge"].str.strip().to_numpy(),
        "view": aligned["ViewPosition"].str.strip().to_numpy(),
    })
    log.info("%s: sex / age / view of %d images from the header file %s", what, len(ids) - absent, path)
    return frame
