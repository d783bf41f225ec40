"""transformers / open_clip encoders (chestx.models.encoders): tiny random-initialised models saved to a folder,
trained, tested, predicted, explained and exported end to end on the embedded NIH sample (no network)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_encoders import MEAN, STD, save_tiny_dinov2, save_tiny_open_clip  # noqa: E402

from chestx.core.checkpoint_io import load_checkpoint  # noqa: E402
from chestx.inference.onnx import check_onnx, export_onnx  # noqa: E402
from chestx.inference.predictor import collect_images, load_for_inference, load_images  # noqa: E402
from chestx.models.encoders import EncoderError, create_hf_encoder, resolve_encoder_folder  # noqa: E402
from chestx.train import train  # noqa: E402

SAVERS = {"hf": save_tiny_dinov2, "open_clip": save_tiny_open_clip}


def test_absent_hub_weights_fail_at_once_with_the_fetch_command(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    with pytest.raises(EncoderError, match=r"hf download microsoft/rad-dino"):
        create_hf_encoder("microsoft/rad-dino", 3)
    with pytest.raises(EncoderError, match="no such folder"):
        resolve_encoder_folder(str(tmp_path / "missing"), "hf")


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(SAVERS))
def test_train_test_predict_cam_export_from_a_local_folder(kind: str, compose, tiny_overrides, tmp_path: Path,
                                                           sample_root: Path) -> None:
    folder = SAVERS[kind](tmp_path / "encoder", image_size=32)
    out = tmp_path / "run"
    overrides = [o for o in tiny_overrides if not o.startswith("data.image_size")] + ["data.image_size=null"]
    metrics = train(compose([*overrides, f"model={kind}", f"model.name={folder}"], out))
    assert np.isfinite(metrics["test/auroc_mean"])

    ckpt = out / "checkpoints" / "best.ckpt"
    info = load_checkpoint(ckpt)["chestx"]
    assert info["image_size"] == 32 and info["model"]["kind"] == kind
    np.testing.assert_allclose(info["mean"], MEAN) and np.testing.assert_allclose(info["std"], STD)

    for path in folder.iterdir():  # predict / export rebuild the architecture from the checkpoint alone
        path.unlink()
    predictor = load_for_inference(ckpt)
    _, images, failed = load_images(collect_images(sample_root / "images")[:3])
    assert not failed
    x = predictor.preprocess(images)  # (3, 3, 32, 32)
    probs = predictor.probabilities(x)
    assert probs.shape == (3, len(predictor.pathologies)) and np.isfinite(probs).all()
    cams = predictor.cams(x, [[0], [1], [2]])
    assert cams.shape[-2:] == (32, 32) and np.isfinite(cams).all() and cams.max() > 0

    path = export_onnx(predictor, tmp_path / "model.onnx")
    report = check_onnx(path, predictor, images, batch_sizes=(2,))
    assert report["max_abs_diff"] <= 1e-4


def test_features_pool_class_and_patch_tokens(tmp_path: Path) -> None:
    net = create_hf_encoder(str(save_tiny_dinov2(tmp_path / "d")), 4)
    x = torch.randn(2, 3, 32, 32)
    feats = net.forward_features(x)  # (2, 64): [CLS (32) ; mean patch (32)]
    hidden = net.encoder(pixel_values=x).last_hidden_state  # (2, 1 + 16, 32)
    torch.testing.assert_close(feats, torch.cat([hidden[:, 0], hidden[:, 1:].mean(1)], 1))
    torch.testing.assert_close(net(x), net.forward_head(feats))
