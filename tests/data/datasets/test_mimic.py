"""`data=mimic_cxr`: MIMIC-CXR-JPG 2.0.0 / 2.1.0 files as PhysioNet ships them, against an independent reference.

The fixture mirrors the official release (https://physionet.org/content/mimic-cxr-jpg/2.1.0/, "Data Description";
torchxrayvision/datasets.py `MIMIC_Dataset`): gzip CSVs `mimic-cxr-2.0.0-{chexpert,negbio,metadata,split}.csv.gz`
with the official headers and column order, labels written 1.0 / 0.0 / -1.0 / blank, one label row per study (some
studies with none, some rows all blank), metadata one row per image with `StudyDate` an anonymised YYYYMMDD integer
(shifted into the 22nd century) and `StudyTime` HHMMSS.fff, split values train / validate / test, MIMIC-IV
`patients.csv.gz` (subject_id, gender, anchor_age, anchor_year, anchor_year_group, dod), and small real X-ray JPEGs
(the embedded NIH sample) at `files/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg`. No real MIMIC file is used (credentialed).

The reference (first half) uses only pandas / numpy and restates the rules (no chestx.data code): labels per study
joined on (subject_id, study_id) to every image, view filter on ViewPosition, CheXpert's uncertainty / blank rules,
official split, age = anchor_age + StudyDate year - anchor_year.
"""
from __future__ import annotations

import gzip
import logging
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pytest

# ------------------------------------------------------------------------------------------------------------------
# The official file layout (restated from PhysioNet's page and the files' headers)
# ------------------------------------------------------------------------------------------------------------------
LABEL_HEADER = [
    "subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
]
OBSERVATIONS = LABEL_HEADER[2:]
METADATA_HEADER = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
SPLIT_HEADER = ["dicom_id", "study_id", "subject_id", "split"]
PATIENTS_HEADER = ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"]
# CheXpert's 14 observations in data=chexpert's order (tasks=all) and the competition's 5
CHEX_ORDER = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]
COMPETITION = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
LSR = {"lsr_zeros": (0.0, 0.3), "lsr_ones": (0.55, 0.85)}
REPO = Path(__file__).resolve().parents[3]
SAMPLE_IMAGES = sorted((REPO / "data" / "nih_sample" / "images").glob("*.png"))
# study kinds: (PerformedProcedureStepDescription, [(ViewPosition, ViewCodeSequence_CodeMeaning, Rows, Columns)])
STUDY_KINDS = [
    ("CHEST (PA AND LAT)", [("PA", "postero-anterior", 3056, 2544), ("LATERAL", "lateral", 3056, 2544)]),
    ("CHEST (PORTABLE AP)", [("AP", "antero-posterior", 2539, 3050)]),
    ("CHEST (PA AND LAT)", [("PA", "postero-anterior", 2544, 3056), ("LL", "left lateral", 2544, 3056)]),
    ("CHEST (PORTABLE AP)", [("AP", "antero-posterior", 2705, 2539), ("AP", "antero-posterior", 2705, 2539)]),
    ("CHEST (PRE-OP PA AND LAT)", [("PA", "postero-anterior", 3056, 2544), ("LATERAL", "lateral", 3056, 2544),
                                   ("", "", 2022, 1736)]),
]


def _hex(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(list("0123456789abcdef"), n))


