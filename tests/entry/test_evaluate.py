"""`python -m chestx.evaluate`: CheXpert's own `Path` ids through the command line (in-process), a failed run's
metrics.json and exit status (a real subprocess), and the message when neither predictions nor a checkpoint is given.
What evaluate computes (chestx.runs.scoring): tests/runs/test_scoring.py; `ckpt=` on another dataset:
tests/inference/test_external.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from chestx.core.run_folder import read_predictions


def _scores(labels: np.ndarray, strength: float, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=labels.shape) + strength * np.nan_to_num(labels)
    return 1.0 / (1.0 + np.exp(-logits))  # (N, K)


def _write(path: Path, ids, probs: np.ndarray, names: list[str], id_column="image_id", prefix="prob_") -> Path:
    frame = pd.DataFrame({id_column: list(ids)} | {prefix + p: probs[:, k] for k, p in enumerate(names)})
    frame.to_csv(path, index=False, float_format="%.9g")
    return path


@pytest.fixture
def chexpert_labels(chexpert_dir: Path, tmp_path: Path) -> Path:
    """A CheXpert root with the first 2,000 rows of the real train.csv and the whole real valid.csv (no images)."""
    root = tmp_path / "chexpert"
    root.mkdir()
    pd.read_csv(chexpert_dir / "train.csv", nrows=2000).to_csv(root / "train.csv", index=False)
    (root / "valid.csv").write_bytes((chexpert_dir / "valid.csv").read_bytes())
    return root


def test_chexpert_path_column_through_the_cli(chexpert_labels: Path, tmp_path: Path, monkeypatch) -> None:
    """`python -m chestx.evaluate predictions=... data=chexpert` (in-process): ids from CheXpert's own `Path`."""
    from chestx.evaluate import main

    valid = pd.read_csv(chexpert_labels / "valid.csv")
    valid = valid[valid["Frontal/Lateral"] == "Frontal"].reset_index(drop=True)  # the test split (frontal only)
    tasks = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    truth = valid[tasks].fillna(0.0).to_numpy()  # (202, 5): valid.csv has no uncertain labels
    probs = _scores(truth, 1.5, 3)
    csv = _write(tmp_path / "chexpert_model.csv", valid["Path"], probs, tasks, id_column="Path")
    run = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["chestx.evaluate", f"predictions={csv}", "data=chexpert",
                                      f"data.root={chexpert_labels}", f"hydra.run.dir={run}"])
    main()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["n_test"] == len(valid) == 202
    for k, name in enumerate(tasks):
        assert abs(metrics[f"test/auroc/{name}"] - roc_auc_score(truth[:, k], probs[:, k])) < 1e-9, name
    ids, _, _, _ = read_predictions(run / "predictions.csv")
    assert sorted(ids["image_id"]) == sorted(valid["Path"])


@pytest.mark.slow
def test_cli_writes_failed_metrics(repo_root: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "chestx.evaluate", f"predictions={tmp_path / 'none.csv'}",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "does not exist" in metrics["error"]
    assert (tmp_path / "run" / "error.txt").is_file()


def test_evaluate_wants_predictions_or_a_checkpoint(tmp_path: Path, monkeypatch, capsys) -> None:
    import sys

    from chestx.evaluate import main

    monkeypatch.setattr(sys, "argv", ["chestx.evaluate", f"hydra.run.dir={tmp_path}"])
    with pytest.raises(SystemExit):  # Hydra prints the error and exits 1
        main()
    assert "either predictions=<a CSV> or ckpt=<a .ckpt of chestx.train>" in capsys.readouterr().err
