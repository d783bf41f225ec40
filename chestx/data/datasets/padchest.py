"""PadChest (BIMCV): the 160,861-row label file -> `LabelTable`, image files, patient-level split.

Sources:
- Bustos, Pertusa, Salinas, de la Iglesia-Vayá 2020, "PadChest: A large chest x-ray image dataset with
  multi-label annotated reports", Medical Image Analysis 66:101797 (arXiv:1901.07441); the release page
  http://bimcv.cipf.es/bimcv-projects/padchest/ and the authors' repository
  github.com/auriml/Rx-thorax-automatic-captioning (README: the label file's columns, images in 54 zip
  files; tree_term_CUI_counts*.csv: the hierarchy of findings and diagnoses that `FINDING_TERMS` follows).
- torchxrayvision `torchxrayvision/datasets.py`, `PC_Dataset` (github.com/mlmed/torchxrayvision): its 28
  labels, its substring-and-synonym rule (`matching="torchxrayvision"`, reproduced row for row), its list of
  missing / broken images (`XRV_BROKEN_IMAGES`), `AP_horizontal` renamed "AP Supine".

The label file (`PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]`) has one row per image:
`ImageID` (PNG name), `ImageDir` (0-54: the zip the image ships in), `StudyDate_DICOM` (YYYYMMDD), `PatientID`,
`PatientBirth` (year), `PatientSex_DICOM` (M / F / O / blank), `Projection` (PA, L, AP_horizontal, AP, COSTAL,
EXCLUDE, UNK) and `Labels`, a Python list literal of terms, e.g. "['pleural effusion', ' pneumonia']". The file
has 103 rows without `Labels`, 3,041 empty items ('') and 41,824 items written with a leading space; all are
handled and counted in the log. There is no official split: `PadChestData` splits patients at random (seeded).

Labels, two rules (`matching`):
- "table" (chestx): every term of the file is listed in `FINDING_TERMS` (term -> finding, following the authors'
  hierarchy: a subtype counts for its parent) or in `NOT_MAPPED`; a term in neither stops with a DataError.
  A row whose only terms are empty items or "exclude" (the report could not be labelled) has unknown labels (NaN).
- "torchxrayvision": a finding is 1 when one of its patterns (`XRV_PATTERNS`) is a substring of the raw `Labels`
  text, else 0, exactly as PC_Dataset computes it; no NaN.
`frame.no_finding` is True where the terms are exactly {"normal"} (the source's own flag), under both rules.
"""
from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from chestx.data.labels.table import DataError, DataFileNotFoundError, LabelTable, check_columns, select_pathologies
from chestx.data.datasets.base import ChestXData, LabelFile, view_mask
from chestx.data.datasets.image_finders import InFolders
from chestx.data.datasets.registry import register_dataset

log = logging.getLogger(__name__)

PADCHEST_CSV_NAMES: tuple[str, ...] = (
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
    "PADCHEST_chest_x_ray_images_labels_160K.csv.gz", "PADCHEST_chest_x_ray_images_labels_160K.csv",
)
PADCHEST_COLUMNS: tuple[str, ...] = (
    "ImageID", "ImageDir", "StudyDate_DICOM", "PatientID", "PatientBirth", "PatientSex_DICOM", "Projection", "Labels",
)
MATCHING_RULES: tuple[str, ...] = ("table", "torchxrayvision")
# torchxrayvision's 28 PadChest labels, in its (sorted) order; chestx's table labels the same findings.
PADCHEST_FINDINGS: tuple[str, ...] = (
    "Air Trapping", "Aortic Atheromatosis", "Aortic Elongation", "Atelectasis", "Bronchiectasis", "Cardiomegaly",
    "Consolidation", "Costophrenic Angle Blunting", "Edema", "Effusion", "Emphysema", "Fibrosis",
    "Flattened Diaphragm", "Fracture", "Granuloma", "Hemidiaphragm Elevation", "Hernia", "Hilar Enlargement",
    "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax", "Scoliosis",
    "Support Devices", "Tube", "Tuberculosis",
)
_TUBES = ("endotracheal tube", "tracheostomy tube", "NSG tube", "chest drain tube", "ventriculoperitoneal drain tube",
          "gastrostomy tube", "nephrostomy tube", "double J stent")
