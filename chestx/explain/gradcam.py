"""Grad-CAM heatmaps for chestx backbones (overlays: ``overlay.py``; pointing game: ``pointing_game.py``).

Grad-CAM: Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization" (ICCV), computed with pytorch-grad-cam (jacobgil/pytorch-grad-cam).

Target layers (``TARGET_LAYERS``, from ``chestx.models.backbones.BACKBONE_SPECS``) are each backbone's
last convolutional feature map, taken after its final activation where the architecture has one: the
layer whose output is global-average-pooled by the head (for VGG16 the last conv block's ReLU, before
the final max-pool, for twice the resolution).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Callable, Optional, Union

import numpy as np
import torch
import torch.nn as nn
from timm.models import is_model, split_model_name_tag

from chestx.models.backbones import BACKBONE_SPECS, resolve_model_name
from chestx.models.losses import MULTICLASS_POS, OutputLayout

__all__ = [
    "TARGET_LAYERS",
    "target_layer",
    "target_layer_name",
    "compute_cams",
]

log = logging.getLogger(__name__)


# alias -> dotted path of the Grad-CAM layer inside the timm model (from the one backbone table)
TARGET_LAYERS: dict[str, str] = {alias: spec.target_layer for alias, spec in BACKBONE_SPECS.items()}
_BY_TIMM_ARCH = {split_model_name_tag(spec.timm_name)[0]: spec.target_layer for spec in BACKBONE_SPECS.values()}


def _find_timm_model(model: nn.Module) -> tuple[str, nn.Module]:
    """(prefix, module) of the first submodule carrying a timm ``pretrained_cfg`` (the model itself if none)."""
    for prefix, module in model.named_modules():
        if getattr(module, "pretrained_cfg", None):
            return prefix, module
    return "", model


def _join(prefix: str, path: str) -> str:
    return f"{prefix}.{path}" if prefix else path


def _has_module(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False


def _default_layer_name(model: nn.Module, prefix: str, inner: nn.Module) -> str:
    """Last timm ``feature_info`` tap, else the last Conv2d of the model."""
    info = getattr(inner, "feature_info", None)
    if isinstance(info, (list, tuple)) and info and isinstance(info[-1], dict) and "module" in info[-1]:
        path = _join(prefix, info[-1]["module"])
        if _has_module(model, path):
            return path
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"no Conv2d in {type(model).__name__}: pass target_layer_name='dotted.module.path'")
    return convs[-1]


def target_layer_name(model: nn.Module, name: Optional[str] = None) -> str:
    """Dotted path of the Grad-CAM layer in ``model``.

    ``name``: an alias / timm architecture of ``TARGET_LAYERS``, an explicit dotted module path,
    or None to infer from the timm model's ``pretrained_cfg['architecture']``. Other architectures get
    their last ``feature_info`` tap (else the last Conv2d) with a warning. Works on wrappers (e.g. a
    LightningModule holding the timm model): paths are then prefixed with the wrapper's attribute.
    """
    own = _own_cam_layer(model)  # transformers / open_clip encoders name their layer (chestx.models.encoders)
    if own is not None and (name is None or not _has_module(model, name)):
        return own
    prefix, inner = _find_timm_model(model)
    if name is not None and not _is_arch(name):
        if _has_module(model, name):
            return name  # explicit dotted module path
        raise ValueError(
            f"{name!r} is neither a backbone ({sorted(TARGET_LAYERS)} or a timm name) "
            f"nor a module path of {type(model).__name__}"
        )
    if name is not None:
        arch = split_model_name_tag(resolve_model_name(name))[0]
    else:
        arch = (getattr(inner, "pretrained_cfg", None) or {}).get("architecture")
    if arch in _BY_TIMM_ARCH and _has_module(model, _join(prefix, _BY_TIMM_ARCH[arch])):
        return _join(prefix, _BY_TIMM_ARCH[arch])
    path = _default_layer_name(model, prefix, inner)
    log.warning("no Grad-CAM target layer listed for %r: using %r (override with target_layer_name=...)",
                arch or type(inner).__name__, path)
    return path


def _own_cam_layer(model: nn.Module) -> Optional[str]:
    """Path of the layer a model (or a module inside it) names in ``cam_target_layer``, else None."""
    for path, module in model.named_modules():
        layer = getattr(module, "cam_target_layer", None)
        if isinstance(layer, str):
            return _join(path, layer)
    return None


def _is_arch(name: str) -> bool:
    return name in BACKBONE_SPECS or is_model(split_model_name_tag(name)[0])


_resolve_layer_name = target_layer_name  # compute_cams' argument shadows the function name


def target_layer(model: nn.Module, name: Optional[str] = None) -> nn.Module:
    """The Grad-CAM target module of ``model`` (see ``target_layer_name``)."""
    return model.get_submodule(target_layer_name(model, name))


def _pairs(class_indices: Union[Sequence, np.ndarray, torch.Tensor], batch: int) -> list[tuple[int, int]]:
    """(image index, class index) pairs: one class per image, or a list of classes per image."""
    if isinstance(class_indices, (torch.Tensor, np.ndarray)):
        class_indices = class_indices.tolist()
    if len(class_indices) != batch:
        raise ValueError(f"class_indices has {len(class_indices)} entries for {batch} images")
    pairs = []
    for i, classes in enumerate(class_indices):
        for c in [classes] if isinstance(classes, (int, np.integer)) else classes:
            pairs.append((i, int(c)))
    return pairs


def _positive_columns(multiclass: Union[bool, Sequence[bool]]) -> "Callable[[int], int]":
    """Output column of class k's positive logit."""
    if isinstance(multiclass, (bool, np.bool_)):
        return (lambda k: 3 * k + MULTICLASS_POS) if multiclass else (lambda k: k)
    return OutputLayout(list(multiclass), len(multiclass)).positive_column


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    class_indices: Union[Sequence[Sequence[int]], Sequence[int], np.ndarray, torch.Tensor],
    target_layer_name: Optional[str] = None,
    multiclass: Union[bool, Sequence[bool]] = False,
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM heatmaps, (N, H, W) float32 in [0, 1], one per (image, class) pair, image-major order.

    images: (B, C, H, W) model inputs. class_indices: (B,) ints (N = B) or a list of class lists per
    image (N = total). ``multiclass``: True (every pathology) or one flag per pathology; a multiclass
    pathology has three U-MultiClass logits (see ``OutputLayout`` in losses.py) and is explained
    through its positive logit. Safe inside the caller's
    ``torch.inference_mode()`` / ``no_grad()``: gradients are enabled locally, parameters are not
    touched (their ``requires_grad``, ``.grad`` and the train/eval mode are restored) and all hooks
    are removed afterwards.
    """
    from pytorch_grad_cam import GradCAM  # imported here: it pulls in pandas, scipy, ttach (slow start-up)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    pairs = _pairs(class_indices, images.shape[0])
    h, w = images.shape[-2:]
    if not pairs:
        return np.zeros((0, h, w), dtype=np.float32)
    column = _positive_columns(multiclass)
    layer_path = _resolve_layer_name(model, target_layer_name)
    layer = model.get_submodule(layer_path)
    params = list(model.parameters())
    device = params[0].device if params else images.device
    was_training = model.training
    saved = [(p, p.requires_grad, p.grad) for p in params]
    out: list[np.ndarray] = []
    try:
        with torch.inference_mode(False), torch.enable_grad():
            for p in params:
                p.requires_grad_(False)  # gradients flow to the input only; weights get no .grad
            cam = GradCAM(model=model, target_layers=[layer])  # puts the model in eval mode
            try:
                for start in range(0, len(pairs), batch_size):
                    chunk = pairs[start:start + batch_size]
                    idx = torch.tensor([i for i, _ in chunk], device=images.device)
                    x = images.index_select(0, idx).detach().clone().to(device)  # (n, C, H, W), normal tensor
                    x.requires_grad_(True)
                    cols = [column(c) for _, c in chunk]
                    out.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in cols]))
            finally:
                cam.activations_and_grads.release()
    finally:
        for p, flag, grad in saved:
            p.requires_grad_(flag)
            p.grad = grad
        model.train(was_training)
    cams = np.clip(np.nan_to_num(np.concatenate(out, axis=0).astype(np.float32), nan=0.0), 0.0, 1.0)  # (N, H, W)
    flat = int((np.ptp(cams.reshape(len(cams), -1), axis=1) == 0).sum())
    if flat:
        log.warning("%d of %d Grad-CAM heatmaps are constant (target layer %s; a 1x1 feature map at this "
                    "input size, or no positive evidence for the class)", flat, len(cams), layer_path)
    return cams
