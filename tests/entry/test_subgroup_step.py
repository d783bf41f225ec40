"""subgroups.csv written by a real training run (after the clinical step, with its frozen thresholds) and by
`chestx.evaluate` (thresholds by Youden's J on the validation predictions); bad options stop a run before training."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.core.run_folder import read_predictions
from chestx.runs.subgroups import read_subgroups


def _check_rates(table: pd.DataFrame, run: Path, thresholds: np.ndarray) -> None:
    """TPR / FNR of every group recounted from predictions.csv, its metadata columns and `thresholds`."""
    ids, probs, labels, names = read_predictions(run / "predictions.csv")
    band = pd.cut(ids["age"], [0, 20, 40, 60, 80, np.inf], right=False,
                  labels=["0-20", "20-40", "40-60", "60-80", "80+"]).astype(str)
    member = {"all": lambda g: np.ones(len(ids), bool), "sex": lambda g: (ids["sex"] == g).to_numpy(),
              "age": lambda g: (band == g).to_numpy(), "view": lambda g: (ids["view"] == g).to_numpy()}
    checked = 0
    for row in table.itertuples():
        k = names.index(row.pathology)
        mask = member[row.attribute](row.group) & (labels[:, k] == 1)
        assert row.n_pos == mask.sum(), (row.attribute, row.group, row.pathology)
        if np.isnan(thresholds[k]):  # one class in validation
            assert np.isnan(row.threshold) and np.isnan(row.tpr)
            continue
        assert row.threshold == pytest.approx(thresholds[k], rel=1e-5)
        if not np.isnan(row.tpr):
            assert row.tpr == pytest.approx((probs[mask, k] >= thresholds[k]).mean(), abs=1e-6)
            checked += 1
    assert checked >= len(names)


def test_training_run_writes_subgroups(clinical_run_dir: Path, sample_root: Path) -> None:
    ids, _, _, _ = read_predictions(clinical_run_dir / "predictions.csv")
    raw = pd.read_csv(sample_root / "Data_Entry_sample.csv").set_index("Image Index").loc[ids["image_id"]]
    assert ids["sex"].tolist() == raw["Patient Gender"].tolist()
    assert ids["view"].tolist() == raw["View Position"].tolist()
    assert np.array_equal(ids["age"].to_numpy(float), raw["Patient Age"].to_numpy(float))
    table = read_subgroups(clinical_run_dir / "subgroups.csv")
    assert table["attribute"].unique().tolist() == ["all", "sex", "age", "view"]
    frozen = pd.read_csv(clinical_run_dir / "thresholds.csv")["threshold"].to_numpy()
    _check_rates(table, clinical_run_dir, frozen)
    missing = table["auroc"].isna() | table["tpr"].isna()
    assert (table.loc[missing, "note"] != "").all(), "every missing number says why"


def test_bad_option_stops_the_run_before_training(compose, tiny_overrides, tmp_path: Path) -> None:
    from hydra.errors import InstantiationException

    from chestx.train import train

    with pytest.raises(InstantiationException, match=r"subgroups.age_edges=\[60, 40\] must be finite, strictly increasing"):
        train(compose([*tiny_overrides, "model=resnet18", "subgroups.age_edges=[60,40]"], tmp_path))
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "predictions.csv").exists()


def test_evaluate_writes_subgroups(sample_root: Path, tmp_path: Path, monkeypatch, brute_force_youden) -> None:
    """`python -m chestx.evaluate` (in-process) on the sample: thresholds by Youden's J on predictions_val.csv."""
    from chestx.data.datasets.nih import NIHData
    from chestx.evaluate import main

    table, _ = NIHData(root=str(sample_root), csv=str(sample_root / "Data_Entry_sample.csv"),
                       split="random").labels_only()
    logits = np.random.default_rng(5).normal(size=table.labels.shape) + 1.5 * table.labels
    csv = tmp_path / "theirs.csv"
    pd.DataFrame({"Image Index": table.frame["image_id"]}
                 | {p: 1 / (1 + np.exp(-logits[:, k])) for k, p in enumerate(table.pathologies)}).to_csv(csv, index=False)
    for name, extra in (("run", ["subgroups.resamples=100"]), ("off", ["subgroups=none"])):
        monkeypatch.setattr(sys, "argv", ["chestx.evaluate", f"predictions={csv}", "prefix=",
                                          f"hydra.run.dir={tmp_path / name}", *extra])
        main()
    assert not (tmp_path / "off" / "subgroups.csv").exists()
    run = tmp_path / "run"
    _, vprobs, vlabels, names = read_predictions(run / "predictions_val.csv")
    youden = np.array([brute_force_youden(vprobs[:, k], vlabels[:, k]) for k in range(len(names))])
    _check_rates(read_subgroups(run / "subgroups.csv"), run, youden)


def test_clinical_rerun_refreshes_subgroups(clinical_run_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """`python -m chestx.clinical run=<copy> method=f1` (in-process): subgroups.csv follows the new thresholds."""
    import shutil

    from chestx.clinical import main

    copy = tmp_path / "run"
    shutil.copytree(clinical_run_dir, copy)
    monkeypatch.setattr(sys, "argv", ["chestx.clinical", f"run={copy}", "method=f1", "cams=0",
                                      "subgroups.resamples=100"])
    main()
    thresholds = pd.read_csv(copy / "thresholds.csv")
    assert set(thresholds["method"]) == {"f1"}
    _check_rates(read_subgroups(copy / "subgroups.csv"), copy, thresholds["threshold"].to_numpy())
