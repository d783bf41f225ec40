"""Test-time augmentation against a reference loop written here with torchvision's TenCrop, on a real trained model
and real NIH sample images; the crops go through the network as one batch; the TTA files of predict and evaluate."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision import transforms

from chestx.core.run_folder import read_predictions
from chestx.data.images.read import load_grayscale
from chestx.data.loading.transforms import build_transform
from chestx.inference.batch import predict
from chestx.inference.predictor import load_for_inference
from chestx.inference.tta import check_tta, n_views, tta_input_size


@pytest.fixture(scope="module")
def images(clinical_run_dir: Path, sample_root: Path) -> list[Path]:
    ids = pd.read_csv(clinical_run_dir / "predictions.csv", dtype=str)["image_id"].tolist()[:3]
    return [sample_root / "images" / name for name in ids]


def _reference(predictor, paths: list[Path], mode: str) -> np.ndarray:
    """CheXNet's test loop, one image and one view at a time: resize (256/224 of the model's side), TenCrop, the
    network on each crop, sigmoid, mean over crops; hflip: the image and its mirror."""
    size = predictor.image_size
    resize = round(size * 256 / 224) if mode == "tencrop" else size
    transform = build_transform(resize, train=False, in_chans=predictor.in_chans,
                                normalization=predictor.normalization, mean=predictor.mean, std=predictor.std)
    out = []
    for path in paths:
        x = transform(load_grayscale(path))  # (C, R, R)
        views = transforms.TenCrop(size)(x) if mode == "tencrop" else (x, torch.flip(x, dims=[-1]))
        with torch.no_grad():
            probs = [torch.sigmoid(predictor.net(v[None]))[0].numpy() for v in views]
        out.append(np.mean(probs, axis=0))
    return np.stack(out)  # (N, K)


@pytest.mark.parametrize("mode", ["tencrop", "hflip"])
def test_tta_equals_the_reference_loop_and_runs_one_batch(clinical_run_dir: Path, images, tmp_path: Path,
                                                          mode: str) -> None:
    predictor = load_for_inference(clinical_run_dir / "checkpoints" / "best.ckpt", tta=mode)
    assert not any(predictor.multiclass)
    calls: list[tuple[int, ...]] = []
    hook = predictor.net.register_forward_hook(lambda _m, args, _o: calls.append(tuple(args[0].shape)))
    result = predict(predictor, [str(p) for p in images], tmp_path, batch_size=8)
    hook.remove()
    size, views = predictor.image_size, n_views(mode)
    # one plain pass of 3 images, then ONE pass of all 3 x views crops at the trained size
    assert calls == [(3, 3, size, size), (3 * views, 3, size, size)]
    if mode == "tencrop":
        assert tta_input_size(size, mode) == round(size * 256 / 224) == 110  # 96 px model: resize to 110, crop 96
    ids, probs, _, pathologies = read_predictions(tmp_path / "predictions_tta.csv")
    assert list(ids["image_id"]) == [p.name for p in images] and pathologies == predictor.pathologies
    want = _reference(predictor, images, mode)
    np.testing.assert_allclose(probs, want, rtol=0, atol=1e-6)
    assert np.abs(probs - result["probs"]).max() > 1e-4  # the TTA pass is not the plain pass
    plain = read_predictions(tmp_path / "predictions.csv")[1]
    np.testing.assert_allclose(plain, result["probs"], atol=1e-8)


def test_bad_mode_names_the_key() -> None:
    with pytest.raises(ValueError, match="tta='fivecrop'.*none, hflip, tencrop"):
        check_tta("fivecrop")


@pytest.mark.slow
def test_evaluate_ckpt_writes_the_tta_pass_beside_the_plain_one(clinical_run_dir: Path, tmp_path: Path,
                                                                monkeypatch) -> None:
    """chestx.evaluate ckpt=... tta=hflip on the sample's test split: predictions_tta.csv + auroc_tta.csv, the mode in
    metrics.json; the TTA AUROC file agrees with its predictions."""
    from chestx.evaluate import main
    from chestx.metrics.auroc import masked_auroc

    out = tmp_path / "eval"
    monkeypatch.setattr(sys, "argv", ["chestx.evaluate", f"ckpt={clinical_run_dir / 'checkpoints' / 'best.ckpt'}",
                                      "tta=hflip", "data.image_size=96", "subgroups=none", f"hydra.run.dir={out}"])
    main()
    folder = out / "external" / "nih_sample"
    ids, probs, labels, names = read_predictions(folder / "predictions_tta.csv")
    plain_ids = read_predictions(folder / "predictions.csv")[0]
    assert list(ids["image_id"]) == list(plain_ids["image_id"]) and len(ids) == 124
    table = pd.read_csv(folder / "auroc_tta.csv")
    np.testing.assert_allclose(table["auroc"], masked_auroc(probs, labels, names)["auroc"], atol=1e-6)
    metrics = pd.read_json(out / "metrics.json", typ="series")
    assert metrics["tta"] == "hflip" and metrics["tta_views"] == 2
    assert metrics["external_nih_sample_tta/auroc_mean"] == pytest.approx(table["auroc"].iloc[-1], abs=1e-6)
    monkeypatch.setattr(sys, "argv", ["chestx.evaluate", "predictions=x.csv", "tta=tencrop",
                                      f"hydra.run.dir={tmp_path / 'bad'}"])
    with pytest.raises(SystemExit):  # Hydra prints the error and exits 1
        main()
    assert "tta=tencrop re-scores a checkpoint" in (tmp_path / "bad" / "metrics.json").read_text()
