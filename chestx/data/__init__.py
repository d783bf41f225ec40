"""Data layer: label files -> LabelTable (labels, datasets/), patient splits, images (images, dicom), cache, loaders.

`transforms` (torch + albumentations, slow to import) is loaded on first use of its names.
"""
from __future__ import annotations

from typing import Any

from chestx.data.datasets.chexpert import UNCERTAINTY_POLICIES, read_chexpert
from chestx.data.images import ImageReadError, load_grayscale, resize_square
from chestx.data.labels import (
    CHEXPERT_COMPETITION_TASKS,
    CHEXPERT_PATHOLOGIES,
    NIH_PATHOLOGIES,
    NO_FINDING,
    DataError,
    LabelTable,
)
from chestx.data.datasets.nih import find_nih_images, read_nih
from chestx.data.splits import (
    SPLITS,
    SplitError,
    check_patient_disjoint,
    kfold_split,
    list_split,
    load_split,
    official_split,
    random_split,
    save_split,
)

_LAZY = ("build_transform", "compute_mean_std", "IMAGENET_MEAN", "IMAGENET_STD", "NORMALIZATIONS", "TransformError")

__all__ = [
    "CHEXPERT_COMPETITION_TASKS", "CHEXPERT_PATHOLOGIES", "NIH_PATHOLOGIES", "NO_FINDING", "SPLITS",
    "UNCERTAINTY_POLICIES", "DataError", "ImageReadError", "LabelTable", "SplitError",
    "check_patient_disjoint", "find_nih_images", "kfold_split", "list_split", "load_grayscale", "load_split",
    "official_split", "random_split", "read_chexpert", "read_nih", "resize_square", "save_split", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from chestx.data import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'chestx.data' has no attribute {name!r}")
