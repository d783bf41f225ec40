"""Ensembles of finished runs (chestx.ensemble) and the report's metric sections (AUPRC / mAP, sensitivity at
specificity 0.9) and gain sections, on chestx.evaluate run folders of the embedded NIH sample's real labels."""
from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from sklearn.metrics import average_precision_score

from chestx.comparison import ReportError, build_report
from chestx.core.run_folder import read_metrics, read_predictions
from chestx.metrics.auroc import auroc_vector
from chestx.metrics.delong import paired_tests
from chestx.runs.ensemble import build_ensemble


def _scored(root: Path, name: str, table, split, seed: int, strength: float = 1.0) -> Path:
    from chestx.runs.scoring import evaluate

    rng = np.random.default_rng(seed)
    logits = rng.normal(size=table.labels.shape) + strength * np.nan_to_num(table.labels)
    frame = {"image_id": table.frame["image_id"]} | {
        f"prob_{p}": expit(logits[:, k]) for k, p in enumerate(table.pathologies)}
    pd.DataFrame(frame).to_csv(root / f"{name}.csv", index=False)
    evaluate(root / f"{name}.csv", table, split, root / "runs" / name, name=name,
             extra={"params": 1e6 * (seed + 1), "macs": 2e8, "infer_images_per_s": 100.0})
    return root / "runs" / name


@pytest.fixture(scope="module")
def members(sample_root: Path, tmp_path_factory) -> tuple[Path, list[Path], Path]:
    """Three scorers of the sample's random split (seed 0) and one of another split (seed 1)."""
    from chestx.data.datasets.nih import NIHData

    root = tmp_path_factory.mktemp("ens")
    csv = str(sample_root / "Data_Entry_sample.csv")
    table, split = NIHData(root=str(sample_root), split="random", csv=csv).labels_only()
    runs = [_scored(root, f"m{i}", table, split, seed=i) for i in range(3)]
    table1, split1 = NIHData(root=str(sample_root), split="random", csv=csv, seed=1).labels_only()
    other = _scored(root / "other", "other_split", table1, split1, seed=9) if (root / "other").mkdir() is None else None
    return root, runs, other


