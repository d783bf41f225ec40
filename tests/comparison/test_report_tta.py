"""A run's test-time-augmentation pass (predictions_tta.csv) in the report's metric tables: a column of its own next to
the plain pass, its numbers checked against sklearn on predictions_tta.csv and its patient-bootstrap bounds against a
recomputation here (the patients drawn as `bootstrap_metric` documents, each draw materialised and scored by sklearn).

Runs: two chestx.evaluate folders of the embedded NIH sample's real labels and split (scores drawn here); m0 then gets
a TTA pass written by `chestx.runs.tta.write_tta` (what `chestx.train tta=tencrop` calls), its rows in another order.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.metrics import average_precision_score, roc_auc_score

from chestx.comparison import build_report
from chestx.core.run_folder import read_metrics, write_metrics
from chestx.metrics.delong import paired_tests

RESAMPLES, SEED = 60, 3
TTA = "m0 tta=tencrop"
METRICS = {"auroc": roc_auc_score, "auprc": average_precision_score}


def _scored(root: Path, name: str, table, split, seed: int, tta_override: str) -> Path:
    from chestx.runs.scoring import evaluate

    rng = np.random.default_rng(seed)
    logits = rng.normal(size=table.labels.shape) + 1.2 * np.nan_to_num(table.labels)
    frame = {"image_id": table.frame["image_id"]} | {
        f"prob_{p}": expit(logits[:, k]) for k, p in enumerate(table.pathologies)}
    pd.DataFrame(frame).to_csv(root / f"{name}.csv", index=False)
    run = root / "runs" / name
    evaluate(root / f"{name}.csv", table, split, run, name=name,
             extra={"params": 1e6, "macs": 2e8, "infer_images_per_s": 100.0, "seed": 0})
    (run / ".hydra").mkdir()  # as a sweep records it: the tta key differs between the runs
    (run / ".hydra" / "overrides.yaml").write_text(f"- tta={tta_override}\n")
    return run


def _add_tta_pass(run: Path) -> None:
    """predictions_tta.csv / auroc_tta.csv and metrics.json's tta keys, as `chestx.train tta=tencrop` writes them."""
    from chestx.runs.tta import write_tta

    frame = pd.read_csv(run / "predictions.csv", dtype={"image_id": str, "patient_id": str})
    names = [c[len("prob_"):] for c in frame.columns if c.startswith("prob_")]
    labels = frame[[f"label_{p}" for p in names]].to_numpy(dtype=np.float64)
    rng = np.random.default_rng(11)
    probs = expit(rng.normal(size=labels.shape) + 2.0 * np.nan_to_num(labels))  # (N, K) a better pass
    order = rng.permutation(len(frame))  # rows in another order than predictions.csv
    scores = SimpleNamespace(ids=frame[["image_id", "patient_id"]].iloc[order].reset_index(drop=True),
                             probs=probs[order], targets=labels[order], pathologies=names, images_per_s=12.5)
    metrics = read_metrics(run / "metrics.json")
    metrics.update(write_tta(run, scores, "tencrop"))
    write_metrics(run / "metrics.json", metrics)


