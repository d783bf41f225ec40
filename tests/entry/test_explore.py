"""`python -m chestx.explore` (in-process): every file in the Hydra run dir, and the split it reports is the one
training saves. The tables themselves (chestx.data.labels.stats): tests/data/test_stats.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from chestx.data.labels.table import NIH_PATHOLOGIES


def test_cli_writes_into_the_hydra_run_dir(tmp_path: Path, monkeypatch, capsys) -> None:
    """`python -m chestx.explore query=Hernia hydra.run.dir=...` run in-process: every file lands in that folder."""
    from chestx.explore import main

    run = tmp_path / "explore_run"
    monkeypatch.setattr(sys, "argv", ["chestx.explore", f"hydra.run.dir={run}", "query=Hernia", "figures=false"])
    main()
    printed = capsys.readouterr().out
    assert "Patient overlap between splits: train/val 0, train/test 0, val/test 0 (OK: 0)" in printed
    assert "query=Hernia: 20 cases" in printed and f"tables and figures in {run}" in printed
    written = {p.name for p in run.iterdir()}
    assert {"overview.csv", "label_counts.csv", "cooccurrence.csv", "demographics.csv", "patient_overlap.csv",
            "query_Hernia.csv", "explore.log"} <= written, written
    assert set(pd.read_csv(run / "label_counts.csv")["pathology"]) == set(NIH_PATHOLOGIES)


def test_cli_split_equals_the_training_split(compose, sample_root: Path, tmp_path: Path, monkeypatch) -> None:
    """Issue 8: with missing images dropped and No Finding undersampled, `explore` reports the split
    that training saves (split.csv byte for byte), not one whose seeded draws fell on other rows."""
    import shutil

    from hydra.utils import instantiate

    from chestx.explore import main

    root = tmp_path / "sample"
    shutil.copytree(sample_root, root)
    for path in sorted((root / "images").glob("*.png"))[::20]:
        path.unlink()
    options = [f"data.root={root}", "data.missing_images=drop", "data.no_finding_fraction=0.3", "seed=5"]
    cfg = compose(options, tmp_path / "train")
    instantiate(cfg.data).save_split(tmp_path / "train_split.csv")  # what chestx.train writes first
    run = tmp_path / "explore_run"
    monkeypatch.setattr(sys, "argv", ["chestx.explore", f"hydra.run.dir={run}", "figures=false", *options])
    main()
    assert (run / "split.csv").read_bytes() == (tmp_path / "train_split.csv").read_bytes()
    overview = pd.read_csv(run / "overview.csv").set_index("split")
    saved = pd.read_csv(tmp_path / "train_split.csv")["split"].value_counts()
    for name in ("train", "val", "test"):
        assert overview.loc[name, "images"] == saved[name]