# chestx's table: finding -> the PadChest terms that are it or one of its subtypes (authors' hierarchy).
FINDING_TERMS: dict[str, tuple[str, ...]] = {
    "Air Trapping": ("air trapping",),
    "Aortic Atheromatosis": ("aortic atheromatosis",),
    "Aortic Elongation": ("aortic elongation", "descendent aortic elongation", "ascendent aortic elongation",
                          "supra aortic elongation", "aortic button enlargement"),
    "Atelectasis": ("atelectasis", "atelectasis basal", "laminar atelectasis", "lobar atelectasis",
                    "round atelectasis", "segmental atelectasis", "total atelectasis"),
    "Bronchiectasis": ("bronchiectasis",),
    "Cardiomegaly": ("cardiomegaly",),
    "Consolidation": ("consolidation", "air bronchogram"),
    "Costophrenic Angle Blunting": ("costophrenic angle blunting",),
    "Edema": ("pulmonary edema",),
    "Effusion": ("pleural effusion", "loculated pleural effusion", "loculated fissural effusion", "hydropneumothorax",
                 "empyema"),
    "Emphysema": ("emphysema",),
    "Fibrosis": ("pulmonary fibrosis", "post radiotherapy changes", "asbestosis signs"),
    "Flattened Diaphragm": ("flattened diaphragm",),
    "Fracture": ("fracture", "rib fracture", "callus rib fracture", "clavicle fracture", "humeral fracture",
                 "vertebral fracture"),
    "Granuloma": ("granuloma", "calcified granuloma"),
    "Hemidiaphragm Elevation": ("hemidiaphragm elevation",),
    "Hernia": ("hiatal hernia",),
    "Hilar Enlargement": ("hilar enlargement", "vascular hilar enlargement", "pulmonary artery enlargement",
                          "adenopathy", "calcified adenopathy", "calcified mediastinal adenopathy"),
    "Infiltration": ("infiltrates", "interstitial pattern", "ground glass pattern", "reticular interstitial pattern",
                     "reticulonodular interstitial pattern", "miliary opacities", "alveolar pattern", "consolidation",
                     "air bronchogram"),
    "Mass": ("mass", "pulmonary mass", "mediastinal mass", "pleural mass", "breast mass", "soft tissue mass"),
    "Nodule": ("nodule", "multiple nodules"),
    "Pleural_Thickening": ("pleural thickening", "apical pleural thickening", "calcified pleural thickening"),
    "Pneumonia": ("pneumonia", "atypical pneumonia"),
    "Pneumothorax": ("pneumothorax", "hydropneumothorax"),
    "Scoliosis": ("scoliosis",),
    "Support Devices": ("electrical device", "pacemaker", "dual chamber device", "single chamber device", "dai",
                        "catheter", "central venous catheter", "central venous catheter via jugular vein",
                        "central venous catheter via subclavian vein", "central venous catheter via umbilical vein",
                        "reservoir central venous catheter", *_TUBES),
    "Tube": _TUBES,
    "Tuberculosis": ("tuberculosis", "tuberculosis sequelae"),
}
# Terms of the file that are none of the findings above (listed, so that a new term is noticed).
NOT_MAPPED: tuple[str, ...] = (
    "normal", "unchanged", "exclude", "suboptimal study", "COPD signs", "chronic changes", "calcified densities",
    "heart valve calcified", "calcified fibroadenoma", "calcified pleural plaques", "pleural plaques", "end on vessel",
    "pseudonodule", "nipple shadow", "abscess", "cyst", "cavitation", "fibrotic band", "volume loss", "hypoexpansion",
    "hypoexpansion basal", "bullas", "pneumoperitoneo", "pneumomediastinum", "subcutaneous emphysema",
    "hyperinflated lung", "lung vascular paucity", "bronchovascular markings", "air fluid level", "increased density",
    "mediastinal shift", "azygos lobe", "fissure thickening", "minor fissure thickening", "major fissure thickening",
    "vascular redistribution", "central vascular redistribution", "hilar congestion", "pericardial effusion",
    "kerley lines", "dextrocardia", "right sided aortic arch", "aortic aneurysm", "mediastinal enlargement",
    "superior mediastinal enlargement", "goiter", "tracheal shift", "esophagic dilatation",
    "azygoesophageal recess shift", "mediastinic lipomatosis", "lipomatosis", "thoracic cage deformation", "kyphosis",
    "pectum excavatum", "pectum carinatum", "cervical rib", "vertebral degenerative changes", "vertebral compression",
    "vertebral anterior compression", "lytic bone lesion", "sclerotic bone lesion", "blastic bone lesion",
    "costochondral junction hypertrophy", "sternoclavicular junction hypertrophy", "axial hyperostosis", "osteopenia",
    "osteoporosis", "non axial articular degenerative changes", "subacromial space narrowing", "gynecomastia",
    "Chilaiditi sign", "diaphragmatic eventration", "artificial heart valve", "artificial mitral heart valve",
    "artificial aortic heart valve", "surgery", "metal", "osteosynthesis material", "sternotomy", "suture material",
    "bone cement", "prosthesis", "humeral prosthesis", "mammary prosthesis", "endoprosthesis", "aortic endoprosthesis",
    "surgery breast", "mastectomy", "surgery neck", "surgery lung", "surgery heart", "surgery humeral",
    "abnormal foreign body", "external foreign body", "obesity", "lung metastasis", "lymphangitis carcinomatosa",
    "lepidic adenocarcinoma", "heart insufficiency", "respiratory distress", "pulmonary hypertension",
    "pulmonary artery hypertension", "pulmonary venous hypertension", "bone metastasis",
)
NORMAL_TERM = "normal"
# Terms that say the report could not be labelled: a row with nothing else has unknown labels under the table.
UNLABELLED_TERMS: tuple[str, ...] = ("exclude",)
# term -> findings (empty: not mapped), the lookup built from the two lists above
PADCHEST_TERMS: dict[str, tuple[str, ...]] = {term: () for term in NOT_MAPPED}
for _finding, _terms in FINDING_TERMS.items():
    for _term in _terms:
        PADCHEST_TERMS[_term] = (*PADCHEST_TERMS.get(_term, ()), _finding)