@pytest.fixture(scope="module")
def reports(sample_root: Path, tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    """(report before m0 had a TTA pass, report after, [m0, m1])."""
    from chestx.data.datasets.nih import NIHData

    root = tmp_path_factory.mktemp("tta")
    table, split = NIHData(root=str(sample_root), split="random",
                           csv=str(sample_root / "Data_Entry_sample.csv")).labels_only()
    runs = [_scored(root, "m0", table, split, 0, "tencrop"), _scored(root, "m1", table, split, 1, "none")]
    options = dict(n_resamples=RESAMPLES, seed=SEED, reference="m1", metrics=["auroc", "auprc"])
    build_report(runs, root / "plain", **options)
    _add_tta_pass(runs[0])
    build_report(runs, root / "with_tta", **options)
    return root / "plain", root / "with_tta", runs


def _tta_file(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """predictions_tta.csv read with pandas alone: patients (N,), probs (N, K), labels (N, K), pathologies."""
    frame = pd.read_csv(run / "predictions_tta.csv", dtype={"image_id": str, "patient_id": str})
    names = [c[len("prob_"):] for c in frame.columns if c.startswith("prob_")]
    return (frame["patient_id"].to_numpy(dtype=str), frame[[f"prob_{p}" for p in names]].to_numpy(dtype=float),
            frame[[f"label_{p}" for p in names]].to_numpy(dtype=float), names)


def _score(fn, y: np.ndarray, s: np.ndarray) -> float:
    known = ~np.isnan(y)
    return float(fn(y[known], s[known])) if np.unique(y[known]).size == 2 else np.nan


def _bootstrap_bounds(fn, patients, probs, labels) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Percentile bounds (K,) and of the mean over pathologies: draw patients with replacement (numpy's default_rng
    with the report's seed, patients in sorted order), every image of a drawn patient once per draw, sklearn."""
    unique, cluster = np.unique(patients, return_inverse=True)
    draws = np.random.default_rng(SEED).integers(0, unique.size, size=(RESAMPLES, unique.size))
    images_of = [np.flatnonzero(cluster == p) for p in range(unique.size)]
    k = probs.shape[1]
    defined = np.array([not np.isnan(_score(fn, labels[:, j], probs[:, j])) for j in range(k)])
    values = np.full((RESAMPLES, k), np.nan)
    for b in range(RESAMPLES):
        rows = np.concatenate([images_of[p] for p in draws[b]])
        for j in np.flatnonzero(defined):
            values[b, j] = _score(fn, labels[rows, j], probs[rows, j])
    means = np.array([v[defined].mean() if not np.isnan(v[defined]).any() else np.nan for v in values])
    return (np.nanpercentile(values, 2.5, axis=0), np.nanpercentile(values, 97.5, axis=0),
            float(np.nanpercentile(means, 2.5)), float(np.nanpercentile(means, 97.5)))


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_tta_pass_column_equals_sklearn_and_its_bootstrap(reports, metric: str) -> None:
    _, out, (m0, _) = reports
    table = pd.read_csv(out / f"{metric}_table.csv").set_index("pathology")
    labels_in_order = [c for c in table.columns if not c.endswith((" lower", " upper", " sd", " n_replicates"))]
    assert labels_in_order == ["m0", TTA, "m1"]  # the pass right after its plain pass; tta=... labels no plain pass
    patients, probs, labels, names = _tta_file(m0)
    fn = METRICS[metric]
    lower, upper, mean_lower, mean_upper = _bootstrap_bounds(fn, patients, probs, labels)
    checked = []
    for k, name in enumerate(names):
        want = _score(fn, labels[:, k], probs[:, k])
        if np.isnan(want):
            assert np.isnan(table.loc[name, TTA]), name
            continue
        checked.append(want)
        assert table.loc[name, TTA] == pytest.approx(want, abs=1e-6), name  # the CSV keeps 6 decimals
        assert table.loc[name, f"{TTA} lower"] == pytest.approx(lower[k], abs=1e-6), name
        assert table.loc[name, f"{TTA} upper"] == pytest.approx(upper[k], abs=1e-6), name
        assert table.loc[name, f"{TTA} n_replicates"] == 1
    assert len(checked) >= 10
    assert table.loc["mean", TTA] == pytest.approx(np.mean(checked), abs=1e-6)
    assert table.loc["mean", f"{TTA} lower"] == pytest.approx(mean_lower, abs=1e-6)
    assert table.loc["mean", f"{TTA} upper"] == pytest.approx(mean_upper, abs=1e-6)
    per_run = pd.read_csv(out / f"{metric}_per_run.csv")
    assert set(per_run.loc[per_run["label"] == TTA, "path"]) == {str(m0 / "predictions_tta.csv")}
    # the table as a reader sees it: the pass's column in the section, its cells from the CSV
    md = (out / "auroc_table.md").read_text()
    heading = "## Test AUROC\n" if metric == "auroc" else "## Test AUPRC (average precision)\n"
    section = md.split(heading)[1].split("\n## ")[0]
    assert f"| pathology | m0 | {TTA} | m1 (ref) |" in section
    first = names[0] if not np.isnan(table.loc[names[0], TTA]) else names[1]
    row = next(line for line in section.splitlines() if line.startswith(f"| {first} |"))
    cell = (f"{table.loc[first, TTA]:.3f} [{table.loc[first, f'{TTA} lower']:.3f}, "
            f"{table.loc[first, f'{TTA} upper']:.3f}]")
    assert row.split(" | ")[2].strip("*") == cell
    assert f"`{TTA}`: the run's test-time-augmentation pass" in section


def test_tta_pass_is_delong_tested_against_the_reference(reports) -> None:
    _, out, (m0, m1) = reports
    pvalues = pd.read_csv(out / "pvalues.csv")
    rows = pvalues[pvalues["label"] == TTA]
    assert set(rows["run_path"]) == {str(m0 / "predictions_tta.csv")} and set(rows["reference"]) == {"m1"}
    patients, probs, labels, names = _tta_file(m0)
    ref = pd.read_csv(m1 / "predictions.csv", dtype={"image_id": str})
    ids = pd.read_csv(m0 / "predictions_tta.csv", dtype={"image_id": str})["image_id"]
    ref_probs = ref.set_index("image_id").loc[ids, [f"prob_{p}" for p in names]].to_numpy(dtype=float)  # (N, K)
    want = paired_tests(np.stack([probs, ref_probs]), labels, reference=1, pathologies=names)
    np.testing.assert_allclose(rows["p_holm"].to_numpy(), want["p_holm"].to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(rows["auc"].to_numpy(), want["auc"].to_numpy(), atol=1e-6)
    md = (out / "auroc_table.md").read_text()
    delong = md.split("## DeLong vs m1")[1].split("\n## ")[0]
    assert f"| pathology | m0 | {TTA} |" in delong
    # the gain section still compares the pass with its own plain pass, once
    gains = pd.read_csv(out / "gains.csv")
    assert list(gains["kind"].unique()) == ["tta=tencrop"] and len(gains) == len(names) + 1


def test_a_tta_pass_changes_no_other_number(reports) -> None:
    """The same runs before and after m0 got its TTA pass: every plain column and DeLong row is unchanged."""
    plain, out, _ = reports
    for name in ("auroc_table.csv", "auprc_table.csv"):
        before, after = pd.read_csv(plain / name), pd.read_csv(out / name)
        assert [c for c in after.columns if not c.startswith(TTA)] == list(before.columns)
        pd.testing.assert_frame_equal(after[before.columns], before)
    before, after = pd.read_csv(plain / "pvalues.csv"), pd.read_csv(out / "pvalues.csv")
    pd.testing.assert_frame_equal(after[after["label"] != TTA].reset_index(drop=True), before)
    assert TTA not in (plain / "auroc_table.md").read_text()


def test_a_broken_tta_file_is_left_out_with_a_warning(reports, tmp_path: Path, caplog) -> None:
    _, _, (m0, m1) = reports
    broken = tmp_path / "m0"
    shutil.copytree(m0, broken)
    (broken / "predictions_tta.csv").write_text("image_id,patient_id\n")
    result = build_report([broken, m1], tmp_path / "report", n_resamples=RESAMPLES, seed=SEED)
    assert list(result.comparison.groups) == ["m0", "m1"] and not result.comparison.passes
    assert "predictions_tta.csv has no prob_<pathology> columns or no rows" in caplog.text
