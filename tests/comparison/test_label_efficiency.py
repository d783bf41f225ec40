"""chestx.comparison.label_efficiency on real run folders: a fine-tune run and a linear-probe run of ResNet-18 on the
embedded NIH sample (fraction 1.0), and the report's section with a run on 30 % of the training patients."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
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


@pytest.mark.slow
def test_report_section_only_when_runs_differ_in_train_fraction(clinical_run_dir: Path, compose, tiny_overrides,
                                                                 tmp_path: Path) -> None:
    """chestx.report on the shared fine-tune run (fraction 1.0) and a real run on 30 % of the training patients:
    the "AUROC vs label fraction" section, label_efficiency.csv and its figure; on the 1.0 run alone: no section."""
    from chestx.comparison import build_report
    from chestx.comparison.label_efficiency import FIGURE_FILE, HEADING, TABLE_FILE
    from chestx.train import train

    part = tmp_path / "part"
    assert train(compose([*tiny_overrides, "model=resnet18", "data.image_size=96", "data.train_fraction=0.3"],
                         part))["status"] == "ok"
    result = build_report([clinical_run_dir, part], tmp_path / "report", n_resamples=200)
    saved = pd.read_csv(result.out / TABLE_FILE)
    assert saved[["model", "mode", "fraction"]].values.tolist() == [["resnet18", "fine-tune", 0.3],
                                                                    ["resnet18", "fine-tune", 1.0]]
    expected = label_efficiency_table(load_runs([clinical_run_dir, part]), n_resamples=200)
    np.testing.assert_allclose(saved["auroc_mean"], expected["auroc_mean"], rtol=1e-5)
    assert (result.out / "figures" / FIGURE_FILE).stat().st_size > 5000
    assert HEADING in (result.out / "auroc_table.md").read_text()
    assert HEADING in (result.out / "report.html").read_text()

    alone = build_report([clinical_run_dir], tmp_path / "alone", n_resamples=200)
    assert HEADING not in (alone.out / "auroc_table.md").read_text() and not (alone.out / TABLE_FILE).exists()
