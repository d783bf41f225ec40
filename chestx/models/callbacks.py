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
from lightning.fabric.utilities.throughput import measure_flops
import torch
from torch import nn

log = logging.getLogger(__name__)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, in_chans: int, image_size: int) -> int:
    """Multiply-accumulates of one forward pass on one image (FLOPs / 2, Lightning's `measure_flops`)."""
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, in_chans, image_size, image_size, device=next(model.parameters()).device)
        with torch.no_grad():
            return int(measure_flops(model, lambda: model(x)) // 2)
    finally:
        model.train(was_training)


def current_rss_mb() -> float | None:
    """Resident memory of this process now (Linux /proc), or None where that is not available."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize() / 2**20


def lifetime_peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak GPU memory allocated on CUDA (since the last reset), else the process's peak resident set."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return lifetime_peak_rss_mb()


class CostMonitor(L.Callback):
    """The cost columns of metrics.json: training and inference images/s, fit time, this run's peak memory.

    Lightning's `ThroughputMonitor` measures training throughput over a rolling window and sends it
    to a logger; the report needs one number per run for training *and* test inference, without a
    logger, and the run's peak memory, so this small callback stays. It times each epoch's training batches and the
    test batches as windows from the first batch to the end of the last, loading included (the first `warmup`
    batches of each epoch are left out unless nothing else ran), and tracks this run's peak memory.

    Peak memory: on CUDA the allocator's peak, reset at the start of the run; on CPU the largest
    resident set size seen at batch ends (not the process's lifetime peak, which in a multirun
    would carry over from earlier jobs).
    """

    def __init__(self, warmup: int = 1) -> None:
        self.warmup = warmup
        # per stage: [images, seconds] of steady batches, and of all batches including warm-up
        self.steady = {"train": [0, 0.0], "test": [0, 0.0]}
        self.everything = {"train": [0, 0.0], "test": [0, 0.0]}
        self.peak_rss_mb = 0.0
        self.fit_started = 0.0
        self.fit_seconds = 0.0
        self._open: dict[str, list] = {"train": [0.0, None], "test": [0.0, None]}  # window starts: all, steady
        self._counted = {"train": [0, 0], "test": [0, 0]}  # images in the open windows: all, steady

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_started = time.perf_counter()
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._sample_memory()

    def _sample_memory(self) -> None:
        rss = current_rss_mb()
        if rss is not None:
            self.peak_rss_mb = max(self.peak_rss_mb, rss)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_seconds = time.perf_counter() - self.fit_started

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def _start(self, stage: str, pl_module: L.LightningModule, batch_idx: int) -> None:
        """Open the stage's timing windows: all batches from batch 0, steady batches from batch `warmup`.

        The windows span whole batches, data loading included, and the device is synchronised only where a window
        opens or closes: a sync per batch would make the host wait for the GPU each step and starve it of work.
        """
        if batch_idx in (0, self.warmup):
            self._sync(pl_module)
            now = time.perf_counter()
            if batch_idx == 0:
                self._open[stage] = [now, None]
            if batch_idx == self.warmup:
                self._open[stage][1] = now

    def _end(self, stage: str, pl_module: L.LightningModule, batch: dict, batch_idx: int, last: bool) -> None:
        images = len(batch["image"])
        self._counted[stage][0] += images
        if batch_idx >= self.warmup:
            self._counted[stage][1] += images
        if last:  # the stage's last batch of this epoch: close the windows
            self._sync(pl_module)
            now = time.perf_counter()
            started_all, started_steady = self._open[stage]
            self.everything[stage][0] += self._counted[stage][0]
            self.everything[stage][1] += now - started_all
            if started_steady is not None:
                self.steady[stage][0] += self._counted[stage][1]
                self.steady[stage][1] += now - started_steady
            self._counted[stage] = [0, 0]
        self._sample_memory()

    @staticmethod
    def _last(batch_idx: int, batches: float | int | list) -> bool:
        total = batches[0] if isinstance(batches, list) else batches
        return total != float("inf") and batch_idx == int(total) - 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[override]
        self._start("train", pl_module, batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[override]
        self._end("train", pl_module, batch, batch_idx, self._last(batch_idx, trainer.num_training_batches))

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # type: ignore[override]
        self._start("test", pl_module, batch_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # type: ignore[override]
        self._end("test", pl_module, batch, batch_idx, self._last(batch_idx, trainer.num_test_batches))

    def summary(self, pl_module: L.LightningModule) -> dict[str, Any]:
        def rate(stage: str) -> float | None:
            images, seconds = self.steady[stage] if self.steady[stage][1] else self.everything[stage]
            return images / seconds if seconds else None

        if pl_module.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        else:
            peak = self.peak_rss_mb or lifetime_peak_rss_mb()
        return {
            "train_images_per_s": rate("train"),
            "infer_images_per_s": rate("test"),
            "fit_seconds": self.fit_seconds,
            "peak_memory_mb": peak,
        }
