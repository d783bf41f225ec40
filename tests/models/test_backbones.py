"""Backbone factory, the registered resnet56v2 and the local weight-file loader (tiny CPU inputs)."""
from __future__ import annotations

import re
import socket

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

from chestx.models import MODEL_ALIASES, create_backbone, load_weights_file

SIZE = {"inceptionv3": 75, "resnet56v2": 32}  # smallest sensible inputs; others use 64 px


def _x(name: str, in_chans: int = 3, batch: int = 2) -> torch.Tensor:
    s = SIZE.get(name, 64)
    return torch.randn(batch, in_chans, s, s, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", sorted(MODEL_ALIASES))
def test_every_alias_maps_images_to_logits(name):
    model = create_backbone(name, num_outputs=4, in_chans=1).eval()
    x = _x(name, in_chans=1)
    with torch.no_grad():
        out = model(x)  # (B, 4) logits
        feats = model.forward_features(x)  # (B, C, h, w)
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    assert feats.ndim == 4 and feats.shape[1] == model.num_features
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and head.out_features == 4 and head.in_features == model.num_features


def test_vgg16_head_is_gap_then_single_linear():
    model = create_backbone("vgg16", 3, drop_rate=0.2).eval()
    assert isinstance(model.pre_logits, nn.Identity)
    assert model.get_classifier().in_features == 512
    assert not any(isinstance(m, nn.Linear) and m is not model.get_classifier() for m in model.modules())
    x = _x("vgg16")
    with torch.no_grad():
        pooled = model.forward_features(x).mean(dim=(2, 3))  # (B, 512)
        torch.testing.assert_close(model(x), model.get_classifier()(pooled))


def test_timm_name_passes_through_and_unknown_raises():
    model = create_backbone("resnet10t", 2)
    assert model.pretrained_cfg["architecture"] == "resnet10t"
    with pytest.raises(ValueError, match=r"densenet121.*timm"):
        create_backbone("no_such_net", 2)


def test_resnet56v2_registered_in_timm():
    model = timm.create_model("resnet56v2", num_classes=3, in_chans=1)
    convs3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs3) + 1 == 56  # 1 stem + 27 blocks x 2 convs, + the linear head
    assert model.num_features == 64 and model.get_classifier().out_features == 3
    x = torch.randn(2, 1, 32, 32)
    assert model.forward_features(x).shape == (2, 64, 8, 8)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 64)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    with pytest.raises(RuntimeError, match="model.weights="):
        create_backbone("resnet56v2", 3, pretrained=True)


def _online() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=2).close()
        return True
    except OSError:
        return False


def test_pretrained_without_network_says_how_to_pass_a_file():
    if _online():
        pytest.skip("network available: timm would download the weights")
    with pytest.raises(RuntimeError, match=r"cannot be downloaded here.*model\.weights=/path/to/file"):
        create_backbone("resnet18", 3, pretrained=True)


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "lightning", "ddp"])
def test_weights_roundtrip_identical_outputs(tmp_path, fmt):
    src = create_backbone("resnet18", 3, in_chans=1).eval()
    sd = src.state_dict()
    path = tmp_path / f"w.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "lightning":
        torch.save({"epoch": 3, "global_step": 10, "state_dict": {f"model.{k}": v for k, v in sd.items()}}, path)
    elif fmt == "ddp":
        torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, path)
    else:
        torch.save(sd, path)
    dst = create_backbone("resnet18", 3, in_chans=1, weights=path).eval()
    x = _x("resnet18", in_chans=1)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_torchvision_resnet18_state_dict(tmp_path):
    tv = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "tv_resnet18.pth"
    torch.save(tv.state_dict(), path)
    x = _x("resnet18")
    with torch.no_grad():
        full = create_backbone("resnet18", 1000, weights=path).eval()  # same head shape: identical logits
        torch.testing.assert_close(full(x), tv(x))
        model = create_backbone("resnet18", 3).eval()
        report = load_weights_file(model, path)
        assert report.reinitialised_head == ["fc.weight", "fc.bias"] and report.shape_mismatch == []
        assert set(report.missing) == {"fc.weight", "fc.bias"} and report.unexpected == []
        tv_feats = torch.flatten(tv.avgpool(tv.layer4(tv.layer3(tv.layer2(tv.layer1(
            tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))), 1)
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), tv_feats)
        gray = create_backbone("resnet18", 3, in_chans=1, weights=path)  # first conv adapted to 1 channel
        torch.testing.assert_close(gray.conv1.weight, tv.conv1.weight.sum(dim=1, keepdim=True))


def test_torchvision_densenet121_old_style_keys(tmp_path):
    tv = torchvision.models.densenet121(weights=None).eval()
    # the published torchvision checkpoint uses "norm.1"-style names; timm's filter remaps them
    old = {
        re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
        for k, v in tv.state_dict().items()
        if not k.endswith("num_batches_tracked")  # absent from those old files
    }
    assert any(".norm.1." in k for k in old)
    path = tmp_path / "tv_densenet121.pth"
    torch.save(old, path)
    model = create_backbone("densenet121", 2).eval()
    report = load_weights_file(model, path)
    assert report.unexpected == [] and report.shape_mismatch == []
    missing = {k for k in report.missing if not k.endswith("num_batches_tracked")}
    assert missing == {"classifier.weight", "classifier.bias"}
    x = _x("densenet121")
    with torch.no_grad():
        expected = torch.flatten(F.adaptive_avg_pool2d(F.relu(tv.features(x)), 1), 1)  # (B, 1024)
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), expected)


def test_load_errors_name_the_file(tmp_path):
    model = create_backbone("resnet18", 3)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_weights_file(model, tmp_path / "nope.pth")
    bad = tmp_path / "not_a_state_dict.pth"
    torch.save({"epoch": 1, "note": "hello"}, bad)
    with pytest.raises(ValueError, match="not_a_state_dict.pth"):
        load_weights_file(model, bad)
    other = tmp_path / "other_arch.pth"
    torch.save(timm.create_model("resnet56v2", num_classes=3).state_dict(), other)
    with pytest.raises(ValueError, match=r"other_arch.pth.*backbone tensors match"):
        load_weights_file(model, other)
