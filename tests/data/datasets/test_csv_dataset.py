"""`data=csv`: a labelled image folder described by one CSV, against an independent pandas reference.

Two user files: (1) a folder of real NIH images (the embedded sample) with a CSV a user would write, every label
encoding the option accepts (1 / 0 / -1 / blank, 1.0 / 0.0 / -1.0, padded with spaces), patients with several
images, blank sex / age / view cells, relative and absolute image paths and a split column with the user's own
values; (2) the real CheXpert `train.csv` rows (1.0 / 0.0 / -1.0 / blank as Stanford ships them) read as a user
CSV, where the CheXpert rules (Irvin et al. 2019; the label rule sheet of issue 8) must give what `data=chexpert`
gives. The reference (first half) uses only pandas / numpy and restates the rules; no chestx.data code in it.
"""
from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "data" / "nih_sample"
FINDINGS = ["Edema", "Cardiomegaly", "Effusion", "Atelectasis"]
SPLIT_VALUES = {"train": "training", "val": ["validation", "tuning"], "test": "holdout"}
LSR = {"lsr_zeros": (0.0, 0.3), "lsr_ones": (0.55, 0.85)}
# the text a user may write for each value; blank = not mentioned
POSITIVE, NEGATIVE, UNCERTAIN = ["1", "1.0", " 1 "], ["0", "0.0", "", " 0.0"], ["-1", "-1.0", " -1 "]
CHEX_COMPETITION = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


# ------------------------------------------------------------------------------------------------------------------
# Fixture 1: a user's folder of real NIH images and the CSV describing it
# ------------------------------------------------------------------------------------------------------------------
def build_user_folder(root: Path, n: int = 90) -> pd.DataFrame:
    """root/scans/<group>/<name>.png (real NIH pixels) and root/labels.csv; returns the CSV as written (text)."""
    raw = pd.read_csv(SAMPLE / "Data_Entry_sample.csv").head(n)
    rows = []
    for i, r in enumerate(raw.itertuples(index=False)):
        name = r[0]
        rel = Path("scans") / f"group{i % 3}" / name
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE / "images" / name, root / rel)
        tokens = set(r[1].split("|"))
        patient = f"PT-{i // 3:03d}" if i < 60 else f"PT-{i:03d}"  # three images per patient, then one
        row = {"file": str(root / rel) if i % 7 == 0 else str(rel), "patient": patient}
        for k, finding in enumerate(FINDINGS):
            if (i + k) % 11 == 0:
                row[finding] = UNCERTAIN[(i + k) % 3]
            elif finding in tokens:
                row[finding] = POSITIVE[(i + k) % 3]
            else:
                row[finding] = NEGATIVE[(i + k) % 4]
        row["normal"] = "1" if r[1] == "No Finding" else ["0", ""][i % 2]
        row["sex"] = "" if i % 9 == 4 else r[5]
        row["age_years"] = "" if i % 8 == 5 else str(r[4])
        row["view"] = "" if i % 10 == 6 else r[6]
        fold = ["training", "training", "validation", "holdout", "tuning"][(i // 3) % 5]
        row["fold"] = fold
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.to_csv(root / "labels.csv", index=False)
    return pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)


# ------------------------------------------------------------------------------------------------------------------
# Independent reference (pandas / numpy only)
# ------------------------------------------------------------------------------------------------------------------
TEXT = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "-1": -1.0, "-1.0": -1.0, "": np.nan}


