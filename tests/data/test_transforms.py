"""Transforms on a real 256 px NIH image from the embedded sample."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from chestx.data.images.read import load_grayscale
from chestx.data.loading.transforms import (
    IMAGENET_MEAN, IMAGENET_STD, NORMALIZATIONS, TransformError, build_input_normalizer, build_transform, compute_mean_std,
)

NO_RANDOM = dict(scale=(1.0, 1.0), rotate=0.0, brightness=0.0, contrast=0.0)


@pytest.fixture(scope="module")
def image(sample_root: Path) -> np.ndarray:
    return load_grayscale(sample_root / "images" / "00000100_000.png")  # (256, 256) uint8


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("train", [False, True])
def test_shape_dtype(image: np.ndarray, in_chans: int, train: bool) -> None:
    x = build_transform(128, train=train, in_chans=in_chans)(image)
    assert x.shape == (in_chans, 128, 128) and x.dtype == torch.float32 and torch.isfinite(x).all()
    if in_chans == 3:
        assert not torch.equal(x[0], x[2])  # per-channel ImageNet statistics


def test_eval_deterministic_and_imagenet_values(image: np.ndarray) -> None:
    t = build_transform(256, train=False, in_chans=1)
    a, b = t(image), t(image)
    assert torch.equal(a, b)
    expected = (image / 255.0 - np.mean(IMAGENET_MEAN)) / np.mean(IMAGENET_STD)
    np.testing.assert_allclose(a[0].numpy(), expected, atol=1e-5)
    x3 = build_transform(256, train=False, in_chans=3)(image)
    np.testing.assert_allclose(x3[1].numpy(), (image / 255.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1], atol=1e-5)


def test_train_flip_and_randomness(image: np.ndarray) -> None:
    flip = build_transform(256, train=True, in_chans=1, normalization="none", hflip=1.0, **NO_RANDOM)
    np.testing.assert_allclose(flip(image)[0].numpy(), image[:, ::-1] / 255.0, atol=1e-6)
    t = build_transform(256, train=True, in_chans=1)
    assert not torch.equal(t(image), t(image))


def test_per_image_and_dataset_normalisation(image: np.ndarray) -> None:
    x = build_transform(224, train=False, in_chans=3, normalization="per_image")(image)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std(unbiased=False).item() - 1.0) < 1e-3
    mean, std = compute_mean_std([image, image[::2]])
    both = np.concatenate([image.ravel(), image[::2].ravel()]) / 255.0
    assert mean == pytest.approx(both.mean()) and std == pytest.approx(both.std())
    x = build_transform(256, train=False, in_chans=3, normalization="dataset", mean=(image.mean() / 255,) * 3,
                        std=image.std() / 255)(image)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1.0) < 1e-2


def test_bad_options(image: np.ndarray) -> None:
    with pytest.raises(TransformError, match=r"'zscore'.*\['imagenet', 'dataset', 'per_image', 'none'\]"):
        build_transform(224, train=False, normalization="zscore")
    with pytest.raises(TransformError, match="compute_mean_std"):
        build_transform(224, train=False, normalization="dataset")
    with pytest.raises(TransformError, match="in_chans=2"):
        build_transform(224, train=False, in_chans=2)
    with pytest.raises(TransformError, match="uint8"):
        build_transform(64, train=False)(image.astype(np.float32))
    with pytest.raises(TransformError, match="no pixels"):
        compute_mean_std([])


def test_picklable_for_workers(image: np.ndarray) -> None:
    t = build_transform(64, train=True, in_chans=3)
    assert pickle.loads(pickle.dumps(t))(image).shape == (3, 64, 64)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("train", [False, True])
def test_device_normalisation_equals_loader_normalisation(sample_root: Path, normalization: str, in_chans: int,
                                                          train: bool) -> None:
    """uint8 (1, S, S) from the loader + InputNormalizer on a batch == the float path, per image (<= 1e-6)."""
    images = [load_grayscale(p) for p in sorted((sample_root / "images").glob("*.png"))[:8]]  # real NIH images
    stats = dict(mean=0.5, std=0.25) if normalization == "dataset" else {}
    on_cpu = build_transform(96, train=train, in_chans=in_chans, normalization=normalization, seed=3, **stats)
    pixels = build_transform(96, train=train, in_chans=in_chans, normalization=normalization, seed=3,
                             normalize=False, **stats)
    expected = torch.stack([on_cpu(img) for img in images])  # (B, C, 96, 96) float32, augmented identically
    batch = torch.stack([pixels(img) for img in images])  # (B, 1, 96, 96) uint8
    assert batch.dtype == torch.uint8 and batch.shape == (8, 1, 96, 96)
    assert batch.element_size() * batch.numel() * 12 == expected.element_size() * expected.numel() * (3 // in_chans)
    got = build_input_normalizer(in_chans, normalization, **stats)(batch)
    assert got.shape == expected.shape and got.dtype == torch.float32 and got.is_contiguous()
    assert (got - expected).abs().max().item() <= 1e-6


def test_input_normalizer_rejects_rgb_batches() -> None:
    with pytest.raises(TransformError, match=r"\(B, 1, S, S\)"):
        build_input_normalizer(3)(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


def test_input_normalizer_has_no_state_dict_entries() -> None:
    """Checkpoints keep the same keys (old ones load; the statistics live in checkpoint_info)."""
    assert build_input_normalizer(3, "imagenet").state_dict() == {}
