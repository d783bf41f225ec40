"""The report's "Published results" and "Model cards" sections on a run folder written here (NIH, CheXNet split,
two findings) against a registry written here: like-for-like rows carry the run's bootstrap interval and an
inside flag that agrees with it; entries with another protocol or split are listed apart with the difference named;
the rendered Markdown cells equal published.csv."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from chestx.comparison.compare import compare
from chestx.comparison.published import published_section
from chestx.core.run_folder import predictions_frame, write_predictions
from chestx.published.registry import load_registry
from chestx.runs.discover import label_runs, load_runs

BASE = {"source": "s", "citation": "c", "link": "https://example.org/x", "read_from": "test", "table": "t",
        "dataset": "nih", "labels": "l", "mean_is_mean_of_findings": False, "interval": None}


def _run(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 300
    labels = (rng.random((n, 2)) < 0.3).astype(np.float32)  # (N, 2)
    probs = np.clip(labels * 0.35 + rng.random((n, 2)) * 0.65, 0, 1)  # (N, 2): informative scores
    ids = pd.DataFrame({"image_id": [f"{i:05d}.png" for i in range(n)], "patient_id": [str(i // 2) for i in range(n)]})
    folder.mkdir(parents=True)
    write_predictions(folder / "predictions.csv", predictions_frame(ids, probs, labels, ["Edema", "Effusion"]))
    (folder / "metrics.json").write_text(json.dumps({"status": "ok", "model": "m", "dataset": "nih", "seed": 0}))
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "data": {"split": "chexnet",
                                                                            "chexnet_labels": "csv", "csv": None}}))
    return folder


def test_like_for_like_rows_and_differences(tmp_path: Path) -> None:
    run = _run(tmp_path / "runs" / "r")
    entries = [dict(BASE, id="same", split="chexnet", protocol="single model", chexnet_labels="csv",
                    auroc={"Edema": 0.5, "Pleural Effusion": 0.99}, mean=None),
               dict(BASE, id="tta", split="chexnet", protocol="tta", protocol_detail="ten-crop",
                    auroc={"Edema": 0.8}, mean=0.8),
               dict(BASE, id="elsewhere", split="own", protocol="single model", auroc={"Effusion": 0.8}, mean=None),
               dict(BASE, id="other-dataset", dataset="chexpert", split="own", protocol="single model",
                    auroc={"Edema": 0.8}, mean=None)]
    registry = tmp_path / "results.yaml"
    registry.write_text(yaml.safe_dump({"entries": entries}))
    runs = load_runs([tmp_path / "runs"])
    label_runs(runs)
    comparison = compare(runs, n_resamples=200)
    out = tmp_path / "report"
    out.mkdir()
    section = published_section(comparison, out, load_registry(registry))

    like = pd.read_csv(out / "published.csv")
    assert like["entry"].tolist() == ["same", "same"] and like["pathology"].tolist() == ["Edema", "Effusion"]
    per_run = comparison.per_run.set_index("pathology")
    for row in like.to_dict("records"):
        low, high = per_run.loc[row["pathology"], "lower"], per_run.loc[row["pathology"], "upper"]
        assert row["lower"] == round(low, 6) and row["upper"] == round(high, 6)
        assert row["inside"] == ("yes" if low <= row["published"] <= high else "no")
    assert like["inside"].tolist() == ["no", "no"]  # 0.5 is below an informative model's interval, 0.99 above
    other = pd.read_csv(out / "published_other.csv").set_index("entry")
    assert sorted(other.index) == ["elsewhere", "tta"]  # the chexpert entry is about another dataset
    assert other.loc["tta", "differs_by"] == "protocol: tta (ten-crop) vs one model, one pass"
    assert other.loc["elsewhere", "differs_by"] == "split: the source's own split vs the run's data.split=chexnet"
    assert any("`tta`" in note and "protocol: tta" in note for note in section.notes)

    rendered = [[c.text for c in row] for row in section.table.rows]
    assert [r[1:3] for r in rendered] == [["same", "Edema"], ["same", "Effusion"]]
    for cells, row in zip(rendered, like.to_dict("records")):
        assert cells[3] == f"{row['auroc']:.3f} [{row['lower']:.3f}, {row['upper']:.3f}]"
        assert cells[4:] == [f"{row['published']:.4f}", row["inside"]]