def build_mimic_tree(root: Path, n_subjects: int = 14, seed: int = 0, image_size: int = 64) -> dict[str, Any]:
    """MIMIC-CXR-JPG files as PhysioNet ships them (a few dozen studies) under `root`; returns what was written."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    subjects = sorted({int(f"1{d}") * 1_000_000 + int(rng.integers(0, 999_999)) for d in range(10)}
                      | {int(rng.integers(10_000_000, 19_999_999)) for _ in range(n_subjects - 10)})
    split_of_subject = {s: ("test" if i % 5 == 1 else "validate" if i % 5 == 3 else "train")
                        for i, s in enumerate(subjects)}
    meta_rows, label_rows, split_rows = [], [], []
    negbio_rows = []
    for i, subject in enumerate(subjects):
        year = 2110 + int(rng.integers(0, 90))
        for j in range(1 + i % 4):  # 1-4 studies per patient
            study = int(rng.integers(50_000_000, 59_999_999))
            procedure, views = STUDY_KINDS[(i + j) % len(STUDY_KINDS)]
            date = (year + j) * 10_000 + int(rng.integers(1, 13)) * 100 + int(rng.integers(1, 29))
            time = round(float(rng.integers(0, 24)) * 10_000 + float(rng.integers(0, 60)) * 100
                         + float(rng.integers(0, 60)) + float(rng.integers(0, 1000)) / 1000, 3)
            orientation = ["Erect", "Recumbent", ""][(i + j) % 3]
            for view, code, rows, columns in views:
                dicom = "-".join(_hex(rng, 8) for _ in range(5))
                meta_rows.append([dicom, subject, study, procedure, view, rows, columns, date, time, procedure,
                                  code, orientation])
                split_rows.append([dicom, study, subject, split_of_subject[subject]])
            if (i, j) in ((2, 1), (7, 0)):
                continue  # the labeller gave no label: no row for this study in either label file
            cells = rng.choice([1.0, 0.0, -1.0, np.nan], size=len(OBSERVATIONS), p=[0.2, 0.25, 0.15, 0.4])
            kind = (i + 2 * j) % 6
            if kind == 0:  # a normal study: No Finding 1.0, the rest blank (devices may be mentioned)
                cells[:] = np.nan
                cells[OBSERVATIONS.index("No Finding")] = 1.0
                cells[OBSERVATIONS.index("Support Devices")] = [np.nan, 1.0][j % 2]
            elif kind == 1 and i % 3 == 0:  # a row the CheXpert labeller left all blank
                cells[:] = np.nan
            else:
                cells[OBSERVATIONS.index("No Finding")] = np.nan
            label_rows.append([subject, study, *cells])
            negbio = cells.copy()
            negbio[(i + j) % len(OBSERVATIONS)] = [1.0, 0.0, -1.0, np.nan][(i * j) % 4]
            negbio_rows.append([subject, study, *negbio])
    meta = pd.DataFrame(meta_rows, columns=METADATA_HEADER)
    meta["ViewPosition"] = meta["ViewPosition"].replace("", np.nan)
    for column in ("ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"):
        meta[column] = meta[column].replace("", np.nan)
    chexpert = pd.DataFrame(label_rows, columns=LABEL_HEADER)
    negbio = pd.DataFrame(negbio_rows, columns=LABEL_HEADER)
    split = pd.DataFrame(split_rows, columns=SPLIT_HEADER)
    root.mkdir(parents=True, exist_ok=True)
    meta.to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False, compression="gzip")
    chexpert.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False, compression="gzip")
    negbio.to_csv(root / "mimic-cxr-2.0.0-negbio.csv.gz", index=False, compression="gzip")
    split.to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False, compression="gzip")
    # MIMIC-IV hosp/patients.csv.gz: every subject but the last; one over 89 (anchor_age 91)
    groups = ["2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019"]
    first_year = meta.groupby("subject_id")["StudyDate"].min() // 10_000  # shifted year of each first study
    patients = pd.DataFrame([
        [s, "FM"[k % 2], 91 if k == 3 else int(rng.integers(18, 90)), int(first_year[s]) - k % 3, groups[k % 4],
         "" if k % 4 else f"{int(first_year[s]) + 5}-01-01"]
        for k, s in enumerate(subjects[:-1])], columns=PATIENTS_HEADER)
    patients.to_csv(root / "patients.csv.gz", index=False, compression="gzip")
    for n, (dicom, subject, study) in enumerate(meta[["dicom_id", "subject_id", "study_id"]].itertuples(index=False)):
        target = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(SAMPLE_IMAGES[n % len(SAMPLE_IMAGES)]) as image:
            image.convert("L").resize((image_size, image_size)).save(target, quality=95)
    return {"subjects": subjects, "n_images": len(meta), "n_studies": len(meta["study_id"].unique())}


# ------------------------------------------------------------------------------------------------------------------
# Independent reference (pandas / numpy only)
# ------------------------------------------------------------------------------------------------------------------
def reference(root: Path, labeler: str = "chexpert", tasks: Sequence[str] = COMPETITION,
              uncertainty: str | Mapping[str, str] = "ignore", blank: str = "zeros",
              views: Sequence[str] | None = ("PA", "AP"), patients: bool = False) -> dict[str, Any]:
    meta = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    labels = pd.read_csv(root / f"mimic-cxr-2.0.0-{labeler}.csv.gz")
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz")
    if views is not None:
        meta = meta[meta["ViewPosition"].isin(list(views))]
    images = meta.merge(labels, on=["subject_id", "study_id"], how="inner")  # keeps the metadata's order
    images = images.merge(split[["dicom_id", "split"]], on="dicom_id", how="left")
    values = images[list(tasks)].to_numpy(dtype=np.float64)  # (N, K)
    normal = (images["No Finding"] == 1.0).to_numpy()
    uncertain = values == -1.0
    out = values.copy()
    if blank == "zeros":
        out[np.isnan(values)] = 0.0
    else:
        fill = normal[:, None] & np.isnan(values) & (np.array(tasks) != "Support Devices")[None, :]
        out[fill] = 0.0
    soft = np.zeros(values.shape, dtype=bool)
    for k, name in enumerate(tasks):
        policy = uncertainty if isinstance(uncertainty, str) else uncertainty.get(name, uncertainty.get("default",
                                                                                                       "ignore"))
        cells = uncertain[:, k]
        if policy in ("ignore", "multiclass"):
            out[cells, k] = np.nan
        elif policy == "zeros":
            out[cells, k] = 0.0
        elif policy == "ones":
            out[cells, k] = 1.0
        else:
            out[cells, k] = np.nan
            soft[:, k] = cells
    result = {
        "ids": images["dicom_id"].astype(str).to_numpy(),
        "patients": images["subject_id"].astype(str).to_numpy(),
        "labels": out, "uncertain": uncertain, "soft": soft, "normal": normal,
        "split": images["split"].map({"train": "train", "validate": "val", "test": "test"}).to_numpy(),
        "views": images["ViewPosition"].to_numpy(dtype=object),
        "paths": [f"files/p{str(s)[:2]}/p{s}/s{t}/{d}.jpg"
                  for s, t, d in zip(images["subject_id"], images["study_id"], images["dicom_id"])],
    }
    if patients:
        table = pd.read_csv(root / "patients.csv.gz").set_index("subject_id")
        rows = table.reindex(images["subject_id"])
        year = images["StudyDate"].to_numpy() // 10_000
        result["age"] = rows["anchor_age"].to_numpy(dtype=float) + year - rows["anchor_year"].to_numpy(dtype=float)
        result["sex"] = rows["gender"].to_numpy(dtype=object)
    return result


def cell_problems(what: str, got: np.ndarray, want: np.ndarray, ids: np.ndarray, skip: np.ndarray | None = None
                  ) -> list[str]:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return [f"{what}: shape {got.shape}, reference {want.shape}"]
    bad = (np.isnan(got) != np.isnan(want)) | (~np.isnan(got) & ~np.isnan(want) & (got != want))
    if skip is not None:
        bad &= ~skip
    rows, cols = np.nonzero(bad)
    return [f"{what}: {len(rows)} cells differ, e.g. {ids[r]} column {c}: chestx {got[r, c]} reference {want[r, c]}"
            for r, c in list(zip(rows, cols))[:3]]


# ------------------------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mimic_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mimic") / "mimic-cxr-jpg" / "2.1.0"
    build_mimic_tree(root)
    return root


def mimic_data(root: Path, **options: Any):
    from chestx.data.datasets.mimic_cxr import MIMIC_CXRData

    return MIMIC_CXRData(root=str(root), **options)


# ------------------------------------------------------------------------------------------------------------------
# The fixture is the official format
# ------------------------------------------------------------------------------------------------------------------
def test_fixture_mirrors_the_official_files(mimic_tree: Path) -> None:
    with gzip.open(mimic_tree / "mimic-cxr-2.0.0-chexpert.csv.gz", "rt") as f:
        header, first = f.readline().rstrip("\n"), f.readline().rstrip("\n")
    assert header == ",".join(LABEL_HEADER)
    assert set(first.split(",")[2:]) <= {"1.0", "0.0", "-1.0", ""}
    with gzip.open(mimic_tree / "mimic-cxr-2.0.0-metadata.csv.gz", "rt") as f:
        assert f.readline().rstrip("\n") == ",".join(METADATA_HEADER)
        row = f.readline().rstrip("\n").split(",")
    assert len(row[0]) == 44 and row[0].count("-") == 4 and len(row[1]) == 8 and row[1][0] == "1"
    assert len(row[7]) == 8 and row[7][:2] in ("21", "22")  # StudyDate: shifted YYYYMMDD
    with gzip.open(mimic_tree / "mimic-cxr-2.0.0-split.csv.gz", "rt") as f:
        assert f.readline().rstrip("\n") == ",".join(SPLIT_HEADER)
    split = pd.read_csv(mimic_tree / "mimic-cxr-2.0.0-split.csv.gz")
    assert set(split["split"]) == {"train", "validate", "test"}
    folders = {p.relative_to(mimic_tree).parts[:2] for p in (mimic_tree / "files").rglob("*.jpg")}
    assert {f for _, f in folders} >= {f"p{d}" for d in range(10, 20)}  # p10 ... p19


# ------------------------------------------------------------------------------------------------------------------
# Labels, split, views and metadata against the reference, cell by cell
# ------------------------------------------------------------------------------------------------------------------
GRID = [
    pytest.param("chexpert", "competition", "ignore", "zeros", ["PA", "AP"], id="default"),
    pytest.param("chexpert", "all", "zeros", "mask", None, id="all-zeros-mask-allviews"),
    pytest.param("chexpert", "all", "ones", "zeros", ["PA"], id="all-ones-PA"),
    pytest.param("chexpert", "competition", "multiclass", "mask", ["PA", "AP"], id="multiclass-mask"),
    pytest.param("negbio", "all", {"default": "zeros", "Edema": "ones", "Support Devices": "multiclass"}, "mask",
                 ["PA", "AP"], id="negbio-mapping-mask"),
    pytest.param("chexpert", ["Support Devices", "Edema", "No Finding"], "lsr_ones", "mask", None, id="list-lsr"),
    pytest.param("negbio", "competition", "lsr_zeros", "zeros", ["AP"], id="negbio-lsr-AP"),
]


@pytest.mark.parametrize("labeler, tasks, uncertainty, blank, views", GRID)
def test_labels_split_and_views_conform(mimic_tree: Path, labeler: str, tasks: Any, uncertainty: Any, blank: str,
                                        views: list[str] | None) -> None:
    data = mimic_data(mimic_tree, labeler=labeler, findings=tasks, uncertainty=uncertainty, blank=blank, views=views)
    table, split = data.labels_only()
    names = COMPETITION if tasks == "competition" else CHEX_ORDER if tasks == "all" else list(tasks)
    ref = reference(mimic_tree, labeler, names, uncertainty, blank, views)
    assert table.pathologies == names
    assert table.frame["image_id"].tolist() == ref["ids"].tolist()
    problems = cell_problems("labels", table.labels, ref["labels"], ref["ids"], skip=ref["soft"])
    problems += cell_problems("uncertain", table.uncertain, ref["uncertain"], ref["ids"])
    assert not problems, "\n".join(problems)
    assert table.labels.dtype == np.float32 and table.uncertain.dtype == bool
    soft = table.labels[ref["soft"]]
    if ref["soft"].any():
        low, high = LSR[uncertainty if isinstance(uncertainty, str) else "lsr_ones"]
        assert ((soft >= low) & (soft <= high)).all(), soft
    assert list(split) == list(ref["split"])
    assert table.frame["patient_id"].tolist() == ref["patients"].tolist()
    np.testing.assert_array_equal(table.frame["no_finding"].to_numpy(dtype=bool), ref["normal"])
    assert table.frame["path"].tolist() == ref["paths"]
    views_got = table.frame["view"].astype(object).where(table.frame["view"].notna(), None).tolist()
    assert views_got == [None if pd.isna(v) else v for v in ref["views"]]
    assert data.multiclass == [
        (uncertainty if isinstance(uncertainty, str) else uncertainty.get(n, uncertainty["default"])) == "multiclass"
        for n in names]


def test_every_image_of_a_study_gets_the_study_labels(mimic_tree: Path) -> None:
    table, _ = mimic_data(mimic_tree, findings="all", views=None, uncertainty="zeros").labels_only()
    studies = pd.read_csv(mimic_tree / "mimic-cxr-2.0.0-chexpert.csv.gz").set_index("study_id")
    frame = table.frame.assign(study=table.frame["study_id"].astype(int))
    for study, rows in frame.groupby("study").groups.items():
        expected = studies.loc[study, CHEX_ORDER].to_numpy(dtype=float)
        expected = np.where(np.isnan(expected) | (expected == -1.0), 0.0, expected)  # blank zeros, U-Zeros
        for r in rows:
            np.testing.assert_array_equal(table.labels[r], expected)
    meta = pd.read_csv(mimic_tree / "mimic-cxr-2.0.0-metadata.csv.gz")
    unlabelled = ~meta["study_id"].isin(studies.index)
    assert unlabelled.sum() >= 2 and not table.frame["image_id"].isin(meta.loc[unlabelled, "dicom_id"]).any()
    assert len(table) == int((~unlabelled).sum())  # views=null: every labelled image, blank ViewPosition included


def test_sex_and_age_from_mimic_iv_patients(mimic_tree: Path) -> None:
    table, _ = mimic_data(mimic_tree, patients_csv=str(mimic_tree / "patients.csv.gz")).labels_only()
    ref = reference(mimic_tree, patients=True)
    np.testing.assert_array_equal(table.frame["age"].to_numpy(dtype=float), ref["age"])
    want_sex = [None if pd.isna(s) else s for s in ref["sex"]]
    assert [None if pd.isna(s) else s for s in table.frame["sex"]] == want_sex
    assert None in want_sex and {"M", "F"} <= set(want_sex)  # the subject absent from patients.csv: unknown
    assert (table.frame["age"] > 90).any()  # anchor_age 91 (over 89) carried as it is


def test_without_patients_sex_and_age_are_unknown_and_the_log_says_why(mimic_tree: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        table, _ = mimic_data(mimic_tree).labels_only()
    assert table.frame["sex"].isna().all() and table.frame["age"].isna().all()
    assert any("data.patients_csv" in r.getMessage() and "unknown" in r.getMessage() for r in caplog.records)


def test_undersampling_and_random_split_follow_the_rule_sheet(mimic_tree: Path) -> None:
    """No Finding undersampling: drop a row iff train, normal and u >= fraction, u = default_rng(seed).random(N)."""
    full = reference(mimic_tree, tasks=CHEX_ORDER, blank="mask")
    seed, fraction = 3, 0.4
    u = np.random.default_rng(seed).random(len(full["ids"]))
    keep = ~((full["split"] == "train") & full["normal"] & (u >= fraction))
    assert (~keep).sum() >= 1
    table, split = mimic_data(mimic_tree, findings="all", blank="mask", seed=seed,
                              no_finding_fraction=fraction).labels_only()
    assert table.frame["image_id"].tolist() == full["ids"][keep].tolist()
    random_table, random_split = mimic_data(mimic_tree, split="random", seed=1).labels_only()
    per_patient = pd.DataFrame({"p": random_table.frame["patient_id"], "s": random_split}).groupby("p")["s"].nunique()
    assert (per_patient == 1).all() and set(random_split) == {"train", "val", "test"}


def test_images_are_found_at_the_physionet_layout(mimic_tree: Path) -> None:
    data = mimic_data(mimic_tree, views=None)
    data.prepare()
    assert len(data.paths) == len(data.table) and all(p.is_file() for p in data.paths)
    assert data.paths[0].relative_to(mimic_tree).parts[0] == "files"


# ------------------------------------------------------------------------------------------------------------------
# Bad inputs: one clear error naming the file and the fix
# ------------------------------------------------------------------------------------------------------------------
def _copy(mimic_tree: Path, dest: Path) -> Path:
    import shutil

    for name in ("chexpert", "negbio", "metadata", "split"):
        shutil.copy(mimic_tree / f"mimic-cxr-2.0.0-{name}.csv.gz", dest / f"mimic-cxr-2.0.0-{name}.csv.gz")
    return dest


def test_missing_file_names_it_and_the_fix(mimic_tree: Path, tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError

    root = _copy(mimic_tree, tmp_path)
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(DataError, match=r"mimic-cxr-2.0.0-split.csv.gz not found .*data.root"):
        mimic_data(root).labels_only()
    table, split = mimic_data(root, split="random").labels_only()  # the split file is only needed by split=official
    assert len(table) and set(split) == {"train", "val", "test"}


def test_uncompressed_files_are_read_too(mimic_tree: Path, tmp_path: Path) -> None:
    for name in ("chexpert", "metadata", "split"):
        pd.read_csv(mimic_tree / f"mimic-cxr-2.0.0-{name}.csv.gz", dtype=str, keep_default_na=False).to_csv(
            tmp_path / f"mimic-cxr-2.0.0-{name}.csv", index=False)
    got, _ = mimic_data(tmp_path, findings="all").labels_only()
    want, _ = mimic_data(mimic_tree, findings="all").labels_only()
    np.testing.assert_array_equal(got.labels, want.labels)


def test_unknown_label_value_names_file_column_study_and_value(mimic_tree: Path, tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError

    root = _copy(mimic_tree, tmp_path)
    labels = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", dtype=str, keep_default_na=False)
    labels.loc[4, "Edema"] = "2.0"
    labels.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False, compression="gzip")
    study = labels.loc[4, "study_id"]
    with pytest.raises(DataError, match=rf"chexpert.csv.gz.*'Edema'.*row 4 \(line 6.*study_id {study}\).*'2.0'"):
        mimic_data(root).labels_only()


def test_missing_column_and_other_split_values_are_named(mimic_tree: Path, tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError

    root = _copy(mimic_tree, tmp_path)
    meta = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz").drop(columns="ViewPosition")
    meta.to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False, compression="gzip")
    with pytest.raises(DataError, match=r"metadata.csv.gz.* lacks columns \['ViewPosition'\]"):
        mimic_data(root).labels_only()
    _copy(mimic_tree, root)
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz")
    split.loc[0, "split"] = "valid"
    split.to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False, compression="gzip")
    with pytest.raises(DataError, match=r"split values \['valid'\] are not \['train', 'validate', 'test'\]"):
        mimic_data(root, views=None).labels_only()


def test_options_are_checked_before_reading(mimic_tree: Path) -> None:
    from chestx.data.labels.table import DataError

    with pytest.raises(DataError, match="data.labeler='chexbert'"):
        mimic_data(mimic_tree, labeler="chexbert")
    with pytest.raises(DataError, match="Effusion"):
        mimic_data(mimic_tree, findings=["Effusion"])  # NIH's name: MIMIC uses CheXpert's Pleural Effusion
    with pytest.raises(DataError, match="unknown uncertainty policy 'maybe'"):
        mimic_data(mimic_tree, uncertainty="maybe")


def test_missing_image_stops_with_the_path(mimic_tree: Path, tmp_path: Path) -> None:
    import shutil

    from chestx.data.labels.table import DataError

    root = tmp_path / "copy"
    shutil.copytree(mimic_tree, root)
    table, _ = mimic_data(root).labels_only()
    (root / table.frame["path"][3]).unlink()
    with pytest.raises(DataError, match=rf"1 of {len(table)} images .*{table.frame['path'][3]}.*missing_images=drop"):
        mimic_data(root).prepare()
    dropped = mimic_data(root, missing_images="drop")
    dropped.prepare()
    assert len(dropped.table) == len(table) - 1


# ------------------------------------------------------------------------------------------------------------------
# End to end: chestx.train, chestx.explore, test_data=[mimic_cxr]
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_on_mimic_cxr(compose, tiny_overrides, mimic_tree: Path, tmp_path: Path) -> None:
    from chestx.core.run_folder import read_predictions
    from chestx.train import train

    cfg = compose([*tiny_overrides, "data=mimic_cxr", f"data.root={mimic_tree}", "model=timm", "model.name=test_resnet",
                   "data.image_size=32", f"data.patients_csv={mimic_tree / 'patients.csv.gz'}",
                   "data.uncertainty={default: zeros, Edema: multiclass}"], tmp_path)
    metrics = train(cfg)
    assert metrics["status"] == "ok", metrics.get("error")
    ids, probs, labels, names = read_predictions(tmp_path / "predictions.csv")
    ref = reference(mimic_tree, tasks=COMPETITION, uncertainty={"default": "zeros", "Edema": "multiclass"},
                    patients=True)
    test = ref["split"] == "test"
    assert names == COMPETITION and ids["image_id"].tolist() == ref["ids"][test].tolist()
    want = ref["labels"][test].copy()
    want[ref["uncertain"][test]] = np.nan  # metrics never score an uncertain cell
    np.testing.assert_array_equal(np.nan_to_num(labels, nan=-9), np.nan_to_num(want, nan=-9))
    np.testing.assert_allclose(ids["age"].to_numpy(dtype=float), ref["age"][test])
    split = pd.read_csv(tmp_path / "split.csv", dtype=str)
    assert split["image_id"].tolist() == ref["ids"].tolist() and split["split"].tolist() == list(ref["split"])


@pytest.mark.slow
def test_explore_cli_on_mimic_cxr(mimic_tree: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from chestx.explore import main

    run = tmp_path / "explore"
    monkeypatch.setattr(sys, "argv", ["chestx.explore", "data=mimic_cxr", f"data.root={mimic_tree}",
                                      "data.findings=all", f"hydra.run.dir={run}", "query=Edema", "figures=false"])
    main()
    assert "(OK: 0)" in capsys.readouterr().out
    ref = reference(mimic_tree, tasks=CHEX_ORDER)
    counts = pd.read_csv(run / "label_counts.csv").query("split == 'all'").set_index("pathology")
    for k, name in enumerate(CHEX_ORDER):
        assert counts.loc[name, "positive"] == int((ref["labels"][:, k] == 1).sum()), name
        assert counts.loc[name, "uncertain"] == int(ref["uncertain"][:, k].sum()), name
    assert pd.read_csv(run / "split.csv")["image_id"].tolist() == ref["ids"].tolist()


@pytest.mark.slow
def test_nih_model_scored_on_mimic_cxr_as_test_data(compose, tiny_overrides, mimic_tree: Path, tmp_path: Path,
                                                    monkeypatch) -> None:
    """`chestx.train ... test_data=[mimic_cxr]` and `chestx.evaluate ckpt=... data=mimic_cxr`: the shared findings
    (by name, Effusion = Pleural Effusion), in the same external/mimic_cxr/ folder name."""
    from chestx.evaluate import main as evaluate_main
    from chestx.core.run_folder import read_predictions
    from chestx.train import train

    cfg = compose([*tiny_overrides, "model=timm", "model.name=test_resnet", "data.image_size=32",
                   "test_data=[mimic_cxr]",
                   f"test_data.mimic_cxr.root={mimic_tree}"], tmp_path)
    metrics = train(cfg)
    assert metrics["status"] == "ok", metrics.get("error")
    ids, probs, labels, names = read_predictions(tmp_path / "external" / "mimic_cxr" / "predictions.csv")
    assert names == ["Atelectasis", "Cardiomegaly", "Effusion", "Pneumonia", "Pneumothorax", "Consolidation", "Edema"]
    ref = reference(mimic_tree, tasks=["Atelectasis", "Cardiomegaly", "Pleural Effusion", "Pneumonia", "Pneumothorax",
                                       "Consolidation", "Edema"])
    test = ref["split"] == "test"
    assert ids["image_id"].tolist() == ref["ids"][test].tolist()
    np.testing.assert_array_equal(np.nan_to_num(labels, nan=-9), np.nan_to_num(ref["labels"][test], nan=-9))
    run = tmp_path / "evaluate"
    monkeypatch.setattr(sys, "argv", ["chestx.evaluate", f"ckpt={tmp_path / 'checkpoints' / 'best.ckpt'}",
                                      "data=mimic_cxr", f"data.root={mimic_tree}", "data.findings=all",
                                      f"hydra.run.dir={run}"])
    evaluate_main()
    again, again_probs, again_labels, again_names = read_predictions(run / "external" / "mimic_cxr" / "predictions.csv")
    assert again_names == names and again["image_id"].tolist() == ids["image_id"].tolist()
    np.testing.assert_allclose(again_probs, probs, atol=1e-6)
