"""Backbone table and factory, the registered resnet56v2, native input sizes and timm's weight loading
(tiny CPU inputs; every weights file is saved by the test itself)."""
from __future__ import annotations

import re
import socket
import time
from types import SimpleNamespace

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from timm.data import resolve_model_data_config
from torchvision.models.densenet import _load_state_dict as torchvision_densenet_load  # torchvision's key remap

from chestx.models import (
    BACKBONE_SPECS,
    BACKBONES,
    create_backbone,
    default_input_size,
    default_mean_std,
    weights_report,
)

SIZE = {"inceptionv3": 75, "resnet56v2": 32}  # smallest sensible inputs; others use 64 px


def _x(name: str, in_chans: int = 3, batch: int = 2) -> torch.Tensor:
    s = SIZE.get(name, 64)
    return torch.randn(batch, in_chans, s, s, generator=torch.Generator().manual_seed(0))


def test_one_table_with_a_config_per_backbone():
    """BACKBONES and BACKBONE_SPECS list the same names in one order, each a model timm knows, each with its
    conf/model/<name>.yaml (conf/model/timm.yaml takes any other timm name)."""
    from pathlib import Path

    from chestx._hydra import CONFIG_DIR

    assert list(BACKBONE_SPECS) == list(BACKBONES)
    assert all(timm.is_model(spec.timm_name) for spec in BACKBONE_SPECS.values())
    assert {p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml")} == {*BACKBONES, "timm", "hf", "open_clip"}  # hf, open_clip: chestx.models.encoders


@pytest.mark.parametrize("name", BACKBONES)
def test_every_alias_maps_images_to_logits(name):
    model = create_backbone(name, num_outputs=4, in_chans=1).eval()
    # the native size / normalisation read from timm's registry are those of the built model's data config
    data_cfg = resolve_model_data_config(model)
    assert default_input_size(name) == data_cfg["input_size"][-1]
    assert default_mean_std(name) == (tuple(data_cfg["mean"]), tuple(data_cfg["std"]))
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


def test_default_input_size_without_building_or_network():
    assert default_input_size("inceptionv3") == 299
    assert {default_input_size(n) for n in BACKBONES if n != "inceptionv3"} == {224}
    assert default_input_size("resnet10t") == 176  # any timm name: its own pretrained cfg
    assert default_mean_std("inceptionv3") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert default_mean_std("densenet121") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with pytest.raises(ValueError, match="no_such_net"):
        default_input_size("no_such_net")


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "timm_train", "ddp"])
def test_weights_roundtrip_identical_outputs(tmp_path, fmt):
    src = create_backbone("resnet18", 3, in_chans=1).eval()
    sd = src.state_dict()
    path = tmp_path / f"w.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "timm_train":
        torch.save({"epoch": 3, "arch": "resnet18", "state_dict": sd}, path)
    elif fmt == "ddp":
        torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, path)
    else:
        torch.save(sd, path)
    dst = create_backbone("resnet18", 3, in_chans=1, weights=path).eval()  # the head fits: kept
    x = _x("resnet18", in_chans=1)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    report = weights_report(dst, path)
    assert report.new == report.unused == report.adapted == () and len(report.loaded) == len(sd)


def test_torchvision_resnet18_state_dict(tmp_path):
    tv = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "tv_resnet18.pth"
    torch.save(tv.state_dict(), path)
    x = _x("resnet18")
    with torch.no_grad():
        full = create_backbone("resnet18", 1000, weights=path).eval()  # same head shape: identical logits
        torch.testing.assert_close(full(x), tv(x), rtol=0, atol=0)
        model = create_backbone("resnet18", 3, weights=path).eval()  # 3 outputs: timm drops the 1000-way head
        report = weights_report(model, path)
        assert report.new == ("fc.weight", "fc.bias") and report.unused == ("fc.weight", "fc.bias")
        assert report.adapted == () and len(report.loaded) == len(tv.state_dict()) - 2
        tv_feats = torch.flatten(tv.avgpool(tv.layer4(tv.layer3(tv.layer2(tv.layer1(
            tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))), 1)
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), tv_feats)


