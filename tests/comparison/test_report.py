"""chestx.benchmark / chestx.report on a real tiny sweep (embedded NIH sample) with one failing backbone.

One module-scoped sweep (`python -m chestx.benchmark`, three backbones, InceptionV3 at 64 px fails
as it really does: its stem needs >= 75 px) plus one in-process run with another seed feed the slow
checks; the command line itself is checked on chestx.evaluate run folders of the sample (seconds).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from chestx.report import main as report_main
from chestx.core.run_folder import read_metrics
from chestx.comparison import ReportError, build_report
from chestx.comparison.compare import MEAN
from chestx.core.run_folder import read_predictions
from chestx.core.hardware import machine

SWEEP = [
    "model=resnet18,mobilenetv2,inceptionv3", "data.image_size=64", "loader.num_workers=0", "loader.batch_size=8",
    "loader.eval_batch_size=64", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "report.resamples=200",
]


@pytest.fixture(scope="module")
def sweep(repo_root: Path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("bench") / "sweep"
    proc = subprocess.run([sys.executable, "-m", "chestx.benchmark", *SWEEP, f"hydra.sweep.dir={out}"],
                          cwd=repo_root, capture_output=True, text=True, timeout=900)
    return out, proc


@pytest.fixture(scope="module")
def seed1_run(compose, tiny_overrides, tmp_path_factory) -> Path:
    """resnet18 again with seed 1 (another random split of the sample), a plain run folder."""
    from chestx.train import train

    out = tmp_path_factory.mktemp("seed1")
    train(compose([*tiny_overrides, "experiment=benchmark_sample", "model=resnet18", "seed=1", "data.image_size=64",
                   "trainer.limit_train_batches=1"], out))
    return out


def _runs(sweep_dir: Path) -> dict[str, Path]:
    return {json.loads((p / "metrics.json").read_text())["model"]: p for p in sorted(sweep_dir.glob("[0-9]"))}


@pytest.mark.slow
def test_benchmark_builds_every_file_and_lists_the_failure(sweep) -> None:
    out, proc = sweep
    # Hydra runs every job, then exits non-zero because one failed; the callback built the report anyway
    assert proc.returncode != 0 and "Kernel size" in proc.stderr, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = out / "report"
    for name in ["auroc_table.md", "auroc_table.csv", "auroc_table.tex", "pvalues.csv", "report.html"]:
        assert (report / name).is_file(), name
    for name in ["roc_curves.png", "auroc_heatmap.png", "auroc_vs_cost.png"]:
        with Image.open(report / "figures" / name) as figure:
            assert figure.format == "PNG" and min(figure.size) >= 200, (name, figure.size)
            figure.verify()
    md = (report / "auroc_table.md").read_text()
    assert "| pathology | resnet18" in md and "mobilenetv2" in md
    left_out = md.split("## Runs left out")[1]
    assert "inceptionv3" in left_out and "failed" in left_out and "Kernel size" in left_out
    assert "**mean**" in md and md.count("**") >= 2 * 15, "the best cell of every row is bold"
    summary = json.loads((out / "benchmark.json").read_text())
    here = machine()  # the sweep ran on this machine, in a child process of this one
    assert {k: summary["machine"][k] for k in ("cpu", "cores", "cpu_capability", "gpu", "torch")} == {
        k: here[k] for k in ("cpu", "cores", "cpu_capability", "gpu", "torch")}
    runs = _runs(out)
    assert {summary["runs"][p.name]["label"]: summary["runs"][p.name]["status"] for p in runs.values()} == {
        "resnet18": "ok", "mobilenetv2": "ok", "inceptionv3": "failed"}
    assert summary["report_wall_time_s"] <= summary["wall_time_s"]
    # the cost table is each finished run's metrics.json, row for row
    costs = pd.read_csv(report / "costs.csv").set_index("label")
    assert set(costs.index) == {"resnet18", "mobilenetv2"}
    for model in costs.index:
        metrics = json.loads((runs[model] / "metrics.json").read_text())
        for key in ["params", "macs", "train_images_per_s", "infer_images_per_s", "peak_memory_mb", "wall_time_s",
                    "epochs", "best_epoch"]:
            if metrics[key] is None:
                assert np.isnan(costs.loc[model, key]), (model, key)
            else:
                assert costs.loc[model, key] == pytest.approx(metrics[key]), (model, key)
        assert metrics["fit_seconds"] <= metrics["wall_time_s"], model
    tex = (report / "auroc_table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"Pleural\_Thickening" in tex


@pytest.mark.slow
def test_auroc_equals_sklearn_per_pathology(sweep) -> None:
    out, _ = sweep
    per_run = pd.read_csv(out / "report" / "auroc_per_run.csv")
    table = pd.read_csv(out / "report" / "auroc_table.csv").set_index("pathology")
    for model, folder in _runs(out).items():
        if model == "inceptionv3":
            continue
        _, probs, labels, names = read_predictions(folder / "predictions.csv")
        mine = per_run[per_run["label"] == model].set_index("pathology")["auroc"]
        expected = []
        for k, name in enumerate(names):
            seen = ~np.isnan(labels[:, k])
            if np.unique(labels[seen, k]).size < 2:
                assert np.isnan(mine[name])
                continue
            expected.append(roc_auc_score(labels[seen, k], probs[seen, k]))
            assert mine[name] == pytest.approx(expected[-1], abs=1e-6)  # CSV keeps 6 decimals
        assert table.loc[MEAN, model] == pytest.approx(np.mean(expected), abs=1e-6)


@pytest.mark.slow
def test_report_numbers_exact_and_bootstrap_reproducible(sweep, tmp_path: Path) -> None:
    out, _ = sweep
    a = build_report([out], tmp_path / "a", n_resamples=200, seed=7)
    b = build_report([out], tmp_path / "b", n_resamples=200, seed=7)
    c = build_report([out], tmp_path / "c", n_resamples=200, seed=8)
    for run in a.comparison.runs:  # in-memory AUROC vs sklearn to 1e-9
        row = a.comparison.per_run.set_index(["label", "pathology"])
        for k, name in enumerate(run.pathologies):
            seen = ~np.isnan(run.labels[:, k])
            if np.unique(run.labels[seen, k]).size == 2:
                assert abs(row.loc[(run.label, name), "auroc"] - roc_auc_score(run.labels[seen, k], run.probs[seen, k])) < 1e-9
    pd.testing.assert_frame_equal(a.comparison.per_run, b.comparison.per_run)
    assert (tmp_path / "a" / "auroc_table.csv").read_text() == (tmp_path / "b" / "auroc_table.csv").read_text()
    assert not np.allclose(a.comparison.per_run["lower"].fillna(0), c.comparison.per_run["lower"].fillna(0))
    inside = a.comparison.per_run.dropna(subset=["lower"])
    assert ((inside["lower"] <= inside["auroc"] + 1e-12) & (inside["auroc"] <= inside["upper"] + 1e-12)).mean() > 0.9


def _naive_delong(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of the paired DeLong test from the O(m n) kernel (DeLong et al. 1988, eqs. 2-5)."""
    from scipy.stats import norm

    pos, neg = y == 1, y == 0
    v10, v01 = [], []
    for s in (a, b):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])  # (m, n)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    s10, s01 = np.cov(np.stack(v10)), np.cov(np.stack(v01))
    var = (s10 / pos.sum() + s01 / neg.sum()) @ np.array([1, -1]) @ np.array([1, -1])
    z = (np.mean(v10[0]) - np.mean(v10[1])) / np.sqrt(var)
    return float(2 * norm.sf(abs(z)))


