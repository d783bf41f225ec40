"""Image transforms: uint8 (H, W) X-ray -> float32 tensor (in_chans, size, size).

Resize with `resize_square` (the same function the pixel cache uses, so cached and on-the-fly
pixels agree), then at train time albumentations HorizontalFlip, Affine (scale, rotate; black
fill) and RandomBrightnessContrast; nothing random at eval. Normalisation: `imagenet`
(ImageNet mean/std per channel; one channel uses the mean of the three), `dataset` (mean/std of
the training split from `compute_mean_std`), `per_image` (each image standardised by its own
mean/std) or `none` (0..1). The gray channel is repeated to `in_chans` (1 or 3).

Two places to normalise, with the same result (max abs difference <= 1e-6, tested): in the loader
(`build_transform(normalize=True)`, float32 (C, S, S) per image: inference, Grad-CAM, export) or on
the device (`build_transform(normalize=False)` hands over uint8 (1, S, S), 12x fewer bytes than
float32 x 3 channels; `InputNormalizer` runs after the host->device transfer, in training).
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch import nn

from chestx.data.images.read import resize_square

log = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
NORMALIZATIONS: tuple[str, ...] = ("imagenet", "dataset", "per_image", "none")
EPS = 1e-6


class TransformError(ValueError):
    """A transform option is invalid; the message names the option, the value and the valid choices."""


def _channel_stats(value: float | Sequence[float], in_chans: int, name: str) -> np.ndarray:
    """A scalar or per-channel statistic -> (in_chans,) float32."""
    arr = np.atleast_1d(np.asarray(value, dtype=np.float32))
    if arr.shape == (1,):
        arr = np.repeat(arr, in_chans)
    if arr.shape != (in_chans,):
        raise TransformError(f"{name}={value!r} must be one number or {in_chans} numbers (one per channel)")
    return arr


class XrayTransform:
    """Picklable (for DataLoader workers) callable: uint8 (H, W) -> float32 tensor (C, S, S), or with
    `normalize=False` the resized (augmented) uint8 tensor (1, S, S) for `InputNormalizer` on the device."""

    def __init__(
        self,
        image_size: int,
        augment: A.Compose | None,
        in_chans: int,
        mean: np.ndarray | None,
        std: np.ndarray | None,
        per_image: bool,
        normalize: bool = True,
    ) -> None:
        self.image_size = image_size
        self.augment = augment
        self.in_chans = in_chans
        self.mean = mean  # (C,) or None
        self.std = std  # (C,) or None
        self.per_image = per_image
        self.normalize = normalize

    def reseed(self, seed: int) -> None:
        """Restart the augmentation's random stream (albumentations keeps its own, ignoring numpy's)."""
        if self.augment is not None:
            self.augment.set_random_seed(seed)

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim != 2 or img.dtype != np.uint8:
            raise TransformError(f"transform expects a (H, W) uint8 image, got shape {img.shape} dtype {img.dtype}")
        img = resize_square(img, self.image_size)  # (S, S) uint8
        if self.augment is not None:
            img = self.augment(image=img)["image"]
        if not self.normalize:
            return torch.from_numpy(np.ascontiguousarray(img)[None])  # (1, S, S) uint8
        x = img.astype(np.float32) * (1.0 / 255.0)  # (S, S) in 0..1
        if self.per_image:
            x = (x - x.mean()) / max(float(x.std()), EPS)
        x = np.repeat(x[None], self.in_chans, axis=0)  # (C, S, S)
        if self.mean is not None:
            x = (x - self.mean[:, None, None]) / self.std[:, None, None]
        return torch.from_numpy(x.astype(np.float32, copy=False))

    def __repr__(self) -> str:
        norm = "per_image" if self.per_image else (None if self.mean is None else self.mean.tolist())
        return (f"XrayTransform(size={self.image_size}, in_chans={self.in_chans}, norm={norm}, "
                f"augment={self.augment is not None}, normalize={self.normalize})")


class InputNormalizer(nn.Module):
    """uint8 (B, 1, S, S) pixels -> float32 (B, C, S, S) model input, on whatever device they are on.

    The same arithmetic as `XrayTransform` with `normalize=True` (0..1 scale, per-image
    standardisation, gray repeated to C channels, per-channel mean/std); the statistics are
    non-persistent buffers, so checkpoints keep their keys and old ones still load.
    """

    def __init__(self, in_chans: int, mean: np.ndarray | None, std: np.ndarray | None, per_image: bool) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.per_image = per_image
        self.register_buffer("mean", None if mean is None else torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)  # (1, C, 1, 1)
        self.register_buffer("std", None if std is None else torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)  # (1, C, 1, 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != 1:
            raise TransformError(f"InputNormalizer expects (B, 1, S, S) pixels, got shape {tuple(pixels.shape)}")
        x = pixels.float() * (1.0 / 255.0)  # (B, 1, S, S) in 0..1
        if self.per_image:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
            std = x.std(dim=(1, 2, 3), keepdim=True, correction=0).clamp_min(EPS)
            x = (x - mean) / std
        x = x.expand(-1, self.in_chans, -1, -1)  # (B, C, S, S), a view until the next op
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x.contiguous()

    def extra_repr(self) -> str:
        norm = "per_image" if self.per_image else (None if self.mean is None else self.mean.flatten().tolist())
        return f"in_chans={self.in_chans}, norm={norm}"


def _normalisation_stats(
    normalization: str, in_chans: int, mean: float | Sequence[float] | None, std: float | Sequence[float] | None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-channel (C,) mean and std of a normalisation choice (None, None: none / per_image)."""
    if normalization not in NORMALIZATIONS:
        raise TransformError(f"normalization={normalization!r} is not one of {list(NORMALIZATIONS)}")
    if in_chans not in (1, 3):
        raise TransformError(f"in_chans={in_chans} must be 1 (gray) or 3 (gray repeated, for ImageNet-style stems)")
    if normalization == "imagenet":
        if mean is not None or std is not None:
            log.warning("normalization='imagenet' ignores the mean/std passed in (%s, %s)", mean, std)
        return (np.asarray(IMAGENET_MEAN if in_chans == 3 else [np.mean(IMAGENET_MEAN)], dtype=np.float32),
                np.asarray(IMAGENET_STD if in_chans == 3 else [np.mean(IMAGENET_STD)], dtype=np.float32))
    if normalization == "dataset":
        if mean is None or std is None:
            raise TransformError(
                "normalization='dataset' needs mean and std of the training split (compute_mean_std); got "
                f"mean={mean}, std={std}"
            )
        mean_c, std_c = _channel_stats(mean, in_chans, "mean"), _channel_stats(std, in_chans, "std")
        if (std_c <= 0).any():
            raise TransformError(f"std={std!r} must be positive")
        return mean_c, std_c
    return None, None


