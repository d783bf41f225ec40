"""chestx.train on CheXpert: real label rows, each uncertainty policy through the whole run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chestx.data.labels.table import CHEXPERT_COMPETITION_TASKS
from chestx.core.run_folder import read_predictions
from chestx.train import train

POLICIES = ["ignore", "zeros", "ones", "multiclass", "lsr_zeros", "lsr_ones"]
# timm's 0.4 M-parameter test network at 32 px: these runs check the labels through a whole run, not a backbone
TINY_NET = ("model=timm", "model.name=test_resnet", "data.image_size=32")


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
def test_every_uncertainty_policy_trains(policy: str, compose, chexpert_tree: Path, tmp_path: Path,
                                        tiny_overrides) -> None:
    cfg = compose(
        [*tiny_overrides, "data=chexpert", f"data.root={chexpert_tree}", f"data.uncertainty={policy}",
         *TINY_NET],
        tmp_path,
    )
    metrics = train(cfg)
    assert metrics["status"] == "ok"
    ids, probs, labels, pathologies = read_predictions(tmp_path / "predictions.csv")
    assert pathologies == list(CHEXPERT_COMPETITION_TASKS)
    assert len(ids) == 202, "valid.csv has 202 frontal images: all of them are the test split"
    assert np.all((probs >= 0) & (probs <= 1))
    # the test split is valid.csv: radiologist labels, no uncertainty, identical under every policy
    valid = pd.read_csv(chexpert_tree / "CheXpert-v1.0-small" / "valid.csv").set_index("Path")
    truth = valid.loc[ids["image_id"], list(CHEXPERT_COMPETITION_TASKS)].to_numpy()
    np.testing.assert_array_equal(np.nan_to_num(labels, nan=-9), np.nan_to_num(truth, nan=0))


def test_per_pathology_policy_mapping(compose, chexpert_tree: Path, tmp_path: Path, tiny_overrides) -> None:
    cfg = compose(
        [*tiny_overrides, "data=chexpert", f"data.root={chexpert_tree}", *TINY_NET,
         "data.uncertainty={default: zeros, Atelectasis: ones, Edema: ones}", "trainer.fast_dev_run=true"],
        tmp_path,
    )
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    table, split = datamodule.labels_only()
    raw = pd.read_csv(chexpert_tree / "CheXpert-v1.0-small" / "train.csv")
    raw = raw[raw["Frontal/Lateral"] == "Frontal"].set_index("Path")
    train_rows = table.frame["image_id"].isin(raw.index).to_numpy()
    for k, name in enumerate(table.pathologies):
        expected = raw.loc[table.frame["image_id"][train_rows], name]
        positive = (expected == 1) | ((expected == -1) & (name in ("Atelectasis", "Edema")))
        np.testing.assert_array_equal(table.labels[train_rows, k] == 1, positive.to_numpy(), err_msg=name)
    assert train(cfg)["status"] == "ok"


@pytest.mark.slow
def test_mixed_multiclass_policy_trains_with_the_configured_loss(compose, chexpert_tree: Path, tmp_path: Path,
                                                                 tiny_overrides) -> None:
    """{default: multiclass, Atelectasis: ones} with weighted BCE: Atelectasis gets one logit and the
    weighted BCE (weights from its own training labels), the other four three logits each."""
    import torch

    from chestx.inference.predictor import load_for_inference

    cfg = compose(
        [*tiny_overrides, "data=chexpert", f"data.root={chexpert_tree}", *TINY_NET,
         "data.uncertainty={default: multiclass, Atelectasis: ones}", "loss=weighted_bce"],
        tmp_path,
    )
    assert train(cfg)["status"] == "ok"
    predictor = load_for_inference(tmp_path / "checkpoints" / "last.ckpt")
    assert predictor.multiclass == [False, True, True, True, True]
    head = [v for k, v in torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"].items()
            if k.endswith("weight") and v.ndim == 2][-1]
    assert head.shape[0] == 1 + 3 * 4
    ids, probs, labels, pathologies = read_predictions(tmp_path / "predictions.csv")
    assert pathologies == list(CHEXPERT_COMPETITION_TASKS) and np.all((probs >= 0) & (probs <= 1))