def _sorted_probs(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids, probs, labels, _ = read_predictions(run / "predictions.csv")
    order = np.argsort(ids["image_id"].to_numpy(dtype=str))
    return ids["image_id"].to_numpy(dtype=str)[order], probs[order], labels[order]


@pytest.mark.parametrize("combine", ["prob", "logit"])
def test_ensemble_is_the_mean_of_its_members(members, tmp_path: Path, combine: str) -> None:
    _, runs, _ = members
    out = tmp_path / combine
    metrics = build_ensemble(runs, out, combine=combine)
    ids, probs, labels = _sorted_probs(out)
    member = [_sorted_probs(r) for r in runs]
    assert all(np.array_equal(ids, m[0]) for m in member)
    stack = np.stack([m[1] for m in member])
    want = stack.mean(0) if combine == "prob" else expit(logit(np.clip(stack, 1e-7, 1 - 1e-7)).mean(0))
    np.testing.assert_allclose(probs, want, rtol=0, atol=1e-8)
    np.testing.assert_array_equal(labels, member[0][2])
    assert metrics["test/auroc_mean"] == pytest.approx(np.nanmean(auroc_vector(probs, labels)), abs=1e-6)
    rows = pd.read_csv(out / "members.csv")
    assert list(rows["run"]) == [str(r.resolve()) for r in runs]
    assert list(rows["predictions_sha256"]) == [hashlib.sha256((r / "predictions.csv").read_bytes()).hexdigest()
                                                for r in runs]
    assert metrics["params"] == 6e6 and metrics["macs"] == 6e8 and metrics["infer_images_per_s"] == pytest.approx(
        100 / 3)
    assert (out / "predictions_val.csv").is_file()


def test_members_on_different_test_images_are_refused(members, tmp_path: Path, monkeypatch) -> None:
    _, runs, other = members
    with pytest.raises(ReportError, match=r"other_split.*tested on different images \(\d+ vs \d+ test images"):
        build_ensemble([runs[0], other], tmp_path / "no")
    with pytest.raises(ReportError, match="combine='median'"):
        build_ensemble(runs, tmp_path / "no", combine="median")
    from chestx.ensemble import main

    monkeypatch.setattr(sys, "argv", ["chestx.ensemble", f"runs=[{runs[0]}]", f"hydra.run.dir={tmp_path / 'one'}"])
    with pytest.raises(SystemExit) as status:
        main()
    assert status.value.code == 2


def test_report_metric_sections_and_gain_over_best_member(members, tmp_path: Path) -> None:
    _, runs, _ = members
    ensemble = tmp_path / "ensemble"
    build_ensemble(runs, ensemble)
    result = build_report([*runs, ensemble], tmp_path / "report", n_resamples=200,
                          metrics=["auroc", "auprc", "sens_at_spec90"])
    out = result.out
    label = read_metrics(ensemble / "metrics.json")["model"]
    # AUPRC table: every point value is sklearn's average_precision_score; the mean row is mAP
    auprc = pd.read_csv(out / "auprc_table.csv").set_index("pathology")
    ids, probs, labels = _sorted_probs(ensemble)
    names = read_predictions(ensemble / "predictions.csv")[3]
    aps = []
    for k, name in enumerate(names):
        known = ~np.isnan(labels[:, k])
        if len(np.unique(labels[known, k])) < 2:
            continue
        aps.append(average_precision_score(labels[known, k], probs[known, k]))
        assert auprc.loc[name, label] == pytest.approx(aps[-1], abs=1e-6)
        assert auprc.loc[name, f"{label} lower"] <= auprc.loc[name, label] <= auprc.loc[name, f"{label} upper"]
    assert auprc.loc["mean", label] == pytest.approx(np.mean(aps), abs=1e-6)
    md = (out / "auroc_table.md").read_text()
    assert "## Test AUPRC (average precision)" in md and "| **mAP** |" in md
    assert "## Test Sensitivity at specificity 0.9" in md and (out / "sens_at_spec90_table.csv").is_file()
    # gain over the best member: the member with the highest mean AUROC, paired DeLong on the same images
    gains = pd.read_csv(out / "gains.csv")
    means = {r: np.nanmean(auroc_vector(_sorted_probs(r)[1], labels)) for r in runs}
    best = max(means, key=means.get)
    assert set(gains["baseline_path"]) == {str(best.resolve())}
    mean_row = gains[gains["pathology"] == "mean"].iloc[0]
    assert mean_row["auc_baseline"] == pytest.approx(means[best], abs=1e-6)
    assert mean_row["gain"] == pytest.approx(mean_row["auc"] - means[best], abs=2e-5)  # %.6g in the CSV
    want = paired_tests(np.stack([probs, _sorted_probs(best)[1]]), labels, 1, names)
    np.testing.assert_allclose(gains[gains["pathology"] != "mean"]["p_holm"], want["p_holm"], rtol=1e-5)
    assert "gain over the best member" in md and "ensemble of 3" in md
    html, tex = (out / "report.html").read_text(), (out / "auroc_table.tex").read_text()
    assert "Test AUPRC (average precision)" in html and "ensemble of 3" in html and "mAP" in html
    assert all(f"tab:{name}" in tex for name in ("auprc", "sens_at_spec90", "gains", "tta_cost"))
    costs = pd.read_csv(out / "tta_ensemble_costs.csv")
    assert costs["params"].iloc[0] == 6e6 and costs["passes_per_image"].iloc[0] == 3
    with pytest.raises(ReportError, match="unknown.*'f1'"):
        build_report(runs, tmp_path / "r2", metrics=["auroc", "f1"])


@pytest.mark.slow
def test_ensemble_records_checkpoint_digests(clinical_run_dir: Path, tmp_path: Path) -> None:
    """Two copies of a real trained run (one with perturbed predictions): members.csv names each best.ckpt and its
    SHA-256, computed here from the file's bytes."""
    a, b = tmp_path / "a", tmp_path / "b"
    for dest in (a, b):
        shutil.copytree(clinical_run_dir, dest)
    frame = pd.read_csv(b / "predictions.csv", dtype={"image_id": str, "patient_id": str})
    prob_cols = [c for c in frame.columns if c.startswith("prob_")]
    frame[prob_cols] = frame[prob_cols] ** 2
    frame.to_csv(b / "predictions.csv", index=False)
    build_ensemble([a, b], tmp_path / "ens")
    rows = pd.read_csv(tmp_path / "ens" / "members.csv")
    for row, run in zip(rows.itertuples(), (a, b)):
        ckpt = run / "checkpoints" / "best.ckpt"
        assert row.checkpoint == str(ckpt.resolve())
        assert row.checkpoint_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_a_sweep_with_its_ensemble_folder_is_found_in_order(members, tmp_path: Path) -> None:
    """<sweep>/0, 1, 2, 10 and <sweep>/ensemble (experiment=ensemble_sample's layout): numbered runs in number
    order, the named folder after them."""
    from chestx.runs.discover import find_run_dirs

    _, runs, _ = members
    sweep = tmp_path / "sweep"
    for name, run in zip(("0", "1", "2", "10"), [*runs, runs[0]]):
        shutil.copytree(run, sweep / name)
    build_ensemble([sweep / n for n in ("0", "1", "2")], sweep / "ensemble")
    assert [p.name for p in find_run_dirs([sweep])] == ["0", "1", "2", "10", "ensemble"]


def _with_tta(run: Path, dest: Path, mode: str, seed: int) -> Path:
    """A copy of `run` with a TTA pass of `mode`: its probabilities nudged, its rows in another order."""
    from chestx.core.run_folder import write_metrics
    from chestx.runs.tta import write_tta_pass

    shutil.copytree(run, dest)
    config = dest / "config.yaml"  # the data settings the report's "Settings" line reads
    config.write_text((config.read_text() if config.is_file() else "") + "\ndata:\n  _target_: "
                      "chestx.data.datasets.nih.NIHData\n  split: random\n  ratios: [0.7, 0.1, 0.2]\n")
    ids, probs, labels, names = read_predictions(dest / "predictions.csv")
    order = np.random.default_rng(seed).permutation(len(ids))
    nudged = np.clip(probs + np.random.default_rng(seed).normal(0, 0.05, probs.shape), 0, 1)
    extra = write_tta_pass(dest, ids.iloc[order].reset_index(drop=True), nudged[order], labels[order], names, mode,
                           50.0)
    write_metrics(dest / "metrics.json", {**read_metrics(dest / "metrics.json"), **extra})
    return dest


def test_ensemble_combines_its_members_tta_passes_or_says_why_not(members, tmp_path: Path, caplog) -> None:
    _, runs, _ = members
    modes = ["hflip", "hflip", "hflip"]
    copies = [_with_tta(r, tmp_path / "runs" / r.name, m, seed=i) for i, (r, m) in enumerate(zip(runs, modes))]
    metrics = build_ensemble(copies, tmp_path / "ens")
    ids, want, labels = _sorted_probs(tmp_path / "ens")
    stack = []
    for run in copies:
        tta_ids, probs, _, _ = read_predictions(run / "predictions_tta.csv")
        order = np.argsort(tta_ids["image_id"].to_numpy(dtype=str))
        stack.append(probs[order])
    got_ids, got, got_labels, _ = read_predictions(tmp_path / "ens" / "predictions_tta.csv")
    order = np.argsort(got_ids["image_id"].to_numpy(dtype=str))
    np.testing.assert_array_equal(got_ids["image_id"].to_numpy(dtype=str)[order], ids)
    np.testing.assert_allclose(got[order], np.mean(stack, axis=0), rtol=0, atol=1e-8)
    np.testing.assert_array_equal(got_labels[order], labels)
    assert metrics["tta"] == "hflip" and metrics["tta_views"] == 2
    assert metrics["tta_infer_images_per_s"] == pytest.approx(50.0 / 3)
    assert metrics["test_tta/auroc_mean"] == pytest.approx(float(np.nanmean(auroc_vector(got[order], labels))),
                                                           abs=1e-6)
    # the report shows the ensemble's TTA pass as a column of its own
    result = build_report([*copies, tmp_path / "ens"], tmp_path / "report", n_resamples=20)
    text = (result.out / "auroc_table.md").read_text()
    assert f"{metrics['model']} tta=hflip" in text
    assert "Settings: ;" not in text, "an ensemble (no config of its own) is not a column whose settings differ"
    assert "Settings: data NIHData, split random" in text, text[:800]  # shared by the members, the ensemble aside
    costs = pd.read_csv(result.out / "tta_ensemble_costs.csv")
    costs = costs[costs["label"] == metrics["model"]].set_index("kind")
    assert costs.loc["tta=hflip", "passes_per_image"] == 3 * 2, "an ensemble's TTA pass: members x views"
    assert costs.loc["ensemble of 3", "passes_per_image"] == 3
    # one member without a pass, or another mode: no ensemble pass, and the log says why
    (copies[2] / "predictions_tta.csv").unlink()
    with caplog.at_level("WARNING", logger="chestx.runs.ensemble"):
        build_ensemble(copies, tmp_path / "ens_missing")
    assert not (tmp_path / "ens_missing" / "predictions_tta.csv").exists()
    assert f"1 of 3 members have no TTA pass ({copies[2]})" in caplog.text
    other = _with_tta(runs[2], tmp_path / "tencrop" / runs[2].name, "tencrop", seed=5)
    caplog.clear()
    with caplog.at_level("WARNING", logger="chestx.runs.ensemble"):
        build_ensemble([*copies[:2], other], tmp_path / "ens_modes")
    assert not (tmp_path / "ens_modes" / "predictions_tta.csv").exists()
    assert "TTA modes differ (['hflip', 'tencrop'])" in caplog.text