@pytest.mark.slow
def test_delong_matches_independent_check_and_reference_option(sweep, tmp_path: Path) -> None:
    out, _ = sweep
    runs = _runs(out)
    result = build_report([out], tmp_path, reference="resnet18", n_resamples=50)  # the bootstrap: test above
    pvalues = pd.read_csv(tmp_path / "pvalues.csv")
    assert set(pvalues["reference"]) == {"resnet18"} and set(pvalues["label"]) == {"mobilenetv2"}
    _, pa, labels, names = read_predictions(runs["mobilenetv2"] / "predictions.csv")
    ids_b, pb, _, _ = read_predictions(runs["resnet18"] / "predictions.csv")
    checked = 0
    for k, name in enumerate(names):
        seen = ~np.isnan(labels[:, k])
        if np.unique(labels[seen, k]).size < 2:
            continue
        expected = _naive_delong(labels[seen, k], pa[seen, k], pb[seen, k])
        got = float(pvalues.loc[pvalues["pathology"] == name, "p_value"].iloc[0])
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-9), name
        checked += 1
    assert checked >= 10
    holm = pvalues["p_holm"].to_numpy()
    assert np.all(holm >= pvalues["p_value"].to_numpy() - 1e-12)
    assert "resnet18 (ref)" in (tmp_path / "auroc_table.md").read_text()
    with pytest.raises(ReportError, match="mobilenetv2"):
        build_report([out], tmp_path / "bad", reference="nosuchnet", n_resamples=50)
    assert result.comparison.reference == "resnet18"