def build_input_normalizer(
    in_chans: int = 3, normalization: str = "imagenet",
    mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
) -> InputNormalizer:
    """The device-side half of `build_transform(normalize=False)`: uint8 (B, 1, S, S) -> float32 (B, C, S, S)."""
    mean_c, std_c = _normalisation_stats(normalization, in_chans, mean, std)
    return InputNormalizer(in_chans, mean_c, std_c, per_image=normalization == "per_image")


def build_transform(
    image_size: int,
    train: bool,
    in_chans: int = 3,
    normalization: str = "imagenet",
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    hflip: float = 0.5,
    scale: Sequence[float] = (0.9, 1.1),
    rotate: float = 10.0,
    brightness: float = 0.1,
    contrast: float = 0.1,
    seed: int | None = None,
    normalize: bool = True,
) -> XrayTransform:
    """Transform uint8 (H, W) -> float32 tensor (in_chans, image_size, image_size); augments only if `train`.

    `seed` fixes the augmentation's random stream; None draws a fresh one (not reproducible).
    `normalize=False` stops before normalisation: uint8 (1, image_size, image_size), for
    `build_input_normalizer` with the same options on the device.
    """
    mean_c, std_c = _normalisation_stats(normalization, in_chans, mean, std)
    if int(image_size) < 1:
        raise TransformError(f"image_size={image_size} must be a positive number of pixels")
    if not 0.0 <= hflip <= 1.0:
        raise TransformError(f"hflip={hflip} is a probability and must be in [0, 1]")

    augment = None
    if train:
        ops: list[A.BasicTransform] = []
        if hflip > 0:
            ops.append(A.HorizontalFlip(p=hflip))
        lo, hi = (float(s) for s in scale)
        if (lo, hi) != (1.0, 1.0) or rotate:
            ops.append(A.Affine(scale=(lo, hi), rotate=(-float(rotate), float(rotate)),
                                border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0))
        if brightness or contrast:
            ops.append(A.RandomBrightnessContrast(brightness_limit=brightness, contrast_limit=contrast, p=1.0))
        augment = A.Compose(ops, seed=seed) if ops else None
    return XrayTransform(int(image_size), augment, in_chans, mean_c, std_c, per_image=normalization == "per_image",
                         normalize=normalize)


def compute_mean_std(images: Iterable[np.ndarray]) -> tuple[float, float]:
    """Pixel mean and std on the 0..1 scale over uint8 images (exact, from a running 256-bin histogram)."""
    hist = np.zeros(256, dtype=np.int64)  # (256,) pixel counts
    for img in images:
        if img.dtype != np.uint8:
            raise TransformError(f"compute_mean_std expects uint8 images, got {img.dtype} with shape {img.shape}")
        hist += np.bincount(img.ravel(), minlength=256)
    total = int(hist.sum())
    if total == 0:
        raise TransformError("compute_mean_std got no pixels: pass at least one training image")
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean = float((hist * levels).sum() / total)
    var = float((hist * (levels - mean) ** 2).sum() / total)
    return mean, float(np.sqrt(var))
