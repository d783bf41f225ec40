"""CheXpert label reading and uncertainty policies, on Stanford's real train.csv / valid.csv."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.data.datasets.chexpert import UNCERTAINTY_POLICIES, read_chexpert, resolve_uncertainty
from chestx.data.labels.table import CHEXPERT_COMPETITION_TASKS, CHEXPERT_PATHOLOGIES, DataError

TASKS = list(CHEXPERT_COMPETITION_TASKS)


@pytest.fixture(scope="module")
def train_csv(chexpert_dir: Path) -> Path:
    return chexpert_dir / "train.csv"


@pytest.fixture(scope="module")
def raw(train_csv: Path) -> pd.DataFrame:
    return pd.read_csv(train_csv)


def test_ones_counts_positive_and_uncertain(train_csv: Path, raw: pd.DataFrame) -> None:
    t = read_chexpert(train_csv, uncertainty="ones")
    assert t.labels.shape == (223_414, 14) and t.pathologies == list(CHEXPERT_PATHOLOGIES)
    for k, name in enumerate(CHEXPERT_PATHOLOGIES):
        assert t.labels[:, k].sum() == raw[name].isin([1.0, -1.0]).sum(), name
        np.testing.assert_array_equal(t.uncertain[:, k], (raw[name] == -1.0).to_numpy())
    assert not np.isnan(t.labels).any()
    f = t.frame
    assert f.loc[0, "patient_id"] == "patient00001" and f["patient_id"].nunique() == 64_540
    assert f.loc[0, "image_id"] == f.loc[0, "path"] == "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"


def test_zeros_counts_positives_only(train_csv: Path, raw: pd.DataFrame) -> None:
    t = read_chexpert(train_csv, pathologies=TASKS, uncertainty="zeros")
    assert t.pathologies == TASKS
    for k, name in enumerate(TASKS):
        assert t.labels[:, k].sum() == (raw[name] == 1.0).sum(), name
    assert t.uncertain.sum() == (raw[TASKS] == -1.0).to_numpy().sum()


def test_ignore_masks_exactly_uncertain(train_csv: Path, raw: pd.DataFrame) -> None:
    t = read_chexpert(train_csv, pathologies=TASKS, uncertainty="ignore")
    np.testing.assert_array_equal(np.isnan(t.labels), (raw[TASKS] == -1.0).to_numpy())
    np.testing.assert_array_equal(t.uncertain, np.isnan(t.labels))


def test_blank_mask(train_csv: Path, raw: pd.DataFrame) -> None:
    """Blank is unknown, except in No Finding = 1 rows, where it is a negative (Support Devices excepted)."""
    names = [*TASKS, "Support Devices"]
    t = read_chexpert(train_csv, pathologies=names, uncertainty="zeros", blank="mask")
    normal = (raw["No Finding"] == 1.0).to_numpy()[:, None]  # (N, 1)
    blank = raw[names].isna().to_numpy()  # (N, K)
    expected_nan = blank & ~normal
    expected_nan[:, -1] = blank[:, -1]  # Support Devices stays unknown even in normal rows
    np.testing.assert_array_equal(np.isnan(t.labels), expected_nan)
    np.testing.assert_array_equal(t.labels[blank & normal & ~expected_nan], 0.0)


def test_blank_mask_no_finding_gives_negatives(chexpert_dir: Path) -> None:
    """Issue 8 bug 3: frontal Atelectasis under mask had 1,025 negatives beside 29,718 positives
    (torchxrayvision 1.5.7: 17,621 negatives). Normal studies now contribute their negatives."""
    t = read_chexpert(chexpert_dir / "train.csv", pathologies=TASKS, blank="mask", frontal_only=True)
    atelectasis = t.labels[:, TASKS.index("Atelectasis")]
    assert int((atelectasis == 1).sum()) == 29_720
    assert int((atelectasis == 0).sum()) == 17_625  # 1,025 stated negatives + 16,600 normal frontal studies
    assert int(t.frame["no_finding"].sum()) == 16_974
    # torchxrayvision 1.5.7 keeps views AP and PA, leaving out 17 frontal rows whose AP/PA says LL / RL:
    # on those rows the counts are exactly its 29,718 positives and 17,621 negatives
    ap_pa = t.frame["view"].isin(["AP", "PA"]).to_numpy()
    assert int((atelectasis[ap_pa] == 1).sum()) == 29_718 and int((atelectasis[ap_pa] == 0).sum()) == 17_621


def test_frontal_only(train_csv: Path, raw: pd.DataFrame) -> None:
    t = read_chexpert(train_csv, pathologies=TASKS, frontal_only=True)
    assert len(t) == (raw["Frontal/Lateral"] == "Frontal").sum() == 191_027
    assert set(t.frame["view"]) <= {"AP", "PA", "LL", "RL"}


def test_frontal_only_says_how_many_blank_views_it_drops(chexpert_dir: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    raw = pd.read_csv(chexpert_dir / "valid.csv")
    raw.loc[[0, 4, 9], "Frontal/Lateral"] = np.nan
    raw.to_csv(tmp_path / "valid.csv", index=False)
    with caplog.at_level(logging.INFO, logger="chestx.data.datasets.chexpert"):
        table = read_chexpert(tmp_path / "valid.csv", pathologies=TASKS, frontal_only=True)
    assert len(table) == (raw["Frontal/Lateral"] == "Frontal").sum()
    assert "leaves out 3 rows" in caplog.text and "blank 'Frontal/Lateral'" in caplog.text


def test_lsr_ones_range_and_seed(train_csv: Path) -> None:
    a = read_chexpert(train_csv, pathologies=TASKS, uncertainty="lsr_ones", seed=3)
    soft = a.labels[a.uncertain]
    assert soft.size > 50_000 and soft.min() >= 0.55 and soft.max() <= 0.85 and soft.std() > 0.05
    assert set(np.unique(a.labels[~a.uncertain])) <= {0.0, 1.0}
    b = read_chexpert(train_csv, pathologies=TASKS, uncertainty="lsr_ones", seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = read_chexpert(train_csv, pathologies=TASKS, uncertainty={"default": "lsr_ones", "Edema": "lsr_zeros"},
                      lsr_zeros=(0.1, 0.2), seed=4)
    edema = c.labels[c.uncertain[:, 3], 3]
    assert edema.min() >= 0.1 and edema.max() <= 0.2
    other = c.uncertain[:, :3]
    assert (c.labels[:, :3][other] != a.labels[:, :3][other]).mean() > 0.99  # another seed, other draws


def test_per_pathology_policy(train_csv: Path, raw: pd.DataFrame) -> None:
    policy = {"default": "zeros", "Atelectasis": "ones", "Edema": "ones"}
    t = read_chexpert(train_csv, pathologies=TASKS, uncertainty=policy)
    for k, name in enumerate(TASKS):
        counted = [1.0, -1.0] if name in ("Atelectasis", "Edema") else [1.0]
        assert t.labels[:, k].sum() == raw[name].isin(counted).sum(), name
    assert resolve_uncertainty({"Edema": "multiclass"}, TASKS) == ["ignore"] * 3 + ["multiclass", "ignore"]


def test_multiclass(train_csv: Path, raw: pd.DataFrame) -> None:
    t = read_chexpert(train_csv, pathologies=TASKS, uncertainty="multiclass")
    unc = (raw[TASKS] == -1.0).to_numpy()
    np.testing.assert_array_equal(t.uncertain, unc)
    assert np.isnan(t.labels[unc]).all() and not np.isnan(t.labels[~unc]).any()


def test_valid_csv_has_no_uncertain(chexpert_dir: Path) -> None:
    t = read_chexpert(chexpert_dir / "valid.csv", pathologies=TASKS, uncertainty="ignore")
    assert t.labels.shape == (234, 5) and not t.uncertain.any() and not np.isnan(t.labels).any()
    assert t.frame["image_id"].str.startswith("CheXpert-v1.0-small/valid/patient").all()


def test_bad_options_list_valid_choices(chexpert_dir: Path) -> None:
    csv = chexpert_dir / "valid.csv"
    with pytest.raises(DataError, match="'maybe'.*lsr_ones"):
        read_chexpert(csv, uncertainty="maybe")
    with pytest.raises(DataError, match=r"\['Effusion'\].*'default', 'Atelectasis'"):
        read_chexpert(csv, pathologies=TASKS, uncertainty={"Effusion": "ones"})
    with pytest.raises(DataError, match="Effusion.*valid names"):
        read_chexpert(csv, pathologies=["Effusion"])
    with pytest.raises(DataError, match="blank"):
        read_chexpert(csv, blank="ones")
    with pytest.raises(DataError, match="lsr_ones"):
        read_chexpert(csv, uncertainty="lsr_ones", lsr_ones=(0.9, 0.5))
    assert set(UNCERTAINTY_POLICIES) == {"ignore", "zeros", "ones", "multiclass", "lsr_zeros", "lsr_ones"}


def test_bad_files(tmp_path: Path, chexpert_dir: Path) -> None:
    raw = pd.read_csv(chexpert_dir / "valid.csv")
    raw.drop(columns=["Edema"]).to_csv(tmp_path / "cols.csv", index=False)
    with pytest.raises(DataError, match=r"cols.csv.*\['Edema'\].*Expected columns"):
        read_chexpert(tmp_path / "cols.csv")
    raw.loc[5, "Edema"] = 2.0
    raw.to_csv(tmp_path / "values.csv", index=False)
    with pytest.raises(DataError, match="values.csv.*'Edema'=2.0"):
        read_chexpert(tmp_path / "values.csv")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_chexpert(tmp_path / "missing.csv")