def reference(text: pd.DataFrame, labels: Sequence[str], normal_column: str | None,
              uncertainty: str | Mapping[str, str] = "ignore", blank: str = "zeros") -> dict[str, np.ndarray]:
    """labels (NaN also at LSR cells), uncertain, soft, normal for every row of a CSV read as text."""
    values = np.stack([text[c].str.strip().map(TEXT).to_numpy(dtype=float) for c in labels], axis=1)  # (N, K)
    normal = (np.zeros(len(text), bool) if normal_column is None
              else (text[normal_column].str.strip().map(TEXT) == 1.0).to_numpy())
    uncertain = values == -1.0
    out = values.copy()
    if blank == "zeros":
        out[np.isnan(values)] = 0.0
    else:  # mask: blank unknown, but 0 on a normal row (Support Devices excepted)
        out[normal[:, None] & np.isnan(values) & (np.array(labels) != "Support Devices")[None, :]] = 0.0
    soft = np.zeros(values.shape, bool)
    for k, name in enumerate(labels):
        policy = uncertainty if isinstance(uncertainty, str) else uncertainty.get(name, uncertainty.get("default",
                                                                                                       "ignore"))
        if policy in ("ignore", "multiclass"):
            out[uncertain[:, k], k] = np.nan
        elif policy in ("zeros", "ones"):
            out[uncertain[:, k], k] = float(policy == "ones")
        else:
            out[uncertain[:, k], k] = np.nan
            soft[:, k] = uncertain[:, k]
    return {"labels": out, "uncertain": uncertain, "soft": soft, "normal": normal}


def cell_problems(what: str, got: np.ndarray, want: np.ndarray, skip: np.ndarray | None = None) -> list[str]:
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    if got.shape != want.shape:
        return [f"{what}: shape {got.shape}, reference {want.shape}"]
    bad = (np.isnan(got) != np.isnan(want)) | (~np.isnan(got) & ~np.isnan(want) & (got != want))
    if skip is not None:
        bad &= ~skip
    return [f"{what}: row {r} column {c}: chestx {got[r, c]} reference {want[r, c]}"
            for r, c in list(zip(*np.nonzero(bad)))[:5]]


def ref_random_split(patients: np.ndarray, ratios: Sequence[float], seed: int) -> np.ndarray:
    """The rule sheet's patient-level random split (as NIH's data.split=random)."""
    unique, row_patient = np.unique(patients.astype(str), return_inverse=True)
    rank = np.empty(len(unique), dtype=np.int64)
    rank[np.random.default_rng(seed).permutation(len(unique))] = np.arange(len(unique))
    bounds = np.cumsum([round(ratios[0] * len(unique)), round(ratios[1] * len(unique))])
    return np.array(["train", "val", "test"])[np.searchsorted(bounds, rank, side="right")[row_patient]]


# ------------------------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("user_xrays")
    return root, build_user_folder(root)


USER_KEYS = dict(csv="labels.csv", image_column="file", patient_column="patient", sex_column="sex",
                 age_column="age_years", view_column="view", no_finding_column="normal", findings=FINDINGS)
# the split column and labels=null: the label columns are those no other key names
SPLIT_KEYS = dict(USER_KEYS, findings=None, split_column="fold", split_values=SPLIT_VALUES)


def csv_data(root: Path, **options: Any):
    from chestx.data.datasets.csv import CSVData

    return CSVData(root=str(root), **options)


# ------------------------------------------------------------------------------------------------------------------
# Labels, split, metadata against the reference
# ------------------------------------------------------------------------------------------------------------------
GRID = [
    pytest.param("ignore", "zeros", None, False, id="ignore-zeros-random"),
    pytest.param("zeros", "mask", None, True, id="zeros-mask-splitcolumn"),
    pytest.param("ones", "zeros", ["PA"], True, id="ones-PA-splitcolumn"),
    pytest.param("multiclass", "mask", ["pa", "AP"], False, id="multiclass-mask-views"),
    pytest.param({"default": "zeros", "Edema": "ones", "Effusion": "multiclass"}, "zeros", None, True, id="mapping"),
    pytest.param("lsr_ones", "mask", None, False, id="lsr_ones-mask"),
    pytest.param({"Atelectasis": "lsr_zeros"}, "zeros", None, True, id="nodefault-lsr_zeros"),
]


