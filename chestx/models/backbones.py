"""The backbone table and a factory on top of timm's model registry and timm's own weight loading.

``create_backbone`` returns the timm model itself, so timm's uniform API stays available
(``forward_features``, ``forward_head``, ``get_classifier``, ``reset_classifier``, ``feature_info``,
``pretrained_cfg``); it maps (B, in_chans, H, W) -> (B, num_outputs) logits through
global-average-pooled final features -> dropout -> one linear layer. For the aliased CNNs this is
timm's own head; VGG16 (Simonyan & Zisserman 2015) is changed to the same form: the 512-channel output
of its conv feature stack is average-pooled and fed to a single Linear (timm's 4096-wide ConvMlp
pre-logits block, the fully connected fc6/fc7 of the paper, is removed).

Weights (ImageNet downloads and local files alike) are loaded by timm
(``timm.create_model(pretrained=True, pretrained_cfg_overlay=dict(file=...))``): it reads the file
(``weights_only``), remaps torchvision key names with the model's checkpoint filter, adapts the first
conv to ``in_chans`` (``adapt_input_conv``) and drops a classifier that does not fit. This module only
tells timm what the file holds (its head size and input channels) and checks and logs the result.

Architectures: DenseNet-121 (Huang et al. 2017), ResNet-18/50 (He et al. 2016), MobileNetV2
(Sandler et al. 2018), Inception-v3 (Szegedy et al. 2016), VGG16, and the CIFAR-style pre-activation
ResNet-56 (``resnet56v2``, see ``resnet_v2_cifar.py``). Any other timm model name passes through.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import urlparse

import timm
import torch
import torch.nn as nn
from timm.layers import ClassifierHead
from timm.models import get_pretrained_cfg, is_model, load_state_dict, model_entrypoint, split_model_name_tag

from chestx.models import resnet_v2_cifar  # noqa: F401  (registers "resnet56v2" in timm)

__all__ = [
    "BACKBONES",
    "BACKBONE_SPECS",
    "BackboneSpec",
    "LoadReport",
    "check_pretrained_available",
    "create_backbone",
    "default_input_size",
    "default_mean_std",
    "resolve_model_name",
    "weights_report",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    """One benchmark backbone: its timm model, its Grad-CAM layer and its name in tables."""

    timm_name: str
    target_layer: str  # dotted path of the feature map the head pools (after its activation)
    display_name: str


BACKBONE_SPECS: dict[str, BackboneSpec] = {
    # BN-ReLU after dense block 4, (B, 1024, H/32, W/32)
    "densenet121": BackboneSpec("densenet121", "features.norm5", "DenseNet-121"),
    "resnet18": BackboneSpec("resnet18", "layer4", "ResNet-18"),  # (B, 512, H/32, W/32)
    "resnet50": BackboneSpec("resnet50", "layer4", "ResNet-50"),  # (B, 2048, H/32, W/32)
    # BN-ReLU6 after the 1x1 conv_head, (B, 1280, H/32, W/32)
    "mobilenetv2": BackboneSpec("mobilenetv2_100", "bn2", "MobileNetV2"),
    "inceptionv3": BackboneSpec("inception_v3", "Mixed_7c", "Inception-v3"),  # (B, 2048, ~H/32, ~W/32)
    # ReLU of conv5_3, before the last max-pool (twice the resolution of the pooled map), (B, 512, H/16, W/16)
    "vgg16": BackboneSpec("vgg16", "features.29", "VGG16"),
    "resnet56v2": BackboneSpec("resnet56v2", "norm", "ResNet-56 v2"),  # final BN-ReLU, (B, 64, H/4, W/4)
}
BACKBONES: tuple[str, ...] = tuple(BACKBONE_SPECS)  # the benchmark's aliases, in table order

WEIGHTS_HINT = "model.weights=/path/to/file.pth|.pt|.safetensors"


def resolve_model_name(name: str) -> str:
    """Alias (``BACKBONES``) or any timm model name (optionally ``arch.tag``) -> timm name."""
    timm_name = BACKBONE_SPECS[name].timm_name if name in BACKBONE_SPECS else name
    if is_model(split_model_name_tag(timm_name)[0]):
        return timm_name
    raise ValueError(
        f"unknown model {name!r}: use one of the aliases {list(BACKBONES)} "
        f"or any timm model name (see timm.list_models())"
    )


def _pretrained_cfg(name: str) -> Any:
    """timm's registered pretrained cfg (default tag) of an alias / timm name, without building the model."""
    timm_name = resolve_model_name(name)
    cfg = get_pretrained_cfg(timm_name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained cfg registered for {name!r} (timm {timm_name!r})")
    return cfg


def default_input_size(name: str) -> int:
    """Native image size (px, square) of a backbone: ``input_size`` of its timm pretrained cfg.

    E.g. 224 for densenet121, 299 for inceptionv3. Reads timm's registry only (no model, no network).
    """
    return int(_pretrained_cfg(name).input_size[-1])


def default_mean_std(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (RGB) normalisation mean and std the backbone's timm weights were trained with."""
    cfg = _pretrained_cfg(name)
    return tuple(cfg.mean), tuple(cfg.std)


def _is_vgg(timm_name: str) -> bool:
    return model_entrypoint(split_model_name_tag(timm_name)[0]).__module__.endswith(".vgg")


def _gap_linear_head_for_vgg(model: nn.Module, num_outputs: int, drop_rate: float) -> None:
    """Replace VGG's ConvMlp pre-logits + head by global average pool -> dropout -> Linear(512, K)."""
    model.pre_logits = nn.Identity()
    model.head = ClassifierHead(model.num_features, num_outputs, pool_type="avg", drop_rate=drop_rate)
    model.head_hidden_size = model.num_features
    model.num_classes = num_outputs


def _host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_pretrained_file(cfg: Any) -> Optional[str]:
    """Local copy of timm's pretrained weights in the HF / torch hub caches, if any."""
    if cfg.hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        for filename in filter(None, (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin")):
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    if isinstance(cfg.url, str) and cfg.url:
        local = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if local.is_file():
            return str(local)
    return None


def _pretrained_file(name: str, timm_name: str) -> Optional[str]:
    """Cached copy of timm's ImageNet weights, or None when timm can download them; else a clear error."""
    cfg = get_pretrained_cfg(timm_name)
    if cfg is None or not cfg.has_weights:
        raise RuntimeError(
            f"timm has no pretrained weights for {name!r} (timm {timm_name!r}): train it from scratch "
            f"(model.pretrained=false) or pass a local file with `{WEIGHTS_HINT}`"
        )
    cached = _cached_pretrained_file(cfg)
    if cached is not None:
        log.info("using cached pretrained weights %s", cached)
        return cached
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false", "no")
    if cfg.hf_hub_id:
        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    else:
        host = urlparse(cfg.url if isinstance(cfg.url, str) else "").hostname or ""
    if offline or not host or not _host_reachable(host):
        raise RuntimeError(
            f"cannot get pretrained weights for {name!r} (timm {timm_name!r}): no cached copy and "
            f"{host or 'the weight host'} is unreachable. Weights cannot be downloaded here (no network). "
            f"Download them on a machine with network access (e.g. save timm.create_model({timm_name!r}, "
            f"pretrained=True).state_dict(), or a torchvision / Hugging Face checkpoint) and pass the local "
            f"file with `{WEIGHTS_HINT}` (and model.pretrained=false)."
        )
    return None


def check_pretrained_available(
    name: str, pretrained: bool = False, weights: Optional[Union[str, Path]] = None
) -> Optional[str]:
    """Pre-flight of a backbone config: fail now, with ``create_backbone``'s own errors, when the weights it
    asks for cannot be had, so that a run stops before any long data work.

    Builds nothing, reads no tensor, downloads nothing (no network at all when ``pretrained`` is false or a
    ``weights`` file is given). Returns the local file ``create_backbone`` will load (``weights``, or timm's
    cached ImageNet weights from the Hugging Face / torch hub cache), or None (from scratch, or timm will
    download). Raises ValueError for an unknown model, FileNotFoundError for a ``weights`` path that is not a
    file, RuntimeError when ``pretrained`` weights do not exist for the model or cannot be downloaded here
    (the message says how to pass ``model.weights=<file>``).
    """
    timm_name = resolve_model_name(name)
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path} (pass `{WEIGHTS_HINT}`)")
        return str(path)
    return _pretrained_file(name, timm_name) if pretrained else None


Fingerprint = tuple[tuple[int, ...], bytes]  # (shape, digest of the values)


def _fingerprint(t: torch.Tensor) -> Fingerprint:
    """Shape and a digest of the values (as float32 / int64, so a half-precision file matches its copy)."""
    values = t.detach().cpu().to(torch.float32 if t.is_floating_point() else torch.int64).contiguous()
    return tuple(t.shape), hashlib.blake2b(values.numpy(), digest_size=16).digest()


def _read_weights(path: Path) -> dict[str, Fingerprint]:
    """Key -> fingerprint of every tensor of a weights file, read as timm reads it (``weights_only``)."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (pass `{WEIGHTS_HINT}`)")
    try:
        sd = load_state_dict(str(path))  # timm: safetensors or torch.load(weights_only=True); unwraps containers
    except Exception as e:  # noqa: BLE001  (UnpicklingError, RuntimeError, EOFError, SafetensorError ...)
        raise ValueError(
            f"{path}: cannot be read as a weights-only torch / safetensors state dict ({type(e).__name__}: {e}). "
            f"Re-save it as a plain state dict: torch.save(model.state_dict(), 'file.pth')"
        ) from e
    prints = {k: _fingerprint(v) for k, v in sd.items() if isinstance(v, torch.Tensor)} if isinstance(sd, Mapping) else {}
    if not prints:
        found = list(sd)[:10] if isinstance(sd, Mapping) else type(sd).__name__
        raise ValueError(f"{path}: does not contain a state dict of tensors (found {found})")
    return prints


def _file_overlay(prints: dict[str, Fingerprint], timm_name: str, vgg: bool) -> dict[str, Any]:
    """``pretrained_cfg_overlay`` telling timm where the weights are and what they hold.

    ``num_classes``: the file's head size, so timm keeps a head that fits and drops one that does not
    (0 when the file has no usable head: none found, or VGG, whose head is replaced anyway).
    ``input_size``: the file's first-conv channels, so timm adapts (``adapt_input_conv``) only when they
    differ from ``in_chans``.
    """
    cfg = get_pretrained_cfg(timm_name)
    if cfg is None:  # an architecture without a registered cfg: timm's defaults apply
        return {}
    classifier = (cfg.classifier,) if isinstance(cfg.classifier, str) else tuple(cfg.classifier or ())
    first_conv = (cfg.first_conv,) if isinstance(cfg.first_conv, str) else tuple(cfg.first_conv or ())
    head = prints.get(f"{classifier[0]}.weight") if classifier and not vgg else None
    conv = prints.get(f"{first_conv[0]}.weight") if first_conv else None
    overlay: dict[str, Any] = dict(num_classes=head[0][0] if head else 0)
    if conv is not None and len(conv[0]) == 4:
        overlay["input_size"] = (conv[0][1], *cfg.input_size[1:])
    return overlay


@dataclass(frozen=True)
class LoadReport:
    """What a weights file gave a model, compared by value (so it holds whatever key remap timm applied).

    ``loaded``: model tensors equal to a tensor of the file. ``adapted``: first-conv weights that timm
    converted to the model's input channels. ``new``: model tensors not from the file (e.g. a head that
    did not fit). ``unused``: file tensors found nowhere in the model (e.g. its ImageNet head).
    """

    path: str
    loaded: tuple[str, ...]
    adapted: tuple[str, ...]
    new: tuple[str, ...]
    unused: tuple[str, ...]


def _report(model: nn.Module, prints: dict[str, Fingerprint], path: Union[str, Path]) -> LoadReport:
    model_prints = {k: _fingerprint(v) for k, v in model.state_dict().items()}
    in_file, in_model = set(prints.values()), set(model_prints.values())
    first_conv = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    convs = {f"{c}.weight" for c in ((first_conv,) if isinstance(first_conv, str) else first_conv or ())}
    adapted = tuple(k for k, fp in model_prints.items()
                    if k in convs and fp not in in_file and k in prints and prints[k][0] != fp[0])
    return LoadReport(
        path=str(path),
        loaded=tuple(k for k, fp in model_prints.items() if fp in in_file),
        adapted=adapted,
        new=tuple(k for k, fp in model_prints.items() if fp not in in_file and k not in adapted),
        unused=tuple(k for k, fp in prints.items() if fp not in in_model and k not in adapted),
    )


def weights_report(model: nn.Module, path: Union[str, Path]) -> LoadReport:
    """Which tensors of ``model`` hold the values of the weights file ``path`` (see ``LoadReport``)."""
    return _report(model, _read_weights(Path(path).expanduser()), path)


def _check_loaded(model: nn.Module, report: LoadReport, name: str, min_fraction: float = 0.5) -> None:
    """Raise unless at least ``min_fraction`` of the model's weight tensors (>= 2-D) came from the file; log."""
    state = model.state_dict()
    weights = [k for k, v in state.items() if v.ndim >= 2]
    n_loaded = len(set(weights) & set(report.loaded))
    if n_loaded < min_fraction * len(weights):
        raise ValueError(
            f"{report.path}: only {n_loaded}/{len(weights)} weight tensors of {name} were found in the file "
            f"(e.g. the model's {[k for k in weights if k not in report.loaded][:3]} vs the file's "
            f"{list(report.unused)[:3]}); is it the right architecture, a plain state dict of the bare backbone?"
        )
    log.info("weights %s -> %s: %d/%d tensors loaded; first conv adapted to in_chans: %s; new (not in the "
             "file): %s; unused from the file: %s", report.path, name, len(report.loaded), len(state),
             list(report.adapted), list(report.new)[:10], list(report.unused)[:10])


def create_backbone(
    name: str,
    num_outputs: int,
    in_chans: int = 3,
    pretrained: bool = False,
    weights: Optional[Union[str, Path]] = None,
    drop_rate: float = 0.0,
) -> nn.Module:
    """timm model mapping (B, in_chans, H, W) -> (B, num_outputs) logits.

    ``name``: an alias of ``BACKBONES`` or any timm model name. ``pretrained``: timm's ImageNet weights
    (timm's local cache, else a download; without network a RuntimeError saying how to pass a file).
    ``weights``: a local .pth/.pt/.safetensors state dict (timm or torchvision keys), loaded by timm;
    takes precedence over ``pretrained``. Its head is kept if it fits ``num_outputs`` (never for VGG),
    else replaced. ``drop_rate``: dropout before the linear head.
    """
    timm_name = resolve_model_name(name)
    if weights is not None and pretrained:
        # the usual offline form of an ImageNet recipe (conf/experiment sets pretrained=true): not a mistake
        log.info("both pretrained=True and weights=%s given: loading the file, not downloading", weights)
    elif pretrained:
        weights = _pretrained_file(name, timm_name)  # None: timm downloads
    vgg = _is_vgg(timm_name)
    kwargs: dict[str, Any] = dict(num_classes=num_outputs, in_chans=in_chans)
    if drop_rate:
        kwargs["drop_rate"] = drop_rate
    if vgg and not (pretrained or weights):
        kwargs["mlp_ratio"] = 1 / 4096  # the ConvMlp (~100M params) is discarded below: build it 1 wide
    path = Path(weights).expanduser() if weights is not None else None
    prints = _read_weights(path) if path is not None else None
    if prints is not None:  # timm loads the file: tell it what the file holds
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path), **_file_overlay(prints, timm_name, vgg))
    try:
        model = timm.create_model(timm_name, pretrained=pretrained or prints is not None, **kwargs)
    except RuntimeError as e:
        if prints is None:
            raise
        raise ValueError(f"{path}: does not fit {name} (timm {timm_name}, in_chans={in_chans}): "
                         f"{str(e)[:600]}") from e
    if vgg:
        _gap_linear_head_for_vgg(model, num_outputs, drop_rate)
    if prints is not None:
        _check_loaded(model, _report(model, prints, path), name)
    log.info("created %s (timm %s): %d outputs, in_chans=%d, %.2fM params", name, timm_name, num_outputs,
             in_chans, sum(p.numel() for p in model.parameters()) / 1e6)
    return model
