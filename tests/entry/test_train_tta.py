"""train's test step with tta=: the TTA pass of the best checkpoint into predictions_tta.csv, the mode recorded; a bad
mode stops the run before training; the experiment=ensemble_sample recipe's sweep, split and callback."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from chestx.core.run_folder import read_metrics, read_predictions
from chestx.data.images.read import load_grayscale


@pytest.mark.slow
def test_train_scores_the_best_checkpoint_with_tencrop(compose, tiny_overrides, clinical_run_dir: Path,
                                                       tmp_path: Path) -> None:
    from chestx.inference.predictor import load_for_inference
    from chestx.metrics.auroc import masked_auroc
    from chestx.train import train

    ckpt = clinical_run_dir / "checkpoints" / "best.ckpt"
    metrics = train(compose([*tiny_overrides, "model=resnet18", "data.image_size=96", "fit=false",
                             f"ckpt_path={ckpt}", "tta=tencrop", "subgroups=none"], tmp_path))
    assert metrics["tta"] == "tencrop" and metrics["tta_views"] == 10 and metrics["tta_infer_images_per_s"] > 0
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["tta"] == "tencrop"
    ids, probs, labels, names = read_predictions(tmp_path / "predictions_tta.csv")
    plain_ids, plain, _, _ = read_predictions(tmp_path / "predictions.csv")
    assert sorted(ids["image_id"]) == sorted(plain_ids["image_id"]) and len(ids) == 124
    table = pd.read_csv(tmp_path / "auroc_tta.csv")
    np.testing.assert_allclose(table["auroc"], masked_auroc(probs, labels, names)["auroc"], atol=1e-6)
    assert read_metrics(tmp_path / "metrics.json")["test_tta/auroc_mean"] == pytest.approx(table["auroc"].iloc[-1],
                                                                                             abs=1e-6)
    # the first rows again through the predictor's own TTA path: the same numbers as the file
    predictor = load_for_inference(ckpt, tta="tencrop")
    root = Path(compose([*tiny_overrides], tmp_path / "x").data.root)
    x = torch.stack([predictor.tta_transform(load_grayscale(root / "images" / i)) for i in ids["image_id"][:3]])
    np.testing.assert_allclose(predictor.tta_probabilities(x), probs[:3], atol=1e-6)


def test_bad_tta_stops_before_training(compose, tiny_overrides, tmp_path: Path) -> None:
    from chestx.train import train

    with pytest.raises(ValueError, match="tta='fivecrop': choose one of none, hflip, tencrop"):
        train(compose([*tiny_overrides, "tta=fivecrop"], tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_ensemble_recipe_sweeps_three_seeds_on_one_split(compose, tmp_path: Path) -> None:
    from hydra.utils import instantiate

    from chestx.ensemble import EnsembleReport

    cfg = compose(["experiment=ensemble_sample"], tmp_path, hydra_config=True)
    assert str(cfg.hydra.sweeper.params.seed) == "0,1,2" and cfg.tta == "tencrop"
    assert cfg.model.name == "resnet18" and cfg.data.image_size == 96 and cfg.trainer.max_epochs == 3
    callback = instantiate(cfg.hydra.callbacks.ensemble_report)
    assert isinstance(callback, EnsembleReport) and callback.metrics == ["auroc", "auprc", "sens_at_spec90"]
    splits = []
    for seed in (0, 1):
        data = instantiate(compose(["experiment=ensemble_sample", f"seed={seed}"], tmp_path).data)
        _, split = data.labels_only()
        splits.append(split)
    assert np.array_equal(*splits)  # every seed is tested on the same images
