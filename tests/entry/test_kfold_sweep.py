"""A real 3-fold sweep through the command line, `python -m chestx.train -m data.folds=3 data.fold=0,1,2`
(chestx.train.main in-process, Hydra's basic launcher runs the six jobs one after another), for two backbones
on the embedded sample, then `python -m chestx.report` over the sweep folder (a real subprocess): the folds
are replicates (one column per backbone, mean ± sd over n = 3 folds) and DeLong pairs runs of one fold."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

MODELS = ("resnet18", "mobilenetv2")


@pytest.fixture(scope="module")
def fold_sweep(tiny_overrides: tuple[str, ...], tmp_path_factory) -> Path:
    from chestx.train import main

    tiny = [o for o in tiny_overrides if not o.startswith("clinical.")]  # these runs switch the clinical step off
    out = tmp_path_factory.mktemp("kfold") / "sweep"
    argv = ["chestx.train", "-m", "data.folds=3", "data.fold=0,1,2", f"model={','.join(MODELS)}", *tiny,
            "data.image_size=32", "trainer.limit_train_batches=1", "clinical=none", f"hydra.sweep.dir={out}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        main()
    return out


def _runs(sweep: Path) -> dict[tuple[str, int], Path]:
    """(model, fold) -> run folder, from each run's resolved config."""
    runs = {}
    for folder in sorted(p for p in sweep.iterdir() if (p / "config.yaml").is_file()):
        config = yaml.safe_load((folder / "config.yaml").read_text())
        runs[(config["model"]["name"], config["data"]["fold"])] = folder
    return runs


@pytest.mark.slow
def test_fold_sweep_runs_split_and_reports(fold_sweep: Path, repo_root: Path, tmp_path: Path) -> None:
    runs = _runs(fold_sweep)
    assert sorted(runs) == sorted((m, f) for m in MODELS for f in range(3))
    # split.csv: fold i validates, the other folds train, the test split is the same for every run
    splits = {key: pd.read_csv(folder / "split.csv", dtype=str, keep_default_na=False) for key, folder in runs.items()}
    test_ids = {tuple(s.loc[s["split"] == "test", "image_id"]) for s in splits.values()}
    assert len(test_ids) == 1 and len(next(iter(test_ids))) == 124
    for (model, fold), split in splits.items():
        assert (split.loc[split["split"] == "val", "fold"] == str(fold)).all()
        assert (split.loc[split["split"] == "train", "fold"] != str(fold)).all()
    val = [set(splits[(MODELS[0], f)].query("split == 'val'")["patient_id"]) for f in range(3)]
    pool = set(splits[(MODELS[0], 0)].query("split != 'test'")["patient_id"])
    assert not (val[0] & val[1] or val[0] & val[2] or val[1] & val[2]) and set().union(*val) == pool

    report = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "chestx.report", f"runs=[{fold_sweep}]", f"hydra.run.dir={report}"],
                          cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(report / "auroc_table.csv").set_index("pathology")
    assert sorted(c for c in table.columns if c in MODELS) == sorted(MODELS), "one column per backbone"
    for model in MODELS:
        # each run's own test AUROC (auroc.csv, written by training), averaged over the 3 folds
        means = [pd.read_csv(runs[(model, f)] / "auroc.csv").set_index("pathology").loc["mean", "auroc"]
                 for f in range(3)]
        assert table.loc["mean", f"{model} n_replicates"] == 3
        assert table.loc["mean", model] == pytest.approx(np.mean(means), abs=1e-4)
        assert table.loc["mean", f"{model} sd"] == pytest.approx(np.std(means, ddof=1), abs=1e-4)
    md = (report / "auroc_table.md").read_text()
    assert "Replicates: folds 0..2 of data.folds=3 (n = 3 per column)" in md and " ± " in md
    assert "| run | seed | fold |" in md
    pvalues = pd.read_csv(report / "pvalues.csv")
    assert len(pvalues) == 3 * 14
    fold_of = {folder.name: fold for (_, fold), folder in runs.items()}
    assert all(fold_of[str(r)] == fold_of[str(ref)] == fold
               for r, ref, fold in zip(pvalues["run"], pvalues["reference_run"], pvalues["fold"]))
