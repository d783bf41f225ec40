"""What a run costs: parameters, MACs, images/s for training and inference, peak memory.

`CostMonitor` is a Lightning callback; its `summary()` goes into `metrics.json` so the report can
put cost columns beside the AUROC of every run.
"""
from __future__ import annotations

import logging
import resource
import sys
import time
from typing import Any

import lightning.pytorch as L
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger(__name__)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, in_chans: int, image_size: int) -> int:
    """Multiply-accumulates of one forward pass on one image (FLOPs / 2, PyTorch's flop counter)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_chans, image_size, image_size, device=device))
        return int(counter.get_total_flops() // 2)
    finally:
        model.train(was_training)


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak GPU memory allocated on CUDA, else the process's peak resident set size."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class CostMonitor(L.Callback):
    """Times training and test batches (the first `warmup` batches of each epoch are not counted)."""

    def __init__(self, warmup: int = 1) -> None:
        self.warmup = warmup
        self.train_images = 0
        self.train_seconds = 0.0
        self.test_images = 0
        self.test_seconds = 0.0
        self.fit_started = 0.0
        self.fit_seconds = 0.0
        self._t0 = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_started = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_seconds = time.perf_counter() - self.fit_started

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[override]
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[override]
        self._sync(pl_module)
        if batch_idx >= self.warmup:
            self.train_seconds += time.perf_counter() - self._t0
            self.train_images += len(batch["image"])

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # type: ignore[override]
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # type: ignore[override]
        self._sync(pl_module)
        if batch_idx >= self.warmup:
            self.test_seconds += time.perf_counter() - self._t0
            self.test_images += len(batch["image"])

    def summary(self, pl_module: L.LightningModule) -> dict[str, Any]:
        return {
            "train_images_per_s": self.train_images / self.train_seconds if self.train_seconds else None,
            "infer_images_per_s": self.test_images / self.test_seconds if self.test_seconds else None,
            "fit_seconds": self.fit_seconds,
            "peak_memory_mb": peak_memory_mb(pl_module.device),
        }
