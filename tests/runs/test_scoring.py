"""chestx.runs.scoring.evaluate on real labels: the embedded sample and the whole official NIH test split.

Prediction files are real image ids with scores that depend on the real labels (no model needed);
the report over three such files on the NIH test split (25,596 images) also prints the bootstrap's time at
full size (printed, not asserted: a wall-clock bound measures the machine).
The command line (`python -m chestx.evaluate`): tests/entry/test_evaluate.py.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from chestx.comparison import build_report
from chestx.core.run_folder import read_predictions
from chestx.data.datasets.nih import NIHData
from chestx.runs.scoring import EvaluationError, evaluate


def _scores(labels: np.ndarray, strength: float, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=labels.shape) + strength * np.nan_to_num(labels)
    return 1.0 / (1.0 + np.exp(-logits))  # (N, K)


def _write(path: Path, ids, probs: np.ndarray, names: list[str], id_column="image_id", prefix="prob_") -> Path:
    frame = pd.DataFrame({id_column: list(ids)} | {prefix + p: probs[:, k] for k, p in enumerate(names)})
    frame.to_csv(path, index=False, float_format="%.9g")
    return path


@pytest.fixture(scope="module")
def sample(sample_root: Path):
    return NIHData(root=str(sample_root), csv=str(sample_root / "Data_Entry_sample.csv"), split="random").labels_only()


def test_sample_scores_match_sklearn(sample, tmp_path: Path) -> None:
    table, split = sample
    probs = _scores(table.labels, 1.5, 0)
    csv = _write(tmp_path / "pub.csv", table.frame["image_id"], probs, table.pathologies, "Image Index", "")
    metrics = evaluate(csv, table, split, tmp_path / "run", prefix="", name="published")  # NIH's id column, found
    for name in ["split.csv", "predictions.csv", "predictions_val.csv", "auroc.csv", "metrics.json"]:
        assert (tmp_path / "run" / name).is_file(), name
    ids, p, y, names = read_predictions(tmp_path / "run" / "predictions.csv")
    test_rows = np.flatnonzero(split == "test")
    assert sorted(ids["image_id"]) == sorted(table.frame["image_id"].iloc[test_rows])
    assert names == list(table.pathologies) and metrics["model"] == "published"
    for k, name in enumerate(names):
        seen = ~np.isnan(y[:, k])
        assert abs(metrics[f"test/auroc/{name}"] - roc_auc_score(y[seen, k], p[seen, k])) < 1e-9


def test_bad_inputs_name_the_problem(sample, tmp_path: Path) -> None:
    table, split = sample
    ids, names = table.frame["image_id"].tolist(), list(table.pathologies)
    probs = _scores(table.labels, 1.0, 1)
    cases = {
        "unknown": (_write(tmp_path / "a.csv", ["99999999_000.png", *ids[1:]], probs, names), r"1 of 621 image ids .* not in the dataset.*99999999_000.png"),
        "column": (_write(tmp_path / "b.csv", ids, probs[:, :13], names[:13]), r"lacks 1 of 14 .*prob_Hernia.*prefix="),
        "range": (_write(tmp_path / "c.csv", ids, np.where(np.arange(14) == 2, 1.5, probs), names), r"outside \[0, 1\].*prob_Effusion.*sigmoid"),
        "nan": (_write(tmp_path / "d.csv", ids, np.where(np.arange(14) == 0, np.nan, probs), names), r"missing, not numbers"),
        "twice": (_write(tmp_path / "e.csv", [ids[0], *ids[:-1]], probs, names), r"appear twice"),
        "idcol": (_write(tmp_path / "f.csv", ids, probs, names, id_column="img"),
                  r"none of the image-id columns \['image_id', 'Image Index', 'Path'\] that id_column=null .*"
                  r"columns: \['img', 'prob_Atelectasis'.*set id_column="),
    }
    for case, (csv, pattern) in cases.items():
        with pytest.raises(EvaluationError, match=pattern):
            evaluate(csv, table, split, tmp_path / case)
    first_test = sorted(table.frame["image_id"][split == "test"])[0]
    keep = [i for i, x in enumerate(ids) if x != first_test]
    csv = _write(tmp_path / "g.csv", [ids[i] for i in keep], probs[keep], names)
    with pytest.raises(EvaluationError, match=r"1 of 124 test images have no prediction.*allow_missing=true"):
        evaluate(csv, table, split, tmp_path / "g")
    assert evaluate(csv, table, split, tmp_path / "g2", allow_missing=True)["n_test"] == 123


def test_id_column_found_in_order_and_explicit_wins(sample, tmp_path: Path) -> None:
    """image_id (chestx) before `Image Index` (NIH); `id_column=` overrides; a wrong explicit one is named."""
    table, split = sample
    ids, names = table.frame["image_id"].tolist(), list(table.pathologies)
    probs = _scores(table.labels, 1.0, 2)
    both = _write(tmp_path / "both.csv", ids, probs, names, id_column="Image Index")
    frame = pd.read_csv(both)
    frame.insert(0, "image_id", [f"row{i}.png" for i in range(len(frame))])  # not image ids of the dataset
    frame.to_csv(both, index=False)
    with pytest.raises(EvaluationError, match=r"621 of 621 image ids .* not in the dataset.*row0.png"):
        evaluate(both, table, split, tmp_path / "auto")  # image_id comes first
    explicit = evaluate(both, table, split, tmp_path / "explicit", id_column="Image Index")
    auto = evaluate(_write(tmp_path / "nih.csv", ids, probs, names, id_column="Image Index"), table, split,
                    tmp_path / "nih")
    assert explicit["test/auroc_mean"] == auto["test/auroc_mean"]
    assert (tmp_path / "explicit" / "predictions.csv").read_text() == (tmp_path / "nih" / "predictions.csv").read_text()
    with pytest.raises(EvaluationError, match=r"no image-id column id_column='Path' \(columns: \['image_id', "
                                              r"'Image Index', .*set id_column=<its name>, or id_column=null"):
        evaluate(both, table, split, tmp_path / "wrong", id_column="Path")


@pytest.mark.slow
def test_full_nih_test_split_report(nih_dir: Path, tmp_path: Path) -> None:
    """Three 'published models' on the official NIH test split: exact AUROCs, DeLong, the timings consistent."""
    table, split = NIHData(root=str(nih_dir)).labels_only()
    test = split == "test"
    assert int(test.sum()) == 25_596
    ids = table.frame["image_id"][test].tolist()
    for m, strength in enumerate([0.5, 1.5, 2.5]):
        csv = _write(tmp_path / f"model{m}.csv", ids, _scores(table.labels[test], strength, m), list(table.pathologies),
                     "Image Index")
        evaluate(csv, table, split, tmp_path / "runs" / f"m{m}", id_column="Image Index", name=f"model{m}")
    started = time.perf_counter()
    # 200 resamples: the numbers checked here do not depend on them (the bootstrap at full size and 1000 resamples:
    # tests/metrics/test_bootstrap.py::test_benchmark_nih_test_split_size)
    result = build_report([tmp_path / "runs"], tmp_path / "report", n_resamples=200, seed=0)
    comparison = result.comparison
    assert comparison.test_sets[0].probs.shape == (3, 25_596, 14)
    # the bootstrap is part of the report, which is part of this call
    assert comparison.bootstrap_seconds <= result.seconds <= time.perf_counter() - started
    assert comparison.reference == "model2"  # strongest scores, best mean AUROC
    ids_, p, y, names = read_predictions(tmp_path / "runs" / "m1" / "predictions.csv")
    row = comparison.per_run.set_index(["label", "pathology"])
    for k, name in enumerate(names):
        seen = ~np.isnan(y[:, k])
        assert abs(row.loc[("model1", name), "auroc"] - roc_auc_score(y[seen, k], p[seen, k])) < 1e-9
    pvalues = pd.read_csv(tmp_path / "report" / "pvalues.csv")
    assert len(pvalues) == 2 * 14 and (pvalues.loc[pvalues["label"] == "model0", "p_holm"] < 0.05).all()
    print(f"bootstrap 3 runs x 25,596 images x 14 pathologies x 200 resamples: {comparison.bootstrap_seconds:.2f} s")