# torchxrayvision PC_Dataset: finding -> substrings of the raw `Labels` text (its name lowercased, then its
# synonyms); "Tube" is its "Tube'" with the quote kept, so that it matches terms that end in "tube" / "stent".
XRV_PATTERNS: dict[str, tuple[str, ...]] = {name: (name.lower(),) for name in PADCHEST_FINDINGS}
XRV_PATTERNS.update({
    "Infiltration": ("infiltration", "infiltrates", "interstitial pattern", "ground glass pattern",
                     "reticular interstitial pattern", "reticulonodular interstitial pattern", "alveolar pattern",
                     "consolidation", "air bronchogram"),
    "Pleural_Thickening": ("pleural_thickening", "pleural thickening"),
    "Consolidation": ("consolidation", "air bronchogram"),
    "Hilar Enlargement": ("hilar enlargement", "adenopathy", "pulmonary artery enlargement"),
    "Support Devices": ("support devices", "device", "pacemaker"),
    "Tube": ("tube'", "stent'"),
})
# Images torchxrayvision's PC_Dataset leaves out: missing from the release, or broken / truncated PNGs.
XRV_BROKEN_IMAGES: tuple[str, ...] = (
    "216840111366964012819207061112010307142602253_04-014-084.png",
    "216840111366964012989926673512011074122523403_00-163-058.png",
    "216840111366964012959786098432011033083840143_00-176-115.png",
    "216840111366964012558082906712009327122220177_00-102-064.png",
    "216840111366964012339356563862009072111404053_00-043-192.png",
    "216840111366964013076187734852011291090445391_00-196-188.png",
    "216840111366964012373310883942009117084022290_00-064-025.png",
    "216840111366964012283393834152009033102258826_00-059-087.png",
    "216840111366964012373310883942009170084120009_00-097-074.png",
    "216840111366964012819207061112010315104455352_04-024-184.png",
    "216840111366964012819207061112010306085429121_04-020-102.png",
    "216840111366964012989926673512011083134050913_00-168-009.png",
    "216840111366964012373310883942009152114636712_00-102-045.png",
    "216840111366964012819207061112010281134410801_00-129-131.png",
    "216840111366964012487858717522009280135853083_00-075-001.png",
    "216840111366964012989926673512011151082430686_00-157-045.png",
    "216840111366964013686042548532013208193054515_02-026-007.png",
    "216840111366964013590140476722013058110301622_02-056-111.png",
    "216840111366964013590140476722013043111952381_02-065-198.png",
    "216840111366964013829543166512013353113303615_02-092-190.png",
    "216840111366964013962490064942014134093945580_01-178-104.png",
)
# `Projection` -> frame.view (torchxrayvision's rename of AP_horizontal) and frame.frontal_lateral
PROJECTION_VIEWS: dict[str, str] = {"PA": "PA", "AP": "AP", "AP_horizontal": "AP Supine", "L": "LATERAL",
                                    "COSTAL": "COSTAL", "EXCLUDE": "EXCLUDE", "UNK": "UNK"}
FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP", "AP Supine")


def parse_terms(text: str, where: str) -> tuple[list[str], int, int]:
    """A `Labels` cell -> (its terms: stripped, empty items dropped, first occurrence kept), its number of empty
    items, its number of items with stray spaces."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise DataError(f"{where}: 'Labels' is not a Python list literal: {text[:120]!r} ({err}); "
                        "use the label file as BIMCV distributes it") from err
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise DataError(f"{where}: 'Labels' must be a list of strings, got {text[:120]!r}")
    terms = [t.strip() for t in value]
    empty = sum(not t for t in terms)
    stray = sum(1 for raw, t in zip(value, terms) if t and raw != t)
    return list(dict.fromkeys(t for t in terms if t)), empty, stray


def _view_names(views: Sequence[str] | str) -> list[str]:
    """views option -> frame.view names (the normaliser in front of the base class's view filter, `view_mask`);
    accepts the file's Projection values and chestx's names, any case."""
    by_key = {k.lower(): v for k, v in PROJECTION_VIEWS.items()} | {v.lower(): v for v in PROJECTION_VIEWS.values()}
    out = []
    for view in [views] if isinstance(views, str) else views:
        name = by_key.get(str(view).strip().lower())
        if name is None:
            raise DataError(f"data.views: {view!r} is not a PadChest projection; valid values: "
                            f"{sorted(PROJECTION_VIEWS)} (or their chestx names "
                            f"{sorted(set(PROJECTION_VIEWS.values()))})")
        out.append(name)
    return list(dict.fromkeys(out))


def _age(study_date: pd.Series, birth: pd.Series) -> np.ndarray:
    """Age in years at the study: year of StudyDate_DICOM - PatientBirth (NaN when either is missing or unparseable).

    The file gives the birth year only, so the age is exact to within one year (the birthday is unknown).
    """
    date = pd.to_datetime(study_date.astype("string"), format="%Y%m%d", errors="coerce")
    years = date.dt.year.to_numpy(dtype=np.float64) - pd.to_numeric(birth, errors="coerce").to_numpy(np.float64)
    return np.where(years >= 0, years, np.nan)  # a birth after the study is unparseable, not a negative age


def _read_raw(csv_path: Path) -> pd.DataFrame:
    if not csv_path.is_file():
        raise DataFileNotFoundError(f"PadChest label file not found: {str(csv_path)!r}; set data.csv to "
                                    f"{PADCHEST_CSV_NAMES[0]} (or data.root to the folder that holds it)")
    try:
        header = pd.read_csv(csv_path, nrows=0)
        check_columns(header, PADCHEST_COLUMNS, csv_path, "PadChest")
        return pd.read_csv(csv_path, usecols=list(PADCHEST_COLUMNS), dtype={"ImageID": str, "PatientID": str},
                           keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as err:
        raise DataError(f"cannot parse PadChest label file {str(csv_path)!r}: {err}") from err


def read_padchest(
    csv_path: str | Path,
    pathologies: Sequence[str] | None = None,
    matching: str = "table",
    views: Sequence[str] | str | None = None,
) -> LabelTable:
    """Read PadChest's label file into a LabelTable (rules in the module docstring).

    `pathologies`: a subset of `PADCHEST_FINDINGS` (None: all 28). `views`: keep these projections (file values
    PA / L / AP_horizontal / AP / COSTAL / EXCLUDE / UNK or chestx's PA / LATERAL / AP Supine / AP ...); None
    keeps all. Rows without `Labels` are left out (counted in the log). PadChest labels are never uncertain.
    """
    csv_path = Path(csv_path).expanduser()
    if matching not in MATCHING_RULES:
        raise DataError(f"data.matching={matching!r} is not one of {list(MATCHING_RULES)}")
    names = select_pathologies(PADCHEST_FINDINGS if pathologies is None else pathologies, PADCHEST_FINDINGS, "PadChest")
    raw = _read_raw(csv_path)
    n_file = len(raw)
    projection = raw["Projection"].astype("string").str.strip()
    view = projection.map(PROJECTION_VIEWS)
    unknown_view = projection.notna() & view.isna()
    if unknown_view.any():
        raise DataError(f"{str(csv_path)!r}: unknown 'Projection' values {sorted(projection[unknown_view].unique())} "
                        f"(e.g. row {int(np.flatnonzero(unknown_view)[0])}); known: {sorted(PROJECTION_VIEWS)}")
    if views is not None:
        keep = view_mask(view, _view_names(views), f"PadChest label file {str(csv_path)!r}", column="'Projection'")
        raw, view = raw.loc[keep].reset_index(drop=True), view[keep].reset_index(drop=True)
    no_labels = raw["Labels"].isna().to_numpy()
    if no_labels.any():
        log.warning("PadChest: %d rows have no 'Labels' value and are left out (e.g. %s)", int(no_labels.sum()),
                    raw.loc[no_labels, "ImageID"].head(3).tolist())
        raw, view = raw.loc[~no_labels].reset_index(drop=True), view[~no_labels].reset_index(drop=True)
    if raw.empty:
        raise DataError(f"{str(csv_path)!r}: no row with labels is left; check data.views")
    blank = raw[["ImageID", "PatientID", "ImageDir"]].isna().any(axis=1).to_numpy()
    if blank.any():
        raise DataError(f"{str(csv_path)!r}: {int(blank.sum())} rows have a blank ImageID, PatientID or ImageDir "
                        f"(first: row {int(np.flatnonzero(blank)[0])} of the rows kept); use the file as distributed")

    texts, row_text = np.unique(raw["Labels"].astype(str).to_numpy(), return_inverse=True)  # parse each text once
    row_of_text = np.zeros(len(texts), dtype=np.int64)
    row_of_text[row_text[::-1]] = np.arange(len(row_text))[::-1]  # first row holding each text
    parsed, empty_items, stray_items = [], 0, 0
    counts = np.bincount(row_text, minlength=len(texts))
    for t, text in enumerate(texts):
        terms, empty, stray = parse_terms(text, f"{str(csv_path)!r} row {int(row_of_text[t])} "
                                                f"(ImageID {raw['ImageID'].iloc[row_of_text[t]]})")
        parsed.append(terms)
        empty_items += empty * counts[t]
        stray_items += stray * counts[t]
    unlabelled_text = np.array([not (set(terms) - set(UNLABELLED_TERMS)) for terms in parsed])  # (T,)
    normal_text = np.array([terms == [NORMAL_TERM] for terms in parsed])  # (T,)
    if matching == "table":
        text_labels = _table_labels(parsed, names, unlabelled_text, texts, row_of_text, raw, csv_path)  # (T, K)
    else:
        text_labels = np.stack([np.fromiter((any(p in text for p in XRV_PATTERNS[name]) for text in texts),
                                            dtype=bool, count=len(texts)) for name in names], axis=1).astype(np.float32)
    labels = text_labels[row_text]  # (N, K)
    unlabelled = unlabelled_text[row_text]  # (N,)
    log.info("PadChest 'Labels': %d empty items and %d terms with stray spaces ignored; %d rows have no term but "
             "empty items or %s (%s)", empty_items, stray_items, int(unlabelled.sum()), list(UNLABELLED_TERMS),
             "labels unknown (NaN)" if matching == "table" else "all 0, as torchxrayvision counts them")

    frame = pd.DataFrame({
        "image_id": raw["ImageID"].astype(str).str.strip(),
        "patient_id": raw["PatientID"].astype(str).str.strip(),
        "path": raw["ImageDir"].astype(str) + "/" + raw["ImageID"].astype(str).str.strip(),
        "view": view.astype(object).to_numpy(),
        "age": _age(raw["StudyDate_DICOM"], raw["PatientBirth"]),
        "sex": raw["PatientSex_DICOM"].astype(object),  # M / F / O as in the file, NaN where blank
        "frontal_lateral": view.map(lambda v: "Frontal" if v in FRONTAL_VIEWS else "Lateral" if v == "LATERAL"
                                    else np.nan).astype(object).to_numpy(),  # NaN: COSTAL / EXCLUDE / UNK
        "projection": raw["Projection"].astype(object),
        "study_date": raw["StudyDate_DICOM"].astype(str),
        "image_dir": raw["ImageDir"].to_numpy(),
        "terms": ["|".join(parsed[t]) for t in row_text],
        "no_finding": normal_text[row_text],
    })
    dupes = frame["image_id"].duplicated()
    if dupes.any():
        raise DataError(f"{str(csv_path)!r}: {int(dupes.sum())} duplicated 'ImageID' values "
                        f"(first: {frame['image_id'][dupes].head(3).tolist()}); each image must appear once")
    log.info("Read %d PadChest images of %d patients from %s (%d findings, matching=%s; %d rows of the file)",
             len(frame), frame["patient_id"].nunique(), csv_path, len(names), matching, n_file)
    return LabelTable(frame=frame, labels=labels.astype(np.float32), uncertain=np.zeros(labels.shape, dtype=bool),
                      pathologies=list(names))


def _table_labels(parsed: list[list[str]], names: list[str], unlabelled: np.ndarray, texts: np.ndarray,
                  row_of_text: np.ndarray, raw: pd.DataFrame, csv_path: Path) -> np.ndarray:
    """(T, K) labels of each distinct `Labels` text under chestx's table; unknown term -> DataError."""
    column = {name: k for k, name in enumerate(names)}
    out = np.zeros((len(parsed), len(names)), dtype=np.float32)  # (T, K)
    for t, terms in enumerate(parsed):
        for term in terms:
            findings = PADCHEST_TERMS.get(term)
            if findings is None:
                row = int(row_of_text[t])
                raise DataError(
                    f"{str(csv_path)!r}: term {term!r} in 'Labels' (row {row}, ImageID {raw['ImageID'].iloc[row]}: "
                    f"{texts[t][:120]}) is not in chestx's PadChest table. Add it to FINDING_TERMS (with its "
                    "finding) or NOT_MAPPED in chestx/data/datasets/padchest.py, or use data.matching=torchxrayvision"
                )
            for finding in findings:
                if finding in column:
                    out[t, column[finding]] = 1.0
    out[unlabelled] = np.nan
    return out


def _left_out() -> str:
    terms = [t for t in NOT_MAPPED if t != NORMAL_TERM and t not in UNLABELLED_TERMS]
    names = ", ".join(f"`{t}`" for t in terms)
    return (f"{len(terms)} report terms that are none of its findings (`NOT_MAPPED` in "
            "chestx/data/datasets/padchest.py, data.matching=table): no finding of chestx has their "
            "definition, so they set no column (an image with only such terms is 0 for every finding). "
            f"`{NORMAL_TERM}` sets only frame.no_finding (PadChest has no No Finding column); "
            f"{', '.join(f'`{t}`' for t in UNLABELLED_TERMS)} (the report could not be labelled) makes the row unknown "
            f"(NaN). The terms: {names}.")


@register_dataset("padchest", findings=PADCHEST_FINDINGS, left_out=_left_out)
class PadChestData(ChestXData):
    """PadChest as BIMCV ships it: the label file in `root`, images in `root/<ImageDir>/` (the unpacked zips 0-54),
    `root/images/` or `root/` itself (one flat folder, as torchxrayvision's `imgpath`).

    No official split: a patient-level random split by `ratios` (seeded by data.seed). The images torchxrayvision
    lists as missing or broken (`XRV_BROKEN_IMAGES`) are left out before the split when `drop_known_broken`.
    """

    label_files = {"labels": LabelFile(PADCHEST_CSV_NAMES, key="csv")}
    # frame.path is <ImageDir>/<ImageID>: the release's zip folder first, then root/images/, then root/
    images = InFolders(lambda data, image_dir: [data.root / image_dir, data.root / "images", data.root],
                       sorted_names=True)

    def __init__(
        self,
        root: str,
        csv: str | None = None,
        matching: str = "table",
        findings: Sequence[str] | None = None,
        views: Sequence[str] | None = None,
        drop_known_broken: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if matching not in MATCHING_RULES:
            raise DataError(f"data.matching={matching!r} is not one of {list(MATCHING_RULES)}")
        self.csv = csv
        self.matching = matching
        self.requested = list(findings) if findings else None
        self.views = _view_names(views) if views else None
        self.drop_known_broken = drop_known_broken

    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        table = read_padchest(self.label_file(), self.requested, matching=self.matching, views=self.views)
        broken = table.frame["image_id"].isin(XRV_BROKEN_IMAGES).to_numpy()
        if broken.any():
            if self.drop_known_broken:
                log.warning("PadChest: leaving out %d images torchxrayvision lists as missing or broken (%s); "
                            "data.drop_known_broken=false keeps them", int(broken.sum()),
                            ", ".join(table.frame.loc[broken, "image_id"]))
                table = table.subset(~broken)
            else:
                log.warning("PadChest: keeping %d images torchxrayvision lists as missing or broken "
                            "(data.drop_known_broken=false)", int(broken.sum()))
        return table, self.make_split(table)
