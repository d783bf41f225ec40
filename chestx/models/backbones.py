"""Backbone factory on top of timm's model registry, plus a tolerant local weight-file loader.

``create_backbone`` returns the timm model itself, so timm's uniform API stays available
(``forward_features``, ``forward_head``, ``get_classifier``, ``reset_classifier``, ``feature_info``,
``pretrained_cfg``); it maps (B, in_chans, H, W) -> (B, num_outputs) logits through
global-average-pooled final features -> dropout -> one linear layer. For the aliased CNNs this is
timm's own head; VGG16 (Simonyan & Zisserman 2015) is changed to the same form: the 512-channel output
of its conv feature stack is average-pooled and fed to a single Linear (timm's 4096-wide ConvMlp
pre-logits block, the fully connected fc6/fc7 of the paper, is removed).

Architectures: DenseNet-121 (Huang et al. 2017), ResNet-18/50 (He et al. 2016), MobileNetV2
(Sandler et al. 2018), Inception-v3 (Szegedy et al. 2016), VGG16, and the CIFAR-style pre-activation
ResNet-56 (``resnet56v2``, see ``resnet_v2_cifar.py``). Any other timm model name passes through.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union
from urllib.parse import urlparse

import timm
import torch
import torch.nn as nn
from timm.layers import ClassifierHead
from timm.models import adapt_input_conv, clean_state_dict, get_pretrained_cfg, is_model, model_entrypoint
from timm.models import split_model_name_tag

from chestx.models import resnet_v2_cifar  # noqa: F401  (registers "resnet56v2" in timm)

__all__ = ["MODEL_ALIASES", "LoadReport", "create_backbone", "load_weights_file", "resolve_model_name"]

log = logging.getLogger(__name__)

MODEL_ALIASES: dict[str, str] = {
    "densenet121": "densenet121",
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "mobilenetv2": "mobilenetv2_100",
    "inceptionv3": "inception_v3",
    "vgg16": "vgg16",
    "resnet56v2": "resnet56v2",
}

WEIGHTS_HINT = "model.weights=/path/to/file.pth|.pt|.safetensors"
# containers that wrap a state dict in common checkpoint formats (Lightning, timm train, torchvision refs)
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params")
# per-architecture checkpoint filters in timm's model files (torchvision -> timm key remaps etc.)
_FILTER_FN_NAMES = ("_filter_torchvision_pretrained", "checkpoint_filter_fn", "_filter_fn", "filter_fn")


def resolve_model_name(name: str) -> str:
    """Alias (``MODEL_ALIASES``) or any timm model name (optionally ``arch.tag``) -> timm name."""
    timm_name = MODEL_ALIASES.get(name, name)
    if is_model(split_model_name_tag(timm_name)[0]):
        return timm_name
    raise ValueError(
        f"unknown model {name!r}: use one of the aliases {sorted(MODEL_ALIASES)} "
        f"or any timm model name (see timm.list_models())"
    )


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


def _pretrained_error(name: str, timm_name: str, reason: str) -> RuntimeError:
    return RuntimeError(
        f"cannot get pretrained weights for {name!r} (timm {timm_name!r}): {reason}. Weights cannot be "
        f"downloaded here (no network). Download them on a machine with network access (e.g. save "
        f"timm.create_model({timm_name!r}, pretrained=True).state_dict(), or a torchvision / Hugging Face "
        f"checkpoint) and pass the local file with `{WEIGHTS_HINT}` (and model.pretrained=false)."
    )


def _create_pretrained(name: str, timm_name: str, **kwargs: Any) -> nn.Module:
    """timm model with pretrained weights: local cache, else timm's download, else a clear error."""
    cfg = get_pretrained_cfg(timm_name)
    if cfg is None or not cfg.has_weights:
        raise RuntimeError(
            f"timm has no pretrained weights for {name!r} (timm {timm_name!r}): train it from scratch "
            f"(model.pretrained=false) or pass a local file with `{WEIGHTS_HINT}`"
        )
    cached = _cached_pretrained_file(cfg)
    if cached is not None:
        log.info("using cached pretrained weights %s", cached)
        model = timm.create_model(timm_name, pretrained=False, **kwargs)
        load_weights_file(model, cached)
        return model
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false", "no")
    if cfg.hf_hub_id:
        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    else:
        host = urlparse(cfg.url if isinstance(cfg.url, str) else "").hostname or ""
    if offline or not host or not _host_reachable(host):
        raise _pretrained_error(name, timm_name, f"no cached copy and {host or 'the weight host'} is unreachable")
    try:
        return timm.create_model(timm_name, pretrained=True, **kwargs)
    except Exception as e:  # noqa: BLE001  (network / hub errors of many types)
        raise _pretrained_error(name, timm_name, f"download failed ({type(e).__name__}: {e})") from e


