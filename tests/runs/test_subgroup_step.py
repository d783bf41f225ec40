"""subgroups.csv written by a real training run (after the clinical step, with its frozen thresholds) and by
`chestx.evaluate` (thresholds by Youden's J on the validation predictions); bad options stop a run before training.
TPR / FNR of every group are recounted by the `check_subgroup_rates` fixture (tests/conftest.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.core.run_folder import read_predictions
from chestx.runs.subgroups import read_subgroups


def test_training_run_writes_subgroups(clinical_run_dir: Path, sample_root: Path, check_subgroup_rates) -> None:
    ids, _, _, _ = read_predictions(clinical_run_dir / "predictions.csv")
    raw = pd.read_csv(sample_root / "Data_Entry_sample.csv").set_index("Image Index").loc[ids["image_id"]]
    assert ids["sex"].tolist() == raw["Patient Gender"].tolist()
    assert ids["view"].tolist() == raw["View Position"].tolist()
    assert np.array_equal(ids["age"].to_numpy(float), raw["Patient Age"].to_numpy(float))
    table = read_subgroups(clinical_run_dir / "subgroups.csv")
    assert table["attribute"].unique().tolist() == ["all", "sex", "age", "view"]
    frozen = pd.read_csv(clinical_run_dir / "thresholds.csv")["threshold"].to_numpy()
    check_subgroup_rates(table, clinical_run_dir, frozen)
    missing = table["auroc"].isna() | table["tpr"].isna()
    assert (table.loc[missing, "note"] != "").all(), "every missing number says why"


def test_bad_option_stops_the_run_before_training(compose, tiny_overrides, tmp_path: Path) -> None:
    from hydra.errors import InstantiationException

    from chestx.train import train

    with pytest.raises(InstantiationException, match=r"subgroups.age_edges=\[60, 40\] must be finite, strictly increasing"):
        train(compose([*tiny_overrides, "model=resnet18", "subgroups.age_edges=[60,40]"], tmp_path))
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "predictions.csv").exists()


def test_evaluate_writes_subgroups(sample_root: Path, tmp_path: Path, monkeypatch, brute_force_youden,
                                  check_subgroup_rates) -> None:
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
    check_subgroup_rates(read_subgroups(run / "subgroups.csv"), run, youden)


# `python -m chestx.clinical run=<copy> method=f1` refreshes subgroups.csv at the new thresholds:
# tests/runs/test_clinical.py::test_cli_reruns_on_a_run_folder (a real subprocess, checked with the same rates).
