"""Torch dataset over a list of image files and their label matrix.

Each item is a dict: `image` (C, H, W) float32 (or (1, H, W) uint8 when the transform leaves
normalisation to the device), `target` (K,) float32 training target under the
chosen label policy, `eval_target` (K,) float32 1/0/NaN ground truth for metrics, `uncertain`
(K,) bool, and `index` () int64 (the row in the split, used to de-duplicate DDP padding).

Keys are row numbers, or `(row, epoch)` from `EpochSampler` in training: the augmentation of that
row in that epoch is then seeded from (seed, epoch, row), the same in any worker and after a resume.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from chestx.data.images.read import FIND_ALL_UNDECODABLE, ImageReadError, load_grayscale
from chestx.data.loading.sampling import item_seed


class PixelSource(Protocol):
    """Anything that returns the uint8 (H, W) pixels of row `i` (a file decoder or a cache)."""

    def __call__(self, i: int) -> np.ndarray: ...


class FileSource:
    """Decode row `i` from its image file (`dicom_window`: data.dicom_window, how DICOM becomes uint8)."""

    def __init__(self, paths: list[Path], dicom_window: str = "voi") -> None:
        self.paths = [str(p) for p in paths]
        self.dicom_window = dicom_window

    def __call__(self, i: int) -> np.ndarray:
        try:
            return load_grayscale(self.paths[i], dicom_window=self.dicom_window)  # (H, W) uint8
        except ImageReadError as err:
            raise ImageReadError(f"{err}. {FIND_ALL_UNDECODABLE}") from err


class XrayDataset(Dataset):
    """Images + float32 labels (1/0/NaN) for one split."""

    def __init__(
        self,
        pixels: PixelSource,
        targets: np.ndarray,
        eval_targets: np.ndarray,
        uncertain: np.ndarray,
        transform: Callable[[np.ndarray], torch.Tensor],
        seed: int = 0,
    ) -> None:
        assert len(targets) == len(eval_targets) == len(uncertain), (len(targets), len(eval_targets), len(uncertain))
        self.pixels = pixels
        self.targets = torch.as_tensor(targets, dtype=torch.float32)  # (N, K)
        self.eval_targets = torch.as_tensor(eval_targets, dtype=torch.float32)  # (N, K)
        self.uncertain = torch.as_tensor(uncertain, dtype=torch.bool)  # (N, K)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        if isinstance(key, tuple):  # (row, epoch): this row's augmentation in this epoch
            i, epoch = key
            self.transform.reseed(item_seed(self.seed, epoch, i))
        else:
            i = key
        image = self.transform(self.pixels(i))  # (C, H, W) float32, or (1, H, W) uint8
        return {
            "image": image,
            "target": self.targets[i],
            "eval_target": self.eval_targets[i],
            "uncertain": self.uncertain[i],
            "index": torch.tensor(i, dtype=torch.int64),
        }
