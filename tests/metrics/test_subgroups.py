"""subgroup_table on real labels: the whole official NIH test split checked against an independent computation
(groups from the raw label file with pandas, AUROC and TPR with sklearn, the CI with a materialised patient
bootstrap), the embedded sample's small groups, CheXpert's Male/Female and frontal/lateral, and bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import recall_score, roc_auc_score

from chestx.data.datasets.chexpert import read_chexpert
from chestx.data.datasets.nih import NIHData
from chestx.metrics.bootstrap import draw_patients
from chestx.metrics.subgroups import SUBGROUP_COLUMNS, subgroup_masks, subgroup_table

BANDS = ["0-20", "20-40", "40-60", "60-80", "80+"]


def _scores(labels: np.ndarray, strength: float, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=labels.shape) + strength * np.nan_to_num(labels)
    return 1.0 / (1.0 + np.exp(-logits))  # (N, K)


@pytest.fixture(scope="module")
def nih_test(nih_dir: Path):
    """(frame, probs, labels, pathologies, raw label-file rows) of the official NIH test split (25,596 images)."""
    table, split = NIHData(root=str(nih_dir)).labels_only()
    test = split == "test"
    frame = table.frame[test].reset_index(drop=True)
    labels = table.labels[test].astype(np.float64)
    raw = pd.read_csv(nih_dir / "Data_Entry_2017_v2020.csv").set_index("Image Index").loc[frame["image_id"]]
    return frame, _scores(labels, 1.0, 0), labels, list(table.pathologies), raw.reset_index()


def test_whole_nih_test_split_matches_sklearn(nih_test) -> None:
    frame, probs, labels, names, raw = nih_test
    thresholds = np.linspace(0.45, 0.7, len(names))
    table = subgroup_table(frame, probs, labels, names, thresholds, n_resamples=200)
    assert list(table.columns) == list(SUBGROUP_COLUMNS)
    # the groups, independently from the label file's own columns
    band = pd.cut(raw["Patient Age"], [0, 20, 40, 60, 80, np.inf], right=False, labels=BANDS).astype(str)
    groups = {("all", "all"): np.ones(len(raw), bool)}
    groups |= {("sex", g): (raw["Patient Gender"] == g).to_numpy() for g in ("F", "M")}
    groups |= {("age", b): (band == b).to_numpy() for b in BANDS}
    groups |= {("view", v): (raw["View Position"] == v).to_numpy() for v in ("AP", "PA")}
    assert list(dict.fromkeys(zip(table["attribute"], table["group"]))) == list(groups)
    assert len(table) == len(groups) * len(names)
    rows = table.set_index(["attribute", "group", "pathology"])
    whole = {}
    for (attribute, group), mask in groups.items():
        for k, name in enumerate(names):
            row = rows.loc[(attribute, group, name)]
            y, p = labels[mask, k], probs[mask, k]
            assert (row.n_images, row.n_patients) == (mask.sum(), raw["Patient ID"][mask].nunique())
            assert (row.n_pos, row.n_neg) == ((y == 1).sum(), (y == 0).sum()), (group, name)
            if row.n_pos < 2:  # 80+ has one Edema positive
                assert np.isnan(row.auroc) and np.isnan(row.tpr) and "positives < min_per_class=2" in row.note
                continue
            auc, tpr = roc_auc_score(y, p), recall_score(y, p >= thresholds[k])
            whole.setdefault(name, (auc, tpr))
            assert row.auroc == pytest.approx(auc, abs=1e-12) and row.auroc_low <= auc <= row.auroc_high
            assert row.tpr == pytest.approx(tpr, abs=1e-12) and row.fnr == pytest.approx(1 - tpr, abs=1e-12)
            assert row.auroc_gap == pytest.approx(auc - whole[name][0], abs=1e-12), (group, name)
            assert row.fnr_gap == pytest.approx(whole[name][1] - tpr, abs=1e-12), (group, name)


def test_interval_equals_a_materialised_patient_bootstrap(nih_test) -> None:
    """age 80+ (223 images of 29 patients): each resample rebuilt image by image and scored by sklearn."""
    frame, probs, labels, names, _ = nih_test
    table = subgroup_table(frame, probs, labels, names, None, n_resamples=200, seed=3)
    mask = (frame["age"] >= 80).to_numpy()
    patients, cluster = np.unique(frame["patient_id"][mask].astype(str), return_inverse=True)
    images_of = [np.flatnonzero(cluster == c) for c in range(len(patients))]
    draws = draw_patients(len(patients), 200, seed=3)  # (B, P)
    for name in ["Effusion", "Hernia"]:
        k = names.index(name)
        y, p = labels[mask, k], probs[mask, k]
        values = []
        for draw in draws:
            rows = np.concatenate([images_of[c] for c in draw])
            values.append(roc_auc_score(y[rows], p[rows]) if 0 < y[rows].sum() < len(rows) else np.nan)
        values = np.array(values)
        row = table[(table["group"] == "80+") & (table["pathology"] == name)].iloc[0]
        assert row.auroc_low == pytest.approx(np.nanpercentile(values, 2.5), abs=1e-12), name
        assert row.auroc_high == pytest.approx(np.nanpercentile(values, 97.5), abs=1e-12), name
        invalid = int(np.isnan(values).sum())
        assert (f"CI over {200 - invalid} of 200 resamples" in row.note) == (invalid > 0), (name, row.note)


def test_small_groups_of_the_sample_say_why(sample_root: Path) -> None:
    """124 test images: bands with 1 and 9 images, pathologies with 0-1 positives in a group; nothing crashes."""
    table, split = NIHData(root=str(sample_root), csv=str(sample_root / "Data_Entry_sample.csv"),
                           split="random").labels_only()
    test = split == "test"
    labels = table.labels[test].astype(np.float64)
    out = subgroup_table(table.frame[test].reset_index(drop=True), _scores(labels, 1.5, 1), labels,
                         table.pathologies, np.full(14, 0.6), min_images=20, min_per_class=2, n_resamples=200)
    known = out["n_pos"] + out["n_neg"]
    no_auc = (known < 20) | (out["n_pos"] < 2) | (out["n_neg"] < 2)
    assert out["auroc"].isna().equals(no_auc) and out["auroc_gap"].isna().equals(no_auc)
    assert out["tpr"].isna().equals((known < 20) | (out["n_pos"] < 2))
    assert out.loc[known < 20, "note"].str.contains(r"labelled images < min_images=20").all()
    few = (known >= 20) & (out["n_pos"] < 2)
    assert few.any() and out.loc[few, "note"].str.contains("positives < min_per_class=2").all()
    assert (out.loc[~no_auc, "auroc_low"] <= out.loc[~no_auc, "auroc"]).all()
    assert set(out.loc[out["attribute"] == "age", "group"]) == {"0-20", "20-40", "40-60", "60-80", "80+"}
    blind = subgroup_table(table.frame[test].reset_index(drop=True), _scores(labels, 1.5, 1), labels,
                           table.pathologies, None, n_resamples=50)
    assert blind["tpr"].isna().all() and blind["fnr_gap"].isna().all()
    assert blind.loc[blind["n_pos"] + blind["n_neg"] >= 20].query("n_pos >= 2")["note"].str.contains(
        "no validation-frozen threshold").all()


def test_chexpert_sex_views_and_laterals(chexpert_dir: Path) -> None:
    raw = pd.read_csv(chexpert_dir / "valid.csv")
    both = read_chexpert(chexpert_dir / "valid.csv", frontal_only=False).frame
    groups = {(a, g): int(m.sum()) for a, g, m in subgroup_masks(both)}
    assert {g: n for (a, g), n in groups.items() if a == "sex"} == {"F": (raw["Sex"] == "Female").sum(),
                                                                     "M": (raw["Sex"] == "Male").sum()}
    lateral = (raw["Frontal/Lateral"] == "Lateral").sum()
    assert groups[("frontal_lateral", "Lateral")] == groups[("view", "Lateral")] == lateral > 0
    assert groups[("view", "AP")] == (raw["AP/PA"] == "AP").sum()
    for attribute in ("sex", "age", "view", "frontal_lateral"):
        assert sum(n for (a, _), n in groups.items() if a == attribute) == len(raw), attribute
    frontal = read_chexpert(chexpert_dir / "valid.csv", frontal_only=True).frame
    assert {a for a, _, _ in subgroup_masks(frontal)} == {"sex", "age", "view"}


def test_bad_input_names_the_key(sample_root: Path) -> None:
    table, _ = NIHData(root=str(sample_root), csv=str(sample_root / "Data_Entry_sample.csv"),
                       split="random").labels_only()
    frame, labels = table.frame, table.labels.astype(np.float64)
    probs = _scores(labels, 1.0, 2)
    names = table.pathologies
    with pytest.raises(ValueError, match=r"age_edges=\[40.0, 20.0\] must be .*strictly increasing"):
        subgroup_table(frame, probs, labels, names, age_edges=[40.0, 20.0])
    with pytest.raises(ValueError, match=r"min_images=0 must be an integer >= 1"):
        subgroup_table(frame, probs, labels, names, min_images=0)
    with pytest.raises(ValueError, match=r"lacks the metadata columns \['sex'\]"):
        subgroup_table(frame.drop(columns="sex"), probs, labels, names)
    with pytest.raises(ValueError, match=r"13 thresholds for 14 pathologies"):
        subgroup_table(frame, probs, labels, names, np.zeros(13))
