"""What a missing value does, wherever a user's file can hold one (pandas 3: `astype(str)` keeps NaN missing).

The rule, one line each:
- image and patient ids (label files, split frames, the bootstrap): a blank cell stops with the file, column and line;
  never one shared "nan" patient;
- sex / view / age (label files): stay missing (NaN) and appear as `unknown` in explore's demographics and subgroups;
- image ids of a predictions CSV (chestx.evaluate): a blank cell stops naming the line; `NA` / `None` are ids;
- fold / seed of runs without k-fold: the report's tables key runs by folder (tests/comparison/test_report_cells.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.data.labels import DataError
from chestx.data.datasets.nih import read_nih


@pytest.fixture()
def sample_csv(sample_root: Path) -> pd.DataFrame:
    return pd.read_csv(sample_root / "Data_Entry_sample.csv", dtype=str, keep_default_na=False)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_nih_blank_sex_view_age_stay_unknown(sample_csv: pd.DataFrame, tmp_path: Path) -> None:
    from chestx.data.stats import demographics
    from chestx.metrics.subgroups import subgroup_masks

    frame = sample_csv.copy()
    frame.loc[[0, 1, 2], "Patient Gender"] = ""
    frame.loc[[1, 3], "View Position"] = ""
    frame.loc[[2, 4, 5], "Patient Age"] = ""
    table = read_nih(_write(frame, tmp_path / "labels.csv"))
    assert table.frame["sex"].isna().tolist()[:6] == [True, True, True, False, False, False]
    assert table.frame["view"].isna().sum() == 2 and np.isnan(table.frame["age"]).sum() == 3
    assert not table.frame["sex"].astype(object).isin(["nan", "None", ""]).any(), "no missing value became text"
    masks = {(a, g): m for a, g, m in subgroup_masks(table.frame)}
    assert masks[("sex", "unknown")].sum() == 3 and masks[("view", "unknown")].sum() == 2
    assert masks[("age", "unknown")].sum() == 3
    split = np.full(len(table), "test")
    counts = demographics(table, split).query("split == 'test' and value == 'unknown'").set_index("variable")["count"]
    assert counts.to_dict() == {"age": 3, "sex": 3, "view": 2}


@pytest.mark.parametrize("column", ["Patient ID", "Image Index"])
def test_nih_blank_ids_stop_naming_the_line(sample_csv: pd.DataFrame, tmp_path: Path, column: str) -> None:
    frame = sample_csv.copy()
    frame.loc[[3, 7], column] = " "
    path = _write(frame, tmp_path / "labels.csv")
    with pytest.raises(DataError, match=rf"2 rows have an empty '{column}' \(first at lines \[5, 9\]\)") as error:
        read_nih(path)
    assert str(path) in str(error.value)


def test_split_and_bootstrap_refuse_missing_patient_ids() -> None:
    from chestx.data.splits import SplitError, check_patient_disjoint, random_split
    from chestx.metrics.bootstrap import bootstrap_auroc

    frame = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "patient_id": ["1", None, "2", np.nan]})
    with pytest.raises(SplitError, match=r"2 rows have no patient_id \(first rows \[1, 3\]\)"):
        random_split(frame, ratios=(0.5, 0.5, 0.0))
    with pytest.raises(SplitError, match="2 images have no patient id"):
        check_patient_disjoint(frame["patient_id"].to_numpy(), np.array(["train", "train", "val", "val"]))
    labels = np.array([[1.0], [0.0], [1.0], [0.0]])
    with pytest.raises(ValueError, match="2 of 4 images have no patient id"):
        bootstrap_auroc(np.array([[0.9], [0.1], [0.8], [0.3]]), labels, frame["patient_id"].to_numpy(), n_resamples=10)


def test_predictions_csv_blank_id_stops_and_na_is_an_id(tmp_path: Path) -> None:
    from chestx.runs.scoring import EvaluationError, read_prediction_csv

    path = tmp_path / "p.csv"
    path.write_text("image_id,prob_Edema\nNA,0.2\nNone,0.7\n,0.4\n")
    with pytest.raises(EvaluationError, match=r"1 rows have an empty 'image_id' \(first at lines \[4\]\)"):
        read_prediction_csv(path, None, "prob_", ["Edema"])
    path.write_text("image_id,prob_Edema\nNA,0.2\nNone,0.7\n")
    ids, probs = read_prediction_csv(path, None, "prob_", ["Edema"])
    assert ids.tolist() == ["NA", "None"] and probs[:, 0].tolist() == [0.2, 0.7]


def test_pvalue_table_with_and_without_folds() -> None:
    """The issue-15 regression in isolation: missing fold (no k-fold) and integer folds both fill every cell."""
    from chestx.comparison.sections import pvalue_table

    rows = []
    for run, seed, fold in (("/s/1", 0, None), ("/s/2", 0, 0), ("/s/3", 1, np.nan)):
        for pathology, p in (("Edema", 0.01), ("Effusion", 0.5)):
            replicate = f"seed {seed}" + ("" if pd.isna(fold) else f" fold {fold}")
            rows.append({"label": "m" if run != "/s/1" else "x", "run_path": run, "replicate": replicate,
                         "fold": fold, "pathology": pathology, "p_value": p / 2, "p_holm": p})
    table = pvalue_table(pd.DataFrame(rows), ["Edema", "Effusion"], multi={"m"})
    assert [c.text for c in table.rows[0]] == ["Edema", "0.010 (0.005)", "0.010 (0.005)", "0.010 (0.005)"]
    assert [c.mark for c in table.rows[0]] == ["", "*", "*", "*"]
    assert table.columns == ["pathology", "x", "m (seed 0 fold 0)", "m (seed 1)"]


def test_subgroups_say_why_an_attribute_is_empty() -> None:
    """A label file without sex (MIMIC-CXR without data.patients_csv): the rows of that attribute say why."""
    from chestx.metrics.subgroups import subgroup_table

    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({"patient_id": [str(i) for i in range(n)], "sex": [np.nan] * n,
                          "age": rng.uniform(20, 80, n), "view": ["PA"] * 30 + ["AP"] * 30})
    labels = (rng.random((n, 1)) < 0.4).astype(float)
    table = subgroup_table(frame, rng.random((n, 1)), labels, ["Edema"], n_resamples=20)
    sex = table[table["attribute"] == "sex"]
    assert sex["group"].tolist() == ["unknown"]
    assert sex["note"].str.startswith("no image has a sex in the label file").all()
    assert not table[table["attribute"] == "view"]["note"].str.contains("no image has").any()
