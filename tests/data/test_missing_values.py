"""What a missing value does, wherever a user's file can hold one (pandas 3: `astype(str)` keeps NaN missing).

The rule, one line each:
- image and patient ids (label files, split frames, the bootstrap): a blank cell stops with the file, column and line;
  never one shared "nan" patient;
- sex / view / age (label files): stay missing (NaN) and appear as `unknown` in explore's demographics and subgroups;
- image ids of a predictions CSV (chestx.evaluate): a blank cell stops naming the line; `NA` / `None` are ids;
- fold / seed of runs without k-fold: the report's tables key runs by folder (tests/comparison/test_report_cells.py).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.data.labels.table import DataError
from chestx.data.datasets.nih import read_nih


@pytest.fixture()
def sample_csv(sample_root: Path) -> pd.DataFrame:
    return pd.read_csv(sample_root / "Data_Entry_sample.csv", dtype=str, keep_default_na=False)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_nih_blank_sex_view_age_stay_unknown(sample_csv: pd.DataFrame, tmp_path: Path) -> None:
    from chestx.data.labels.stats import demographics
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
    from chestx.data.labels.splits import SplitError, check_patient_disjoint, random_split
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


def test_nih_views_filter_with_blank_view_sorts_and_says_what_it_drops(
        sample_csv: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A blank `View Position` cannot match data.views: those rows are left out with a warning giving their count,
    and the views listed in messages are the non-missing ones (no TypeError sorting NaN with text)."""
    frame = sample_csv.copy()
    frame.loc[[1, 3], "View Position"] = ""
    path = _write(frame, tmp_path / "labels.csv")
    n_pa = int(((sample_csv["View Position"] == "PA") & ~sample_csv.index.isin([1, 3])).sum())
    with caplog.at_level(logging.INFO, logger="chestx.data.datasets.nih"):
        table = read_nih(path, views=["PA", "XX"])
    assert len(table) == n_pa and (table.frame["view"] == "PA").all()
    assert "leaves out 2 rows" in caplog.text and "blank 'View Position'" in caplog.text
    assert "views ['XX'] occur in no row" in caplog.text and "(views present: ['AP', 'PA'])" in caplog.text
    with pytest.raises(DataError, match=r"keeps no row of .*views present: \['AP', 'PA'\]"):
        read_nih(path, views="LL")


def test_run_predictions_keep_na_like_ids_as_text(tmp_path: Path) -> None:
    """predictions.csv round trip: image/patient ids "NA", "None", "null" stay ids; an empty cell stays missing."""
    from chestx.core.run_folder import predictions_frame, read_predictions, write_predictions

    ids = pd.DataFrame({"image_id": ["NA", "None", "x"], "patient_id": ["null", "NA", "p3"],
                        "sex": ["M", np.nan, "F"], "view": ["PA", "AP", np.nan]})
    probs = np.array([[0.2, 0.9], [0.7, np.nan], [0.4, 0.1]])
    labels = np.array([[1.0, 0.0], [0.0, np.nan], [np.nan, 1.0]])
    path = tmp_path / "predictions.csv"
    write_predictions(path, predictions_frame(ids, probs, labels, ["Edema", "Effusion"]))
    got, got_probs, got_labels, names = read_predictions(path)
    assert got["image_id"].tolist() == ["NA", "None", "x"]
    assert got["patient_id"].tolist() == ["null", "NA", "p3"]
    assert got["sex"].isna().tolist() == [False, True, False] and got["view"].isna().tolist() == [False, False, True]
    assert names == ["Edema", "Effusion"]
    np.testing.assert_array_equal(got_probs, probs)
    np.testing.assert_array_equal(got_labels, labels)


def test_roc_panel_with_one_class_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pathology with one class in every test split gets a short text instead of an empty panel."""
    import chestx.comparison.figures as figures
    from chestx.comparison.compare import Comparison, TestSet
    from chestx.runs.discover import Run

    rng = np.random.default_rng(0)
    run = Run(path=tmp_path / "run", status="ok", label="m")
    labels = np.stack([np.tile([0.0, 1.0], 10), np.zeros(20)], axis=1)  # (20, 2): Effusion is all negative
    test_set = TestSet(runs=[run], pathologies=["Edema", "Effusion"], image_ids=np.arange(20).astype(str),
                       patient_ids=np.arange(20).astype(str), labels=labels, probs=rng.random((1, 20, 2)))
    summary = pd.DataFrame({"label": ["m", "m"], "pathology": ["Edema", "Effusion"], "auroc": [0.6, np.nan]})
    comparison = Comparison(runs=[run], groups={"m": [run]}, pathologies=["Edema", "Effusion"], per_run=pd.DataFrame(),
                            summary=summary, pvalues=pd.DataFrame(), reference="m", n_resamples=0, seed=0, ci=0.95,
                            bootstrap_seconds=0.0, test_sets=[test_set])
    saved = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: saved.setdefault("fig", fig) and path)
    figures.roc_grid(comparison, tmp_path / "roc.png")
    edema, effusion = saved["fig"].axes[:2]
    assert [t.get_text() for t in effusion.texts] == ["one class in the test split: no ROC"]
    assert not edema.texts and len(edema.lines) == 2  # the run's curve and the diagonal
    assert effusion.get_legend() is None and edema.get_legend() is not None
    figures.plt.close(saved["fig"])
