"""chestx.data.labels.stats.explore against independent pandas counts: embedded sample, full NIH label file, CheXpert
train.csv. The command line (`python -m chestx.explore`): tests/entry/test_explore.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.data.datasets.chexpert import CheXpertData
from chestx.data.datasets.nih import NIHData
from chestx.data.labels.table import CHEXPERT_COMPETITION_TASKS, NIH_PATHOLOGIES
from chestx.data.labels.stats import explore, format_report


def _nih_truth(csv: Path, rows: pd.Series | None = None) -> pd.DataFrame:
    """(N, 14) 0/1 frame from 'Finding Labels', independent of chestx's reader."""
    raw = pd.read_csv(csv)
    if rows is not None:
        raw = raw[raw["Image Index"].isin(rows)]
    return raw["Finding Labels"].str.get_dummies(sep="|").reindex(columns=list(NIH_PATHOLOGIES), fill_value=0)


def test_sample_counts_match_pandas(sample_root: Path, tmp_path: Path) -> None:
    from PIL import Image

    dm = NIHData(root=str(sample_root), csv=str(sample_root / "Data_Entry_sample.csv"), split="random")
    table, split = dm.labels_only()
    result = explore(table, split, tmp_path, query_name="edema")
    counts = result["label_counts"].set_index(["split", "pathology"])
    truth = _nih_truth(sample_root / "Data_Entry_sample.csv").set_index(
        pd.read_csv(sample_root / "Data_Entry_sample.csv")["Image Index"])
    for name in ("train", "val", "test", "all"):
        ids = table.frame["image_id"] if name == "all" else table.frame["image_id"][split == name]
        part = truth.loc[ids]
        for p in NIH_PATHOLOGIES:
            assert counts.loc[(name, p), "positive"] == part[p].sum(), (name, p)
            assert counts.loc[(name, p), "negative"] == len(part) - part[p].sum()
    assert (counts["uncertain"] == 0).all() and (counts["unknown"] == 0).all()
    edema = truth[truth["Edema"] == 1].drop(columns="Edema").sum().sort_values(ascending=False)
    q = result["query_table"].set_index("pathology")["cases"]
    assert result["query"]["cases"] == truth["Edema"].sum() == 18
    assert q.to_dict() == edema.to_dict() and list(q.to_numpy()) == sorted(q.to_numpy(), reverse=True)
    co = result["cooccurrence"]
    co_all = co[co["split"] == "all"].set_index("pathology")[list(NIH_PATHOLOGIES)]
    np.testing.assert_array_equal(co_all.to_numpy(), truth.T.to_numpy() @ truth.to_numpy())
    assert (result["patient_overlap"]["shared_patients"] == 0).all()
    sex = result["demographics"].query("variable == 'sex' and split == 'all'").set_index("value")["count"]
    assert sex.to_dict() == pd.read_csv(sample_root / "Data_Entry_sample.csv")["Patient Gender"].value_counts().to_dict()
    # the files hold the tables checked above, and the figures are images
    for key in ("overview", "label_counts", "cooccurrence", "demographics", "patient_overlap"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / f"{key}.csv"), result[key], check_dtype=False,
                                      rtol=1e-3, obj=key)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "query_Edema.csv"), result["query_table"], check_dtype=False,
                                  rtol=1e-3)
    for name in ("cooccurrence.png", "demographics.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and min(image.size) >= 200, (name, image.size)
            image.verify()
    assert "(OK: 0)" in format_report(result)


@pytest.mark.slow
def test_full_nih_label_file(nih_dir: Path, tmp_path: Path) -> None:
    table, split = NIHData(root=str(nih_dir)).labels_only()  # official split, no images
    result = explore(table, split, tmp_path, query_name="Pneumonia", figures=False)
    assert len(table) == 112120
    overview = result["overview"].set_index("split")
    assert overview.loc["all", "patients"] == 30805 and overview.loc["test", "images"] == 25596
    counts = result["label_counts"].set_index(["split", "pathology"])
    csv = nih_dir / "Data_Entry_2017_v2020.csv"
    test_ids = pd.Series((nih_dir / "test_list.txt").read_text().split())
    for name, truth in (("all", _nih_truth(csv)), ("test", _nih_truth(csv, test_ids))):
        got = np.array([counts.loc[(name, p), "positive"] for p in NIH_PATHOLOGIES])
        np.testing.assert_array_equal(got, truth.sum().to_numpy())
    assert (result["patient_overlap"]["shared_patients"] == 0).all()


@pytest.mark.slow
def test_chexpert_ones_policy_counts(chexpert_dir: Path, tmp_path: Path) -> None:
    dm = CheXpertData(root=str(chexpert_dir), uncertainty="ones")
    table, split = dm.labels_only()
    result = explore(table, split, tmp_path, query_name="Edema", figures=False)
    raw = pd.concat([pd.read_csv(chexpert_dir / f) for f in ("train.csv", "valid.csv")], ignore_index=True)
    raw = raw[raw["Frontal/Lateral"] == "Frontal"]
    tasks = list(CHEXPERT_COMPETITION_TASKS)
    counts = result["label_counts"].query("split == 'all'").set_index("pathology")
    assert len(raw) == len(table) == 191229
    for p in tasks:
        assert counts.loc[p, "positive"] == raw[p].isin([1.0, -1.0]).sum(), p  # ones: uncertain -> positive
        assert counts.loc[p, "uncertain"] == (raw[p] == -1.0).sum(), p
        assert counts.loc[p, "negative"] == (raw[p].fillna(0.0) == 0.0).sum(), p  # blank -> 0
    pos = raw[tasks].isin([1.0, -1.0])
    edema = pos[pos["Edema"]].drop(columns="Edema").sum().sort_values(ascending=False)
    assert result["query"]["cases"] == int(pos["Edema"].sum())
    assert result["query_table"].set_index("pathology")["cases"].to_dict() == edema.to_dict()


def test_unknown_query_lists_the_choices(sample_root: Path, tmp_path: Path) -> None:
    dm = NIHData(root=str(sample_root), csv=str(sample_root / "Data_Entry_sample.csv"), split="random")
    table, split = dm.labels_only()
    with pytest.raises(ValueError, match="query='Covid'.*Hernia"):
        explore(table, split, tmp_path, query_name="Covid", figures=False)
