"""Cross-dataset evaluation: a model trained on the embedded NIH sample scored on CheXpert's real valid.csv
(small real X-ray JPEGs written at the paths the CSV names), on the findings both datasets define."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.data.images.read import load_grayscale
from chestx.data.datasets.chexpert import CheXpertData
from chestx.inference.external import score_external
from chestx.inference.predictor import load_for_inference


@pytest.fixture(scope="module")
def nih_on_chexpert(clinical_run_dir: Path, chexpert_tree: Path):
    predictor = load_for_inference(clinical_run_dir / "checkpoints" / "best.ckpt")
    return predictor, score_external(predictor, CheXpertData(root=str(chexpert_tree), findings="all"), batch_size=32)


def test_scores_the_shared_findings_against_an_independent_reading(nih_on_chexpert, chexpert_tree: Path) -> None:
    predictor, scores = nih_on_chexpert
    assert scores.pathologies == ["Atelectasis", "Cardiomegaly", "Effusion", "Pneumonia", "Pneumothorax",
                                  "Consolidation", "Edema"]
    assert scores.data_names[2] == "Pleural Effusion"
    valid = pd.read_csv(chexpert_tree / "CheXpert-v1.0-small" / "valid.csv")
    frontal = valid[valid["Frontal/Lateral"] == "Frontal"].reset_index(drop=True)  # valid.csv is the test split
    assert list(scores.ids["image_id"]) == list(frontal["Path"]) and len(frontal) == 202
    for k, name in enumerate(scores.data_names):  # valid.csv: 1.0 / 0.0 only (no uncertain, no blanks)
        np.testing.assert_array_equal(scores.targets[:, k], frontal[name].to_numpy(np.float32))
    some = [0, 57, 201]
    images = [load_grayscale(chexpert_tree / frontal["Path"][i]) for i in some]
    direct = predictor.probabilities(predictor.preprocess(images))  # (3, 14): the model on those files, alone
    np.testing.assert_allclose(scores.probs[some], direct[:, [0, 1, 2, 6, 7, 8, 9]], atol=1e-6)
    assert {"sex", "age", "view"} <= set(scores.ids.columns)


def test_no_shared_finding_is_a_clear_error(clinical_run_dir: Path, chexpert_tree: Path) -> None:
    predictor = load_for_inference(clinical_run_dir / "checkpoints" / "best.ckpt")
    predictor.pathologies = ["Mass"] * len(predictor.pathologies)  # a model of findings CheXpert does not label
    with pytest.raises(ValueError, match="no finding in common.*findings=all"):
        score_external(predictor, CheXpertData(root=str(chexpert_tree), findings="all"))


@pytest.mark.slow
def test_train_with_test_data_writes_external_folder(compose, tiny_overrides, chexpert_tree: Path,
                                                     tmp_path: Path) -> None:
    """`chestx.train ... test_data=[chexpert]`: the best checkpoint scored on CheXpert after the NIH test."""
    from sklearn.metrics import roc_auc_score

    from chestx.core.run_folder import read_predictions
    from chestx.train import train

    cfg = compose([*tiny_overrides, "model=timm", "model.name=test_resnet", "data.image_size=32",
                   "test_data=[chexpert]",
                   f"test_data.chexpert.root={chexpert_tree}"], tmp_path)
    metrics = train(cfg)
    out = tmp_path / "external" / "chexpert"
    assert {p.name for p in out.iterdir()} >= {"predictions.csv", "auroc.csv", "subgroups.csv", "mapping.csv",
                                               "thresholds.csv"}
    ids, probs, labels, names = read_predictions(out / "predictions.csv")
    assert len(ids) == 202 and len(names) == 7 and names[2] == "Effusion"  # test_data chexpert: findings=all
    assert {"sex", "age", "view"} <= set(ids.columns)
    aucs = [roc_auc_score(labels[~np.isnan(labels[:, k]), k], probs[~np.isnan(labels[:, k]), k])
            for k in range(len(names)) if len(np.unique(labels[~np.isnan(labels[:, k]), k])) == 2]
    assert metrics["external_chexpert/auroc_mean"] == pytest.approx(np.mean(aucs), abs=1e-6)
    table = pd.read_csv(out / "auroc.csv").set_index("pathology")
    assert table.loc["Effusion", "n_pos"] == int(np.nansum(labels[:, 2]))
    frozen = pd.read_csv(tmp_path / "thresholds.csv").set_index("pathology")["threshold"]
    external = pd.read_csv(out / "thresholds.csv").set_index("pathology")["threshold"]
    assert np.allclose(external.to_numpy(), frozen.loc[names].to_numpy())  # the NIH run's validation thresholds
    subgroups = pd.read_csv(out / "subgroups.csv")
    assert {"sex", "age", "view"} <= set(subgroups["attribute"]) and subgroups["tpr"].notna().any()
    saved = (tmp_path / "metrics.json").read_text()
    assert "external_chexpert/auroc/Effusion" in saved


def test_test_data_needs_a_root_and_says_so(compose, tiny_overrides, tmp_path: Path) -> None:
    from chestx.train import other_test_data

    with pytest.raises(ValueError, match=r"test_data\.chexpert\.root"):
        other_test_data(compose([*tiny_overrides, "test_data=[chexpert]"], tmp_path))
    with pytest.raises(FileNotFoundError, match=r"test_data\.chexpert\.root='/nowhere'"):
        other_test_data(compose([*tiny_overrides, "test_data=[chexpert]", "test_data.chexpert.root=/nowhere"],
                                tmp_path))


def test_evaluate_scores_an_existing_checkpoint_on_another_dataset(nih_on_chexpert, clinical_run_dir: Path,
                                                                   chexpert_tree: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    import json
    import sys

    from chestx.evaluate import main

    _, scores = nih_on_chexpert
    run = tmp_path / "evaluate"
    monkeypatch.setattr(sys, "argv", ["chestx.evaluate", f"ckpt={clinical_run_dir / 'checkpoints' / 'best.ckpt'}",
                                      "data=chexpert", f"data.root={chexpert_tree}", "data.findings=all",
                                      f"hydra.run.dir={run}"])
    main()
    out = run / "external" / "chexpert"
    table = pd.read_csv(out / "auroc.csv").set_index("pathology")
    assert list(table.index[:-1]) == scores.pathologies and table.index[-1] == "mean"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["status"] == "ok" and saved["external_chexpert/auroc_mean"] == pytest.approx(table.loc["mean", "auroc"])
    assert (out / "subgroups.csv").is_file() and (out / "thresholds.csv").is_file()
    mapping = pd.read_csv(out / "mapping.csv")
    assert dict(zip(mapping["pathology"], mapping["dataset_name"]))["Effusion"] == "Pleural Effusion"