def create_backbone(
    name: str,
    num_outputs: int,
    in_chans: int = 3,
    pretrained: bool = False,
    weights: Optional[Union[str, Path]] = None,
    drop_rate: float = 0.0,
) -> nn.Module:
    """timm model mapping (B, in_chans, H, W) -> (B, num_outputs) logits.

    ``name``: an alias of ``MODEL_ALIASES`` or any timm model name. ``pretrained``: timm's ImageNet
    weights (download, or timm's local cache). ``weights``: a local .pth/.pt/.safetensors file loaded
    with ``load_weights_file`` (takes precedence over ``pretrained``). ``drop_rate``: dropout before
    the linear head.
    """
    timm_name = resolve_model_name(name)
    if weights is not None and pretrained:
        log.warning("both pretrained=True and weights=%s given: loading the file, not downloading", weights)
        pretrained = False
    kwargs: dict[str, Any] = dict(num_classes=num_outputs, in_chans=in_chans)
    if drop_rate:
        kwargs["drop_rate"] = drop_rate
    vgg = _is_vgg(timm_name)
    if vgg and not pretrained:
        # the ConvMlp (~100M params) is discarded below; build it 1 channel wide instead of 4096
        kwargs["mlp_ratio"] = 1 / 4096
    if pretrained:
        model = _create_pretrained(name, timm_name, **kwargs)
    else:
        model = timm.create_model(timm_name, pretrained=False, **kwargs)
    if vgg:
        _gap_linear_head_for_vgg(model, num_outputs, drop_rate)
    if weights is not None:
        load_weights_file(model, weights)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("created %s (timm %s): %d outputs, in_chans=%d, %.2fM params", name, timm_name, num_outputs,
             in_chans, n_params / 1e6)
    return model


