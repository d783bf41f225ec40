"""Grad-CAM on every backbone alias (tiny CPU inputs), hook clean-up, overlay and the pointing game."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn as nn

from chestx.explain.gradcam import TARGET_LAYERS, compute_cams, target_layer, target_layer_name
from chestx.explain.overlay import overlay
from chestx.explain.pointing_game import pointing_game, scale_box
from chestx.models import BACKBONES, create_backbone

# InceptionV3 needs >= 107 px for a 3x3 (not 1x1) Mixed_7c map; resnet56v2 keeps H/4 so 32 px is plenty
SIZE = {"inceptionv3": 107, "resnet56v2": 32}


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def _model(name: str, num_outputs: int = 3) -> nn.Module:
    torch.manual_seed(0)
    model = create_backbone(name, num_outputs)
    with torch.no_grad():
        # positive head weights on non-negative (post-ReLU) features: every class has positive evidence,
        # so a random-init heatmap cannot collapse to all zeros
        model.get_classifier().weight.abs_()
    return model


def _images(name: str, batch: int = 1) -> torch.Tensor:
    s = SIZE.get(name, 64)
    return torch.randn(batch, 3, s, s, generator=torch.Generator().manual_seed(0))


def test_table_covers_every_alias():
    assert tuple(TARGET_LAYERS) == BACKBONES


@pytest.mark.parametrize("name", BACKBONES)
def test_gradcam_every_backbone_inside_inference_mode(name):
    model = _model(name)
    model.train()
    frozen = next(iter(model.parameters()))
    frozen.requires_grad_(False)
    assert target_layer_name(model) == TARGET_LAYERS[name] == target_layer_name(model, name)
    with torch.inference_mode():
        x = _images(name)  # an inference tensor, as a caller's predict loop would produce
        cams = compute_cams(model, x, [[0, 2]])
    assert cams.shape == (2, *x.shape[-2:]) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
    assert all(c.std() > 0 for c in cams)
    assert _hooks(model) == 0
    assert model.training and all(m.training for m in model.modules())
    assert not frozen.requires_grad and all(p.requires_grad for p in list(model.parameters())[1:])
    assert all(p.grad is None for p in model.parameters())


def test_per_image_ints_no_grad_and_existing_grads_kept():
    model = _model("resnet18").eval()
    fc = model.get_classifier()
    fc.weight.grad = torch.ones_like(fc.weight)
    x = _images("resnet18", batch=2)
    with torch.no_grad():
        cams = compute_cams(model, x, torch.tensor([1, 0]), batch_size=1)
    assert cams.shape == (2, 64, 64)
    single = compute_cams(model, x[:1], [1])
    np.testing.assert_allclose(cams[0], single[0], atol=1e-5)
    assert torch.equal(fc.weight.grad, torch.ones_like(fc.weight)) and not model.training


def test_multiclass_targets_positive_logit():
    model = _model("resnet18", num_outputs=3 * 2)  # K=2 pathologies, (B, K, 3) neg/pos/uncertain
    x = _images("resnet18")
    np.testing.assert_allclose(
        compute_cams(model, x, [1], multiclass=True), compute_cams(model, x, [3 * 1 + 1]), atol=1e-6
    )


def test_override_default_and_wrapper(caplog):
    model = _model("resnet18")
    assert target_layer(model, "layer3") is model.layer3
    assert compute_cams(model, _images("resnet18"), [0], target_layer_name="layer3").shape == (1, 64, 64)
    with pytest.raises(ValueError, match="neither a backbone"):
        target_layer_name(model, "layer9")

    class Wrapper(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.model = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

    assert target_layer_name(Wrapper(model)) == "model.layer4"
    other = create_backbone("resnet10t", 2)  # timm name with no table entry: last feature_info tap
    with caplog.at_level(logging.WARNING, logger="chestx.explain.gradcam"):
        assert target_layer_name(other) == "layer4"
    assert "no Grad-CAM target layer listed" in caplog.text


def test_overlay_shapes():
    cam = np.zeros((8, 8), dtype=np.float32)
    cam[2, 3] = 1.0
    gray = np.full((32, 48), 100, dtype=np.uint8)
    out = overlay(gray, cam)
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8
    assert overlay(np.stack([gray] * 3, axis=2), cam, alpha=0.3).shape == (32, 48, 3)


def test_pointing_game_hand_cases():
    cam = np.zeros((20, 30), dtype=np.float32)
    cam[5, 10] = 1.0  # peak at row 5, col 10
    assert pointing_game(cam, (8, 3, 4, 4))  # cols 8..11, rows 3..6
    assert not pointing_game(cam, (0, 0, 5, 5))
    assert not pointing_game(cam, (11, 6, 4, 4))
    assert pointing_game(cam, (11, 6, 4, 4), tolerance=1.5)
    assert not pointing_game(np.full((20, 30), 0.5), (0, 0, 30, 20))  # constant: no peak


def test_scale_box():
    assert scale_box((512, 256, 100, 50), 1024, 256) == (128.0, 64.0, 25.0, 12.5)
    assert scale_box((10, 10, 10, 10), (100, 200), (50, 50)) == (5.0, 2.5, 5.0, 2.5)
