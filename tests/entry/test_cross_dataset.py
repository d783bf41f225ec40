"""Cross-dataset evaluation: a model trained on the embedded NIH sample scored on CheXpert's real valid.csv
(small real X-ray JPEGs written at the paths the CSV names), on the findings both datasets define."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.data.images import load_grayscale
from chestx.data.sources import CheXpertData
from chestx.inference.external import score_external
from chestx.inference.predictor import load_for_inference


@pytest.fixture(scope="module")
def nih_on_chexpert(clinical_run_dir: Path, chexpert_tree: Path):
    predictor = load_for_inference(clinical_run_dir / "checkpoints" / "best.ckpt")
    return predictor, score_external(predictor, CheXpertData(root=str(chexpert_tree), tasks="all"), batch_size=32)


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
    with pytest.raises(ValueError, match="no finding in common.*tasks=all"):
        score_external(predictor, CheXpertData(root=str(chexpert_tree), tasks="all"))