@dataclass
class LoadReport:
    """What ``load_weights_file`` did: key lists of the model's state dict."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reinitialised_head: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)


def _read_file(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (UnpicklingError, RuntimeError, EOFError ...)
        raise ValueError(
            f"{path}: cannot be read as a weights-only torch checkpoint ({type(e).__name__}: {e}). "
            f"Re-save it as a plain state dict: torch.save(model.state_dict(), 'file.pth')"
        ) from e


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside common checkpoint containers (Lightning, timm, torchvision refs)."""
    for _ in range(5):
        if not isinstance(obj, Mapping):
            break
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            return tensors
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            if tensors:
                return tensors
            break
        obj = inner
    found = list(obj.keys())[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(f"{path}: does not contain a state dict of tensors (found {found})")


def _strip_wrapper_prefix(sd: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Drop the most common prefix (``model.``, ``backbone.`` of a LightningModule, ...) before model keys."""
    counts: Counter[str] = Counter()
    for key in sd:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in model_keys:
                counts[".".join(parts[:i])] += 1
                break
    if not counts:
        return sd
    prefix, n = counts.most_common(1)[0]
    if not prefix or n <= counts.get("", 0):
        return sd
    log.info("stripping prefix %r from %d checkpoint keys", prefix + ".", n)
    return {k[len(prefix) + 1:]: v for k, v in sd.items() if k.startswith(prefix + ".")}


def _filter_fns(model: nn.Module) -> list[Callable]:
    mod = sys.modules.get(type(model).__module__)
    return [getattr(mod, n) for n in _FILTER_FN_NAMES if callable(getattr(mod, n, None))]


def _apply_filter(fn: Callable, sd: dict[str, torch.Tensor], model: nn.Module) -> Optional[dict]:
    for args in ((dict(sd), model), (dict(sd),)):
        try:
            out = fn(*args)
        except TypeError:
            continue
        except Exception as e:  # noqa: BLE001  (a filter for another checkpoint format)
            log.debug("checkpoint filter %s failed: %s", getattr(fn, "__name__", fn), e)
            return None
        return out if isinstance(out, dict) else None
    return None


def _as_tuple(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def load_weights_file(model: nn.Module, path: Union[str, Path], min_fraction: float = 0.5) -> LoadReport:
    """Load a timm / torchvision / Lightning state dict file into ``model`` (non-strict, tolerant).

    Reads ``.safetensors`` or ``torch.load(weights_only=True)`` files; unwraps ``state_dict`` /
    ``model`` containers, ``module.`` (DDP) / ``_orig_mod.`` (compile) prefixes and a Lightning
    ``model.`` / ``backbone.`` prefix; remaps torchvision keys with the model file's timm checkpoint
    filter; adapts the first conv to the model's input channels (``adapt_input_conv``); drops
    classifier tensors of a different shape (the head stays freshly initialised). Raises
    ``FileNotFoundError`` / ``ValueError`` naming the file if it is missing, not a state dict, or fewer
    than ``min_fraction`` of the model's non-head tensors match.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    sd = clean_state_dict(_unwrap_state_dict(_read_file(path), path))
    model_sd = model.state_dict()
    model_keys = set(model_sd)
    sd = _strip_wrapper_prefix(sd, model_keys)

    # torchvision -> timm remap: keep whichever variant names the most model tensors
    best, best_n = sd, len(model_keys & set(sd))
    for fn in _filter_fns(model):
        candidate = _apply_filter(fn, sd, model)
        if candidate is not None and len(model_keys & set(candidate)) > best_n:
            best, best_n = candidate, len(model_keys & set(candidate))
            log.info("remapped checkpoint keys with timm's %s", fn.__name__)
    sd = dict(best)

    cfg = getattr(model, "pretrained_cfg", None) or {}
    for conv in _as_tuple(cfg.get("first_conv")):
        key = f"{conv}.weight"
        if key in sd and key in model_sd and sd[key].ndim == 4 and sd[key].shape != model_sd[key].shape:
            src, dst = sd[key].shape[1], model_sd[key].shape[1]
            try:
                sd[key] = adapt_input_conv(dst, sd[key], base_chans=src)
                log.info("adapted first conv %s from %d to %d input channels", key, src, dst)
            except (NotImplementedError, ValueError, AssertionError) as e:
                log.warning("cannot adapt first conv %s from %d to %d channels: %s", key, src, dst, e)

    heads = tuple(h + "." for h in _as_tuple(cfg.get("classifier")))
    report = LoadReport()
    for key, value in list(sd.items()):
        if key in model_sd and value.shape != model_sd[key].shape:
            (report.reinitialised_head if key.startswith(heads) else report.shape_mismatch).append(key)
            del sd[key]
    report.loaded = [k for k in model_sd if k in sd]
    body = [k for k in model_sd if not k.startswith(heads)]
    n_body = sum(1 for k in body if k in sd)
    if not body or n_body < min_fraction * len(body):
        examples = [k for k in body if k not in sd][:5]
        raise ValueError(
            f"{path}: only {n_body}/{len(body)} backbone tensors match {type(model).__name__} "
            f"(e.g. missing {examples}; file keys start with {list(sd)[:5]}); is it the right architecture?"
        )
    result = model.load_state_dict(sd, strict=False)
    report.missing, report.unexpected = list(result.missing_keys), list(result.unexpected_keys)
    log.info(
        "loaded %d/%d tensors from %s; missing %d %s; unexpected %d %s",
        len(report.loaded), len(model_sd), path, len(report.missing), report.missing[:5],
        len(report.unexpected), report.unexpected[:5],
    )
    if report.reinitialised_head:
        log.info("classifier head re-initialised (shape differs): %s", report.reinitialised_head)
    if report.shape_mismatch:
        log.warning("skipped %d tensors with a different shape: %s", len(report.shape_mismatch),
                    report.shape_mismatch[:10])
    return report