@pytest.mark.parametrize("in_chans", [1, 2])
def test_first_conv_adapted_as_timm_adapt_input_conv(tmp_path, in_chans):
    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "tv_resnet18.pth"
    torch.save(tv.state_dict(), path)
    model = create_backbone("resnet18", 3, in_chans=in_chans, weights=path)
    w = tv.conv1.weight.detach()  # (64, 3, 7, 7)
    # 1 channel: the sum over RGB; otherwise RGB repeated, cut to in_chans, scaled by 3 / in_chans
    expected = w.sum(dim=1, keepdim=True) if in_chans == 1 else w[:, :in_chans] * (3 / in_chans)
    torch.testing.assert_close(model.conv1.weight, expected)
    assert weights_report(model, path).adapted == ("conv1.weight",)


@pytest.mark.slow
def test_torchvision_densenet121_old_style_keys_equal_torchvision_remap(tmp_path):
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
    model = create_backbone("densenet121", 2, weights=path).eval()
    report = weights_report(model, path)
    assert {k for k in report.new if not k.endswith("num_batches_tracked")} == {"classifier.weight", "classifier.bias"}
    assert set(report.unused) == {"classifier.weight", "classifier.bias"}
    # torchvision's own loader remaps the same file by hand: every backbone tensor is identical
    by_hand = torchvision.models.densenet121(weights=None)
    torchvision_densenet_load(by_hand, SimpleNamespace(get_state_dict=lambda **_: dict(old)), progress=False)
    ours = model.state_dict()
    for key, value in by_hand.state_dict().items():
        if key.startswith("features.") and not key.endswith("num_batches_tracked"):
            assert torch.equal(ours[key], value), key
    x = _x("densenet121")
    with torch.no_grad():
        expected = torch.flatten(F.adaptive_avg_pool2d(F.relu(tv.features(x)), 1), 1)  # (B, 1024)
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), expected)