@pytest.mark.parametrize("uncertainty, blank, views, with_split", GRID)
def test_user_csv_conforms(user_folder, uncertainty: Any, blank: str, views: list[str] | None,
                           with_split: bool) -> None:
    root, text = user_folder
    options = dict(SPLIT_KEYS if with_split else USER_KEYS, uncertainty=uncertainty, blank=blank, views=views, seed=4)
    data = csv_data(root, **options)
    table, split = data.labels_only()
    ref = reference(text, FINDINGS, "normal", uncertainty, blank)
    if with_split:
        ref_split = text["fold"].map({"training": "train", "validation": "val", "tuning": "val",
                                      "holdout": "test"}).to_numpy()
    else:
        ref_split = ref_random_split(text["patient"].to_numpy(), (0.7, 0.1, 0.2), seed=4)
    rows = np.ones(len(text), bool) if views is None else text["view"].str.upper().isin(
        [v.upper() for v in views]).to_numpy()
    assert table.pathologies == FINDINGS  # with the split column, labels=null: the columns no other key names
    assert table.frame["image_id"].tolist() == text["file"][rows].tolist()
    problems = cell_problems("labels", table.labels, ref["labels"][rows], skip=ref["soft"][rows])
    problems += cell_problems("uncertain", table.uncertain, ref["uncertain"][rows])
    assert not problems, "\n".join(problems)
    assert table.uncertain.sum() > 10  # the -1 / -1.0 / " -1 " cells
    for k in np.flatnonzero(ref["soft"][rows].any(axis=0)):
        name = FINDINGS[k]
        policy = uncertainty if isinstance(uncertainty, str) else uncertainty[name]
        values = table.labels[ref["soft"][rows][:, k], k]
        assert ((values >= LSR[policy][0]) & (values <= LSR[policy][1])).all(), (name, values)
    assert list(split) == list(ref_split[rows])
    np.testing.assert_array_equal(table.frame["no_finding"].to_numpy(bool), ref["normal"][rows])
    assert table.frame["patient_id"].tolist() == text["patient"][rows].tolist()
    sex = [None if pd.isna(v) else v for v in table.frame["sex"]]
    assert sex == [None if v == "" else v for v in text["sex"][rows]]
    want_age = pd.to_numeric(text["age_years"][rows].replace("", np.nan)).to_numpy(dtype=float)
    np.testing.assert_array_equal(table.frame["age"].to_numpy(dtype=float), want_age)
    assert sum(v is None for v in sex) >= 1 and np.isnan(want_age).any()
    assert data.multiclass == [(uncertainty if isinstance(uncertainty, str)
                                else uncertainty.get(n, uncertainty.get("default", "ignore"))) == "multiclass"
                               for n in FINDINGS]


def test_lsr_draws_are_seeded(user_folder) -> None:
    root, _ = user_folder
    first, _ = csv_data(root, **USER_KEYS, uncertainty="lsr_zeros", seed=1).labels_only()
    again, _ = csv_data(root, **USER_KEYS, uncertainty="lsr_zeros", seed=1).labels_only()
    other, _ = csv_data(root, **USER_KEYS, uncertainty="lsr_zeros", seed=2).labels_only()
    np.testing.assert_array_equal(first.labels, again.labels)
    soft = first.uncertain
    assert soft.sum() > 10 and (first.labels[soft] != other.labels[soft]).all()
    np.testing.assert_array_equal(first.labels[~soft], other.labels[~soft])


def test_images_are_found_by_relative_and_absolute_paths(user_folder) -> None:
    root, text = user_folder
    data = csv_data(root, **USER_KEYS)
    data.prepare()
    assert all(p.is_file() for p in data.paths)
    assert any(Path(t).is_absolute() for t in text["file"]) and any(not Path(t).is_absolute() for t in text["file"])
    by_id = {str(i): p for i, p in zip(data.table.frame["image_id"], data.paths)}
    for t in text["file"]:
        assert by_id[t] == (Path(t) if Path(t).is_absolute() else root / t)


