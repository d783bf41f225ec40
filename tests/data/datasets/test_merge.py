"""data=merge over real-format data: the embedded NIH sample and CheXpert's real label files (small JPEGs at their
paths). The union of findings under the vocabulary's names, masking of what a source does not label, per-source
splits, and a real training run scored on each source's own test split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate
from sklearn.metrics import roc_auc_score

from chestx.data.labels import CHEXPERT_PATHOLOGIES, NIH_PATHOLOGIES, DataError

MERGE = ["data=merge", "sources=[nih_sample,chexpert]", "data.sources.chexpert.tasks=all"]


@pytest.fixture()
def merged(compose, chexpert_tree: Path, tmp_path: Path):
    cfg = compose([*MERGE, f"data.sources.chexpert.root={chexpert_tree}"], tmp_path)
    return instantiate(cfg.data), cfg


def test_union_of_findings_with_masking_and_source_splits(merged) -> None:
    data, _ = merged
    table, split = data.labels_only()
    nih, chexpert = data.sources["nih_sample"], data.sources["chexpert"]
    nih_table, nih_split = nih.labels_only()
    chx_table, chx_split = chexpert.labels_only()
    assert len(table) == len(nih_table) + len(chx_table)
    expected = ["Pleural Effusion" if p == "Effusion" else "Pleural Thickening" if p == "Pleural_Thickening" else p
                for p in NIH_PATHOLOGIES]
    expected += ["No Finding (chexpert)"] + [p for p in CHEXPERT_PATHOLOGIES[1:] if p not in expected]
    assert table.pathologies == expected
    rows = table.frame["source"].to_numpy()
    for name, own, own_split in (("nih_sample", nih_table, nih_split), ("chexpert", chx_table, chx_split)):
        mine = rows == name
        assert (table.frame.loc[mine, "image_id"] == name + "/" + own.frame["image_id"].astype(str).to_numpy()).all()
        assert (split[mine] == own_split).all(), "each source keeps its own patient-level split"
        for k, finding in enumerate(table.pathologies):  # a column the source labels is its column, else unknown
            column = {"Pleural Effusion": "Effusion", "Pleural Thickening": "Pleural_Thickening"}.get(finding, finding) \
                if name == "nih_sample" else ("No Finding" if finding == "No Finding (chexpert)" else finding)
            if column in own.pathologies:
                np.testing.assert_array_equal(table.labels[mine, k], own.labels[:, own.pathologies.index(column)])
            else:
                assert np.isnan(table.labels[mine, k]).all(), (name, finding)
    patients = table.frame["patient_id"]
    assert set(patients[rows == "nih_sample"]).isdisjoint(patients[rows == "chexpert"])
    assert data.multiclass == [False] * len(expected)


def test_no_sources_and_multiclass_source_stop_clearly(compose, chexpert_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"data=merge has no sources: list them with sources="):
        instantiate(compose(["data=merge"], tmp_path).data)
    cfg = compose([*MERGE, f"data.sources.chexpert.root={chexpert_tree}", "data.sources.chexpert.uncertainty=multiclass"],
                  tmp_path)
    with pytest.raises(DataError, match="sources.chexpert uses data.uncertainty=multiclass"):
        instantiate(cfg.data).labels_only()


@pytest.mark.slow
def test_training_on_the_merge_scores_each_source_on_its_own_findings(compose, tiny_overrides, chexpert_tree: Path,
                                                                      tmp_path: Path) -> None:
    from chestx.comparison import build_report
    from chestx.train import train

    metrics = train(compose([*tiny_overrides, *MERGE, f"data.sources.chexpert.root={chexpert_tree}",
                             "model=timm", "model.name=test_resnet", "data.image_size=32", "subgroups=none"], tmp_path))
    assert metrics["status"] == "ok" and metrics["sources"] == ["chexpert", "nih_sample"]
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    nih_rows = predictions["image_id"].str.startswith("nih_sample/")
    assert predictions.loc[nih_rows, "label_Lung Opacity"].isna().all(), "a finding NIH does not label is unknown"
    assert predictions.loc[~nih_rows, "label_Mass"].isna().all()
    auroc = pd.read_csv(tmp_path / "auroc.csv").set_index("pathology")["auroc"]
    known = predictions["label_Mass"].notna()
    assert auroc["Mass"] == pytest.approx(roc_auc_score(predictions.loc[known, "label_Mass"],
                                                        predictions.loc[known, "prob_Mass"]), abs=1e-6)
    for source, findings in (("nih_sample", 14), ("chexpert", 13)):  # each source on its own findings (not No Finding)
        own = pd.read_csv(tmp_path / "external" / source / "predictions.csv")
        assert len([c for c in own.columns if c.startswith("prob_")]) == findings
        ids = set(own["image_id"].astype(str))
        merged_ids = {i.split("/", 1)[1] for i in predictions["image_id"][predictions["image_id"].str.startswith(source)]}
        assert ids == merged_ids, "the source's test split"
    report = build_report([tmp_path], tmp_path / "report", n_resamples=20)
    matrix = pd.read_csv(report.out / "cross_dataset.csv")
    assert set(matrix["test_data"]) == {"nih_sample", "chexpert"} and matrix["internal"].all()