@pytest.mark.slow
def test_torchvision_vgg16_conv_stack_loads_and_head_is_new(tmp_path):
    tv = torchvision.models.vgg16(weights=None).eval()
    path = tmp_path / "tv_vgg16.pth"
    torch.save(tv.state_dict(), path)
    del tv.classifier  # 100M parameters the test no longer needs
    model = create_backbone("vgg16", 3, weights=path).eval()
    assert isinstance(model.pre_logits, nn.Identity) and model.get_classifier().in_features == 512
    report = weights_report(model, path)
    assert report.new == ("head.fc.weight", "head.fc.bias")
    assert {k.rsplit(".", 2)[0] for k in report.unused} == {"classifier"}  # fc6, fc7, fc8 of the file
    x = _x("vgg16")
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), tv.features(x), rtol=0, atol=0)  # (B, 512, h, w)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.pth.*model\.weights="):
        create_backbone("resnet18", 3, weights=tmp_path / "nope.pth")
    bad = tmp_path / "not_a_state_dict.pth"
    torch.save({"epoch": 1, "note": "hello"}, bad)
    with pytest.raises(ValueError, match="not_a_state_dict.pth.*state dict of tensors"):
        create_backbone("resnet18", 3, weights=bad)
    pickled = tmp_path / "pickled_module.pth"
    torch.save(nn.Linear(2, 2), pickled)  # a whole pickled object: refused by weights_only loading
    with pytest.raises(ValueError, match="pickled_module.pth.*weights-only"):
        create_backbone("resnet18", 3, weights=pickled)
    other = tmp_path / "other_arch.pth"
    torch.save(timm.create_model("resnet56v2", num_classes=3).state_dict(), other)
    with pytest.raises(ValueError, match=r"other_arch.pth: only 0/21 weight tensors of resnet18"):
        create_backbone("resnet18", 3, weights=other)
    bottleneck = tmp_path / "resnet50.pth"  # same key names, other shapes (head dropped: timm loads non-strict)
    torch.save(timm.create_model("resnet50", num_classes=5).state_dict(), bottleneck)
    with pytest.raises(ValueError, match=r"(?s)resnet50.pth: does not fit resnet18.*size mismatch"):
        create_backbone("resnet18", 3, weights=bottleneck)


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No network and empty weight caches, whatever this machine has (HF_HUB_OFFLINE=1, empty Hugging Face hub
    cache, empty TORCH_HOME); returns (hf_hub_cache, torch_home) for a test to fill."""
    import huggingface_hub.constants

    hf, torch_home = tmp_path / "hf_hub", tmp_path / "torch_home"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf))
    return hf, torch_home


def test_check_pretrained_available_is_create_backbones_preflight(offline_hub, tmp_path):
    """The errors create_backbone raises for its weights, raised at once without building anything."""
    from chestx.models.backbones import check_pretrained_available

    assert check_pretrained_available("resnet18") is None  # from scratch: nothing to check
    file = tmp_path / "w.pth"
    torch.save({"x": torch.zeros(1)}, file)  # only its existence is checked here (create_backbone reads it)
    assert check_pretrained_available("resnet18", pretrained=True, weights=file) == str(file)  # a file wins
    with pytest.raises(FileNotFoundError, match=r"nope.pth.*model\.weights="):
        check_pretrained_available("resnet18", weights=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="no_such_net"):
        check_pretrained_available("no_such_net", pretrained=True)
    with pytest.raises(RuntimeError, match=r"no pretrained weights for 'resnet56v2'.*model\.weights="):
        check_pretrained_available("resnet56v2", pretrained=True)
    message = r"cannot be downloaded here \(no network\).*`model\.weights=/path/to/file.pth\|.pt\|.safetensors`"
    for name in ("densenet121", "resnet50", "mobilenetv2", "inceptionv3", "vgg16"):
        started = time.perf_counter()
        with pytest.raises(RuntimeError, match=message):
            check_pretrained_available(name, pretrained=True)
        assert time.perf_counter() - started < 1.0, name
    with pytest.raises(RuntimeError, match=message):  # create_backbone's own message is the same
        create_backbone("resnet18", 3, pretrained=True)


def _hf_cache_file(hf_cache, repo_id: str, filename: str = "model.safetensors"):
    """Where huggingface_hub caches `filename` of `repo_id` (main revision): <cache>/models--org--name/..."""
    commit = "0" * 40
    repo = hf_cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    return repo / "snapshots" / commit / filename


@pytest.mark.parametrize("cache", ["huggingface", "torch_hub"])
def test_pretrained_offline_from_the_weight_caches(cache, offline_hub):
    """pretrained=True with HF_HUB_OFFLINE=1 loads timm's weights from the Hugging Face hub cache (where timm
    downloads them) or the torch hub cache (TORCH_HOME/hub/checkpoints, timm's URL file name); here a
    resnet18 state dict with its 1000-class head, saved by the test at the place timm's pretrained cfg names."""
    from timm.models import get_pretrained_cfg

    from chestx.models.backbones import check_pretrained_available

    hf, torch_home = offline_hub
    cfg = get_pretrained_cfg("resnet18")
    source = timm.create_model("resnet18", num_classes=1000).eval()
    if cache == "huggingface":
        path = _hf_cache_file(hf, cfg.hf_hub_id)
        save_file(source.state_dict(), str(path))
    else:
        path = torch_home / "hub" / "checkpoints" / cfg.url.rsplit("/", 1)[-1]
        path.parent.mkdir(parents=True)
        torch.save(source.state_dict(), path)
    assert check_pretrained_available("resnet18", pretrained=True) == str(path)
    model = create_backbone("resnet18", 3, pretrained=True).eval()
    report = weights_report(model, path)
    assert set(report.new) == {"fc.weight", "fc.bias"} and set(report.unused) == {"fc.weight", "fc.bias"}
    x = _x("resnet18")
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), source.forward_features(x), rtol=0, atol=0)