@pytest.mark.slow
def test_seeds_are_aggregated_and_run_folders_mix_with_sweeps(sweep, seed1_run, tmp_path: Path) -> None:
    out, _ = sweep
    result = build_report([out, seed1_run], tmp_path, n_resamples=50)
    groups = result.comparison.groups
    assert len(groups["resnet18"]) == 2 and {r.seed for r in groups["resnet18"]} == {0, 1}
    table = pd.read_csv(tmp_path / "auroc_table.csv").set_index("pathology")
    per_run = result.comparison.per_run
    means = per_run[(per_run["label"] == "resnet18") & (per_run["pathology"] == MEAN)]["auroc"]
    assert table.loc[MEAN, "resnet18"] == pytest.approx(means.mean(), abs=1e-6)
    assert table.loc[MEAN, "resnet18 sd"] == pytest.approx(means.std(ddof=1), abs=1e-6)
    assert table.loc[MEAN, "resnet18 n_replicates"] == 2
    assert "±" in (tmp_path / "auroc_table.md").read_text()
    pvalues = pd.read_csv(tmp_path / "pvalues.csv")
    assert set(pvalues["label"]) <= {"mobilenetv2", "resnet18"}


@pytest.mark.slow
def test_incomplete_and_all_failed(sweep, tmp_path: Path, monkeypatch) -> None:
    out, _ = sweep
    runs = _runs(out)
    partial = tmp_path / "partial"
    shutil.copytree(runs["resnet18"], partial / "0")
    shutil.copytree(runs["mobilenetv2"], partial / "1")
    (partial / "1" / "predictions.csv").unlink()  # killed before testing
    result = build_report([partial], tmp_path / "r1", n_resamples=50)
    assert [r.status for r in result.runs] == ["ok", "incomplete"]
    assert "incomplete: no predictions.csv" in (tmp_path / "r1" / "auroc_table.md").read_text()
    failed = tmp_path / "failed"
    shutil.copytree(runs["inceptionv3"], failed / "0")
    with pytest.raises(SystemExit) as exit_status:
        _report(monkeypatch, f"runs=[{failed}]", "resamples=50", f"hydra.run.dir={tmp_path / 'r2'}")
    assert exit_status.value.code == 1
    assert "Kernel size" in (tmp_path / "r2" / "auroc_table.md").read_text()


@pytest.mark.slow
def test_operating_points_section_when_present(sweep) -> None:
    out, _ = sweep
    page = (out / "report" / "report.html").read_text()
    run = _runs(out)["resnet18"]
    assert (run / "operating_points.csv").is_file()
    assert not list(run.glob("heatmaps/*.png")), "the benchmark recipe's clinical step draws no heatmap"
    assert "<h2>Operating points</h2>" in page and "sensitivity" in page and "npv" in page


def _report(monkeypatch, *overrides: str) -> None:
    """`python -m chestx.report <overrides>` run in-process."""
    monkeypatch.setattr(sys, "argv", ["chestx.report", *overrides])
    report_main()


