"""Training / inference throughput: the real Lightning loop vs a bare PyTorch loop on the same batches.

Both loops train a fresh copy of the same initial weights with Adam and masked BCE on batches drawn
with the same seed from the pixel cache through the real training transform. Timing starts at batch
`warmup` and ends after the last one (CUDA synchronised), so it includes loading between batches in
both loops alike; the Lightning/bare ratio is the framework's overhead.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
import time
import warnings
from dataclasses import dataclass

import lightning.pytorch as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from chestx.models.callbacks import peak_memory_mb
from chestx.data.cache import CachedPixels
from chestx.data.dataset import XrayDataset
from chestx.data.labels import NIH_PATHOLOGIES
from chestx.data.transforms import build_transform
from chestx.models.backbones import create_backbone
from chestx.models.losses import MaskedBCELoss
from chestx.models.module import ChestXModule

log = logging.getLogger(__name__)


@dataclass
class Option:
    """One training-loop configuration: Lightning precision string, memory format, torch.compile."""

    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def parse(cls, text: str) -> "Option":
        """'32', 'bf16', '16' (mixed), joined with '+cl' (channels_last) and/or '+compile'."""
        parts = text.split("+")
        precision = {"32": "32-true", "fp32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed", "fp16": "16-mixed"}
        if parts[0] not in precision or any(p not in ("cl", "compile") for p in parts[1:]):
            raise ValueError(f"options entry {text!r}: use 32|bf16|16 followed by +cl and/or +compile, e.g. bf16+cl")
        return cls(precision[parts[0]], "cl" in parts[1:], "compile" in parts[1:])

    @property
    def name(self) -> str:
        return self.precision + ("+channels_last" if self.channels_last else "") + ("+compile" if self.compile else "")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    """Reset the peak-memory counter: CUDA allocator, or the process's VmHWM on Linux."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def peak_mb(device: torch.device) -> float:
    if device.type != "cuda":
        with contextlib.suppress(OSError):
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    return peak_memory_mb(device)


def make_loader(cache: CachedPixels, size: int, batch_size: int, n_batches: int, workers: int, train: bool,
                in_chans: int = 3, seed: int = 0) -> DataLoader:
    """`n_batches` batches drawn with replacement from the cache (labels are zeros: speed does not depend on them)."""
    k = len(NIH_PATHOLOGIES)
    n = len(cache)
    dataset = XrayDataset(cache, np.zeros((n, k), np.float32), np.zeros((n, k), np.float32), np.zeros((n, k), bool),
                          build_transform(size, train=train, in_chans=in_chans))
    sampler = RandomSampler(dataset, replacement=True, num_samples=batch_size * n_batches,
                            generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False, drop_last=True)


class _Timer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.images, self.t0, self.t1 = warmup, 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[override]
        if batch_idx == self.warmup:
            _sync(pl_module.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[override]
        if batch_idx >= self.warmup:
            _sync(pl_module.device)
            self.t1 = time.perf_counter()
            self.images += len(batch["image"])


def _maybe_compile(net: nn.Module, option: Option) -> nn.Module:
    return torch.compile(net) if option.compile else net


def lightning_images_per_s(net: nn.Module, loader: DataLoader, option: Option, warmup: int, accelerator: str) -> float:
    """The real loop: ChestXModule + lightning.Trainer.fit, no validation, checkpoints or loggers."""
    module = ChestXModule(_maybe_compile(net, option), list(NIH_PATHOLOGIES), MaskedBCELoss(),
                          functools.partial(torch.optim.Adam, lr=1e-4), channels_last=option.channels_last)
    timer = _Timer(warmup)
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, precision=option.precision, max_epochs=1, limit_val_batches=0,
        num_sanity_val_steps=0, enable_checkpointing=False, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*val_dataloader.*")  # no validation on purpose
        trainer.fit(module, train_dataloaders=loader)
    return timer.images / max(timer.t1 - timer.t0, 1e-9)


def _autocast(device: torch.device, precision: str):
    if precision == "32-true":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def bare_images_per_s(net: nn.Module, loader: DataLoader, option: Option, warmup: int, device: torch.device) -> float:
    """The same work in plain PyTorch: forward under autocast, backward, Adam step."""
    if option.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net = _maybe_compile(net.to(device).train(), option)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_fn = MaskedBCELoss()
    scaler = torch.amp.GradScaler(device.type, enabled=option.precision == "16-mixed")
    images, t0 = 0, 0.0
    for step, batch in enumerate(loader):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        x = batch["image"].to(device, non_blocking=True)  # (B, C, H, W)
        if option.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, option.precision):
            logits = net(x)  # (B, K)
            loss = loss_fn(logits, batch["target"].to(device), batch["uncertain"].to(device))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if step >= warmup:
            images += len(x)
    _sync(device)
    return images / max(time.perf_counter() - t0, 1e-9)


@torch.inference_mode()
def infer_images_per_s(net: nn.Module, loader: DataLoader, option: Option, warmup: int, device: torch.device) -> float:
    if option.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net = _maybe_compile(net.to(device).eval(), option)
    images, t0 = 0, 0.0
    for step, batch in enumerate(loader):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        x = batch["image"].to(device, non_blocking=True)
        if option.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, option.precision):
            net(x)
        if step >= warmup:
            images += len(x)
    _sync(device)
    return images / max(time.perf_counter() - t0, 1e-9)


def bench_training(
    cache: CachedPixels, backbones: list[str], options: list[Option], size: int, batch_size: int, batches: int,
    warmup: int, workers: int, repeats: int, device: torch.device, eval_batch_size: int,
) -> tuple[list[dict], list[dict]]:
    """Rows for the train table (Lightning vs bare) and the inference table."""
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    train_rows, infer_rows = [], []
    for name in backbones:
        torch.manual_seed(0)
        initial = create_backbone(name, len(NIH_PATHOLOGIES))
        for option in options:
            best = {"lightning": 0.0, "bare": 0.0}
            peaks = {"lightning": 0.0, "bare": 0.0}
            for _ in range(repeats):  # interleaved so that load changes hit both loops alike
                for loop in ("bare", "lightning"):
                    loader = make_loader(cache, size, batch_size, warmup + batches, workers, train=True)
                    reset_peak(device)
                    net = copy.deepcopy(initial)
                    rate = (lightning_images_per_s(net, loader, option, warmup, accelerator) if loop == "lightning"
                            else bare_images_per_s(net, loader, option, warmup, device))
                    best[loop] = max(best[loop], rate)
                    peaks[loop] = max(peaks[loop], peak_mb(device))
            row = {"backbone": name, "option": option.name, "size": size, "batch_size": batch_size, "batches": batches,
                   "lightning_images_per_s": best["lightning"], "bare_images_per_s": best["bare"],
                   "lightning_over_bare": best["lightning"] / max(best["bare"], 1e-9),
                   "peak_memory_mb": max(peaks.values())}
            train_rows.append(row)
            log.info("train %s %s: lightning %.1f, bare %.1f images/s (%.3f)", name, option.name,
                     best["lightning"], best["bare"], row["lightning_over_bare"])
            loader = make_loader(cache, size, eval_batch_size, warmup + batches, workers, train=False)
            reset_peak(device)
            rate = infer_images_per_s(copy.deepcopy(initial), loader, option, warmup, device)
            infer_rows.append({"backbone": name, "option": option.name, "size": size, "batch_size": eval_batch_size,
                               "images_per_s": rate, "peak_memory_mb": peak_mb(device)})
            log.info("infer %s %s: %.1f images/s", name, option.name, rate)
    return train_rows, infer_rows
