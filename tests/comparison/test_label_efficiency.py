"""chestx.comparison.label_efficiency on real run folders: a fine-tune run and a linear-probe run of ResNet-18 on the
embedded NIH sample (every run so far trains on all its labels: fraction 1.0)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chestx.comparison.label_efficiency import label_efficiency_figure, label_efficiency_table, run_fraction
from chestx.metrics.auroc import masked_auroc
from chestx.runs.discover import Run, load_runs


@pytest.mark.slow
def test_table_and_figure_from_a_probe_and_a_fine_tune_run(clinical_run_dir: Path, compose, tiny_overrides,
                                                           tmp_path: Path) -> None:
    from chestx.train import train

    probe_dir = tmp_path / "probe"
    assert train(compose([*tiny_overrides, "model=resnet18", "data.image_size=96", "experiment=linear_probe"],
                         probe_dir))["status"] == "ok"
    runs = load_runs([clinical_run_dir, probe_dir])
    table = label_efficiency_table(runs, n_resamples=200)
    assert table[["model", "mode", "fraction", "n_seeds"]].values.tolist() == [
        ["resnet18", "fine-tune", 1.0, 1], ["resnet18", "probe", 1.0, 1]]
    for row, run in zip(table.itertuples(), sorted(runs, key=lambda r: r.path.name != clinical_run_dir.name)):
        assert row.auroc_mean == pytest.approx(run.metrics["test/auroc_mean"])
        mean = masked_auroc(run.probs, run.labels, run.pathologies).set_index("pathology").loc["mean", "auroc"]
        assert row.auroc_mean == pytest.approx(mean, abs=1e-6)  # metrics.json agrees with predictions.csv
        assert row.ci_lower <= row.auroc_mean <= row.ci_upper and np.isnan(row.auroc_sd)
    path = label_efficiency_figure(table, tmp_path / "label_efficiency.png")
    assert path.is_file() and path.stat().st_size > 5000


def test_fraction_and_mode_read_from_the_run_config(tmp_path: Path) -> None:
    assert run_fraction(Run(path=tmp_path, status="ok", config={"data": {"train_fraction": 0.1}})) == 0.1
    assert run_fraction(Run(path=tmp_path, status="ok", config={"data": {}})) == 1.0
