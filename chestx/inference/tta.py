"""Test-time augmentation of a classifier's scores: `tta=none | hflip | tencrop`.

- `hflip`: the image and its left-right mirror; the mean of the two probabilities.
- `tencrop`: as arnoweng/CheXNet's test loop: resize to `tta_input_size` (256 for a 224 model: the same 256/224
  ratio at any size), torchvision's `TenCrop` to the trained size (4 corners + centre, and their mirrors), all
  crops through the network as ONE batch of B x 10, then the mean of the crops' probabilities per image.

Probabilities, not logits, are averaged (CheXNet: `output.view(bs, n_crops, -1).mean(1)` after the sigmoid).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch is imported when views are cut, so the entry points check `tta=` without it
    import torch

TTA_MODES = ("none", "hflip", "tencrop")
TENCROP_RATIO = 256 / 224  # CheXNet: transforms.Resize(256), transforms.TenCrop(224)


def check_tta(mode: str) -> str:
    """The mode, checked; the error names the key and the choices."""
    if mode not in TTA_MODES:
        raise ValueError(f"tta={mode!r}: choose one of {', '.join(TTA_MODES)} (tencrop: CheXNet's ten crops)")
    return mode


def tta_input_size(image_size: int, mode: str) -> int:
    """Side the image is resized to before the views are cut: larger than the model's input for ten-crop."""
    return round(image_size * TENCROP_RATIO) if check_tta(mode) == "tencrop" else int(image_size)


def n_views(mode: str) -> int:
    """Forward passes per image: 1, 2 or 10."""
    return {"none": 1, "hflip": 2, "tencrop": 10}[check_tta(mode)]


def tta_views(x: "torch.Tensor", mode: str, crop: int) -> "torch.Tensor":
    """(B, C, R, R) -> (B, V, C, crop, crop): the views of each image (R = crop except for ten-crop)."""
    import torch
    from torchvision.transforms import functional as TF

    check_tta(mode)
    if mode == "none":
        return x[:, None]
    if mode == "hflip":
        return torch.stack([x, torch.flip(x, dims=[-1])], dim=1)
    return torch.stack(TF.ten_crop(x, [crop, crop]), dim=1)  # torchvision's order: corners, centre, then mirrored


def tta_probabilities(x: "torch.Tensor", mode: str, crop: int,
                      probabilities: Callable[["torch.Tensor"], "torch.Tensor"]) -> "torch.Tensor":
    """(B, C, R, R) -> (B, K): mean over views of `probabilities((B*V, C, crop, crop)) -> (B*V, K)`, one batch."""
    views = tta_views(x, mode, crop)  # (B, V, C, S, S)
    b_dim, v_dim = views.shape[:2]
    probs = probabilities(views.reshape(b_dim * v_dim, *views.shape[2:]))  # (B*V, K)
    return probs.reshape(b_dim, v_dim, -1).mean(dim=1)  # (B, K)