def test_without_patient_column_each_image_is_its_own_patient(user_folder, caplog) -> None:
    root, text = user_folder
    options = {k: v for k, v in USER_KEYS.items() if k != "patient_column"}
    with caplog.at_level(logging.INFO):
        table, split = csv_data(root, **options, seed=2).labels_only()
    assert table.frame["patient_id"].tolist() == text["file"].tolist()
    assert any("patient_column is not set" in r.getMessage() and "own patient" in r.getMessage()
               for r in caplog.records)
    assert list(split) == list(ref_random_split(text["file"].to_numpy(), (0.7, 0.1, 0.2), seed=2))


def test_spreadsheet_export_with_bom_and_crlf_reads_the_same(user_folder) -> None:
    root, text = user_folder
    text.to_csv(root / "excel.csv", index=False, encoding="utf-8-sig", lineterminator="\r\n")
    assert (root / "excel.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    got, _ = csv_data(root, **(USER_KEYS | {"csv": "excel.csv"})).labels_only()
    want, _ = csv_data(root, **USER_KEYS).labels_only()
    np.testing.assert_array_equal(got.labels, want.labels)
    assert got.frame["image_id"].tolist() == want.frame["image_id"].tolist()


def test_explicit_label_list_and_no_finding_undersampling(user_folder) -> None:
    """No Finding undersampling: drop a row iff train, normal and u >= fraction, u = default_rng(seed).random(N)."""
    root, text = user_folder
    table, split = csv_data(root, **(SPLIT_KEYS | {"findings": ["Effusion", "normal"]}), no_finding_fraction=0.3,
                            seed=5).labels_only()
    ref_split = text["fold"].map({"training": "train", "validation": "val", "tuning": "val", "holdout": "test"})
    normal = (text["normal"] == "1").to_numpy()
    u = np.random.default_rng(5).random(len(text))
    keep = ~((ref_split == "train").to_numpy() & normal & (u >= 0.3))
    assert (~keep).sum() >= 2
    assert table.pathologies == ["Effusion", "normal"]
    assert table.frame["image_id"].tolist() == text["file"][keep].tolist()
    ref = reference(text, ["Effusion", "normal"], "normal")
    assert not cell_problems("labels", table.labels, ref["labels"][keep])


# ------------------------------------------------------------------------------------------------------------------
# The real CheXpert train.csv read as a user's CSV: the same labels as data=chexpert, cell by cell
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chexpert_as_user_csv(chexpert_dir: Path, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """The first 400 rows of the real train.csv with a patient column added; image files written at their paths."""
    from PIL import Image

    root = tmp_path_factory.mktemp("chexpert_user")
    text = pd.read_csv(chexpert_dir / "train.csv", dtype=str, keep_default_na=False, nrows=400)
    text.insert(1, "patient", text["Path"].str.extract(r"(patient\d+)", expand=False))
    text.to_csv(root / "train_with_patients.csv", index=False)
    pixels = sorted((SAMPLE / "images").glob("*.png"))
    for i, rel in enumerate(text["Path"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        with Image.open(pixels[i % len(pixels)]) as image:
            image.convert("L").resize((48, 48)).save(root / rel, quality=90)
    return root, text


CHEX_KEYS = dict(csv="train_with_patients.csv", image_column="Path", patient_column="patient", sex_column="Sex",
                 age_column="Age", view_column="AP/PA", no_finding_column="No Finding")


@pytest.mark.parametrize("uncertainty, blank", [("ignore", "mask"), ("zeros", "zeros"), ("ones", "mask"),
                                                ({"default": "multiclass", "Atelectasis": "ones"}, "zeros")])
def test_real_chexpert_rows_as_user_csv(chexpert_as_user_csv, uncertainty: Any, blank: str) -> None:
    from chestx.data.datasets.chexpert import read_chexpert

    root, text = chexpert_as_user_csv
    labels = ["No Finding", "Support Devices", *CHEX_COMPETITION]
    table, _ = csv_data(root, **CHEX_KEYS, findings=labels, uncertainty=uncertainty, blank=blank).labels_only()
    ref = reference(text, labels, "No Finding", uncertainty, blank)
    problems = cell_problems("labels", table.labels, ref["labels"]) + cell_problems("uncertain", table.uncertain,
                                                                                    ref["uncertain"])
    assert not problems, "\n".join(problems)
    assert ref["uncertain"].sum() > 50 and ref["normal"].sum() > 20  # real -1.0 cells and normal studies
    assert np.isnan(table.labels).any() == (blank == "mask" or uncertainty != "zeros")
    # data=chexpert's reader on the same rows gives the same matrix (the rules are shared, not copied)
    chexpert = read_chexpert(root / "train_with_patients.csv", pathologies=labels, uncertainty=uncertainty,
                             blank=blank)
    np.testing.assert_array_equal(chexpert.labels, table.labels)
    views = [None if pd.isna(v) else v for v in table.frame["view"]]
    assert views == [None if v == "" else v for v in text["AP/PA"]] and None in views  # laterals: no AP/PA


# ------------------------------------------------------------------------------------------------------------------
# Bad inputs: one clear error naming the file, the column / row / value and the fix
# ------------------------------------------------------------------------------------------------------------------
def _write(root: Path, text: pd.DataFrame, name: str = "bad.csv") -> str:
    text.to_csv(root / name, index=False)
    return name


def test_unknown_label_value_names_file_column_row_and_value(user_folder) -> None:
    from chestx.data.labels.table import DataError

    root, text = user_folder
    bad = text.copy()
    bad.loc[12, "Cardiomegaly"] = "yes"
    name = _write(root, bad)
    with pytest.raises(DataError, match=rf"bad.csv'.*column 'Cardiomegaly', row 12 \(line 14 of the file, "
                                        rf"{bad.loc[12, 'file']}\): value 'yes'.*fix the file"):
        csv_data(root, **(USER_KEYS | {"csv": name})).labels_only()
    bad.loc[12, "Cardiomegaly"] = "2"
    _write(root, bad)
    with pytest.raises(DataError, match=r"value '2' is not a label"):
        csv_data(root, **(USER_KEYS | {"csv": name})).labels_only()


def test_text_column_taken_as_label_names_the_fix(user_folder) -> None:
    from chestx.data.labels.table import DataError

    root, text = user_folder
    name = _write(root, text.assign(comment="follow-up in 3 months"))
    with pytest.raises(DataError, match=r"column 'comment'.*leave 'comment' out of data.findings"):
        csv_data(root, **(SPLIT_KEYS | {"csv": name})).labels_only()


def test_patient_in_two_splits_is_named(user_folder) -> None:
    from chestx.data.labels.table import DataError

    root, text = user_folder
    bad = text.copy()
    patient = bad.loc[0, "patient"]
    bad.loc[1, "fold"] = "holdout" if bad.loc[0, "fold"] != "holdout" else "training"
    name = _write(root, bad)
    with pytest.raises(DataError, match=rf"patient '{patient}' is in the splits .*'fold'.*row 0 \(line 2\)"):
        csv_data(root, **(SPLIT_KEYS | {"csv": name})).labels_only()


def test_unmapped_split_value_and_bad_split_values_are_named(user_folder) -> None:
    from chestx.data.labels.table import DataError

    root, text = user_folder
    with pytest.raises(DataError, match=r"values \['holdout', 'training', 'tuning', 'validation'\].*split_values"):
        csv_data(root, **USER_KEYS, split_column="fold").labels_only()  # the default values train / val / test
    with pytest.raises(DataError, match=r"data.split_values has keys \['valid'\]"):
        csv_data(root, **USER_KEYS, split_column="fold", split_values={"train": "training", "valid": "validation"})


@pytest.mark.parametrize("key, column", [("image_column", "filename"), ("patient_column", "PatientID"),
                                         ("age_column", "Age")])
def test_missing_column_names_the_key_and_the_columns(user_folder, key: str, column: str) -> None:
    from chestx.data.labels.table import DataError

    root, _ = user_folder
    with pytest.raises(DataError, match=rf"data.{key}='{column}' is not a column of .*labels.csv.*'file', 'patient'"):
        csv_data(root, **(USER_KEYS | {key: column})).labels_only()
    with pytest.raises(DataError, match=r"unknown data.findings .*\['Pneumonia'\]"):
        csv_data(root, **(USER_KEYS | {"findings": ["Edema", "Pneumonia"]})).labels_only()


def test_missing_file_and_missing_keys(user_folder, tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError, DataFileNotFoundError

    root, _ = user_folder
    with pytest.raises(DataFileNotFoundError, match=r"label file not found: .*nope.csv.*data.csv"):
        csv_data(root, **(USER_KEYS | {"csv": "nope.csv"})).labels_only()
    with pytest.raises(DataError, match=r"data=csv needs data.csv="):
        csv_data(root).labels_only()
    with pytest.raises(DataError, match=r"needs data.image_column="):
        csv_data(root, csv="labels.csv").labels_only()


def test_duplicate_and_blank_rows_are_named(user_folder) -> None:
    from chestx.data.labels.table import DataError

    root, text = user_folder
    twice = pd.concat([text, text.iloc[[5]]], ignore_index=True)
    name = _write(root, twice)
    with pytest.raises(DataError, match=rf"1 image paths appear more than once.*'{text.loc[5, 'file']}' in row 5 "
                                        rf"\(line 7\), row {len(text)}"):
        csv_data(root, **(USER_KEYS | {"csv": name})).labels_only()
    blank = text.copy()
    blank.loc[[3, 8], "file"] = ""
    _write(root, blank)
    with pytest.raises(DataError, match=r"2 rows have a blank data.image_column='file' \(row 3 \(line 5\), row 8"):
        csv_data(root, **(USER_KEYS | {"csv": name})).labels_only()
    blank = text.copy()
    blank.loc[4, "patient"] = " "
    _write(root, blank)
    with pytest.raises(DataError, match=r"1 rows have a blank data.patient_column='patient' \(row 4 \(line 6\)\)"):
        csv_data(root, **(USER_KEYS | {"csv": name})).labels_only()
    blank = text.copy()
    blank.loc[9, "age_years"] = "sixty"
    _write(root, blank)
    with pytest.raises(DataError, match=r"data.age_column='age_years' holds 'sixty' in row 9"):
        csv_data(root, **(USER_KEYS | {"csv": name})).labels_only()


def test_options_are_checked_at_once(user_folder) -> None:
    from chestx.data.labels.table import DataError

    root, _ = user_folder
    with pytest.raises(DataError, match=r"data.views=\['PA'\] needs data.view_column"):
        csv_data(root, csv="labels.csv", image_column="file", views=["PA"])
    with pytest.raises(DataError, match=r"no_finding_fraction=0.5 .*needs data.no_finding_column"):
        csv_data(root, csv="labels.csv", image_column="file", no_finding_fraction=0.5)
    with pytest.raises(DataError, match=r"uncertainty names unknown pathologies \['Pneumonia'\]"):
        csv_data(root, **USER_KEYS, uncertainty={"Pneumonia": "ones"}).labels_only()
    with pytest.raises(DataError, match="data.views=\\['LL'\\] keeps no row"):
        csv_data(root, **USER_KEYS, views=["LL"]).labels_only()


def test_missing_and_unreadable_images_are_named(user_folder, tmp_path: Path) -> None:
    from chestx.data.loading.dataset import FileSource
    from chestx.data.images.read import ImageReadError
    from chestx.data.labels.table import DataError

    _, text = user_folder
    root = tmp_path / "copy"
    root.mkdir()
    relative = text[~text["file"].map(lambda t: Path(t).is_absolute())].reset_index(drop=True)
    for rel in relative["file"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE / "images" / Path(rel).name, root / rel)
    relative.to_csv(root / "labels.csv", index=False)
    (root / relative.loc[2, "file"]).unlink()
    with pytest.raises(DataError, match=rf"1 of {len(relative)} images .*{relative.loc[2, 'file']}.*missing_images"):
        csv_data(root, **USER_KEYS).prepare()
    (root / relative.loc[2, "file"]).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    data = csv_data(root, **USER_KEYS)
    with pytest.raises(ImageReadError, match=relative.loc[2, "file"]):  # at set-up (header check) or at decoding
        data.prepare()
        FileSource(data.paths)(2)


# ------------------------------------------------------------------------------------------------------------------
# End to end: chestx.train and chestx.explore with data=csv
# ------------------------------------------------------------------------------------------------------------------
def _cli_options(root: Path) -> list[str]:
    return [f"data.root={root}", "data.csv=labels.csv", "data.image_column=file", "data.patient_column=patient",
            "data.sex_column=sex", "data.age_column=age_years", "data.view_column=view",
            "data.no_finding_column=normal", "data.split_column=fold",
            "data.split_values={train: training, val: [validation, tuning], test: holdout}"]


@pytest.mark.slow
def test_train_on_a_user_csv(compose, tiny_overrides, user_folder, tmp_path: Path) -> None:
    from chestx.core.run_folder import read_predictions
    from chestx.train import train

    root, text = user_folder
    cfg = compose([*tiny_overrides, "data=csv", *_cli_options(root), "data.uncertainty=zeros", "model=resnet56v2",
                   "data.image_size=32"], tmp_path)
    metrics = train(cfg)
    assert metrics["status"] == "ok", metrics.get("error")
    ids, probs, labels, names = read_predictions(tmp_path / "predictions.csv")
    test = (text["fold"] == "holdout").to_numpy()
    assert names == FINDINGS and ids["image_id"].tolist() == text["file"][test].tolist()
    ref = reference(text, FINDINGS, "normal", "zeros")
    want = ref["labels"][test].copy()
    want[ref["uncertain"][test]] = np.nan  # metrics never score an uncertain cell, whatever the policy
    np.testing.assert_array_equal(np.nan_to_num(labels, nan=-9), np.nan_to_num(want, nan=-9))
    assert set(pd.read_csv(tmp_path / "subgroups.csv")["attribute"]) >= {"sex", "age", "view"}


@pytest.mark.slow
def test_explore_cli_on_a_user_csv(user_folder, tmp_path: Path, monkeypatch, capsys) -> None:
    from chestx.explore import main

    root, text = user_folder
    run = tmp_path / "explore"
    monkeypatch.setattr(sys, "argv", ["chestx.explore", "data=csv", *_cli_options(root), f"hydra.run.dir={run}",
                                      "query=Edema", "figures=false"])
    main()
    assert "(OK: 0)" in capsys.readouterr().out
    ref = reference(text, FINDINGS, "normal")
    counts = pd.read_csv(run / "label_counts.csv").query("split == 'all'").set_index("pathology")
    for k, name in enumerate(FINDINGS):
        assert counts.loc[name, "positive"] == int((ref["labels"][:, k] == 1).sum()), name
        assert counts.loc[name, "uncertain"] == int(ref["uncertain"][:, k].sum()), name
    sex = pd.read_csv(run / "demographics.csv").query("variable == 'sex' and split == 'all'").set_index("value")
    assert sex.loc["unknown", "count"] == int((text["sex"] == "").sum())