@pytest.fixture(scope="module")
def evaluated(sample_root: Path, tmp_path_factory) -> Path:
    """Two chestx.evaluate run folders (scores from the real labels of the embedded NIH sample) under runs/."""
    from chestx.data.datasets.nih import NIHData
    from chestx.runs.scoring import evaluate

    root = tmp_path_factory.mktemp("evaluated")
    table, split = NIHData(root=str(sample_root), split="random",
                           csv=str(sample_root / "Data_Entry_sample.csv")).labels_only()
    rng = np.random.default_rng(0)
    for name, strength in (("weak", 0.5), ("strong", 2.0)):
        logits = rng.normal(size=table.labels.shape) + strength * np.nan_to_num(table.labels)
        frame = {"image_id": table.frame["image_id"]} | {
            f"prob_{p}": 1 / (1 + np.exp(-logits[:, k])) for k, p in enumerate(table.pathologies)}
        pd.DataFrame(frame).to_csv(root / f"{name}.csv", index=False)
        evaluate(root / f"{name}.csv", table, split, root / "runs" / name, name=name)
    return root


def test_cli_writes_into_the_hydra_run_dir(evaluated: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = evaluated / "runs" / "report_here"  # inside the folder it reads: must not count as a run next time
    _report(monkeypatch, f"runs=[{evaluated / 'runs'}]", "reference=weak", "resamples=200", f"hydra.run.dir={out}")
    printed = capsys.readouterr().out
    for name in ["auroc_table.md", "auroc_table.csv", "auroc_table.tex", "auroc_per_run.csv", "costs.csv",
                 "pvalues.csv", "report.html", "report.log", "figures/roc_curves.png"]:
        assert (out / name).is_file(), name
    assert not (out / ".hydra").exists()
    md = (out / "auroc_table.md").read_text()
    assert md in printed and f"Report: {out / 'report.html'}" in printed
    table = pd.read_csv(out / "auroc_table.csv").set_index("pathology")
    for name in ("weak", "strong"):
        metrics = read_metrics(evaluated / "runs" / name / "metrics.json")
        assert table.loc[MEAN, name] == pytest.approx(metrics["test/auroc_mean"], abs=1e-6)
    assert set(pd.read_csv(out / "pvalues.csv")["reference"]) == {"weak"}
    _report(monkeypatch, f"runs=[{evaluated / 'runs'}]", "resamples=200", f"hydra.run.dir={tmp_path / 'again'}")
    assert set(pd.read_csv(tmp_path / "again" / "auroc_table.csv").columns) == set(table.reset_index().columns)
    assert "Runs left out" not in (tmp_path / "again" / "auroc_table.md").read_text()


def test_cli_exit_status_when_nothing_to_compare(evaluated: Path, tmp_path: Path, monkeypatch) -> None:
    from chestx.evaluate import main as evaluate_main

    failed = tmp_path / "failed" / "0"  # a real failed run: chestx.evaluate on a file that does not exist
    monkeypatch.setattr(sys, "argv", ["chestx.evaluate", f"predictions={tmp_path / 'none.csv'}",
                                      f"hydra.run.dir={failed}"])
    with pytest.raises(SystemExit):
        evaluate_main()
    with pytest.raises(SystemExit) as status:
        _report(monkeypatch, f"runs=[{failed.parent}]", f"hydra.run.dir={tmp_path / 'r1'}")
    assert status.value.code == 1 and "does not exist" in (tmp_path / "r1" / "auroc_table.md").read_text()
    with pytest.raises(SystemExit) as status:
        _report(monkeypatch, f"runs=[{tmp_path / 'nothing_here'}]", f"hydra.run.dir={tmp_path / 'r2'}")
    assert status.value.code == 2
    with pytest.raises(SystemExit) as status:
        _report(monkeypatch, f"runs=[{evaluated / 'runs'}]", "reference=nosuchnet", f"hydra.run.dir={tmp_path / 'r3'}")
    assert status.value.code == 2
