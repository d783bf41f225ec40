"""Training / inference throughput: the real Lightning loop vs a bare PyTorch loop, both fed as chestx.train is.

The batches come from a `ChestXDataModule` (`make_datamodule`) over `BenchData`, the measured images repeated into
as many rows as the measurement needs: the pixel cache, the training augmentation seeded per image, uint8
(B, 1, S, S) batches from `workers` loader processes, pinned memory on CUDA, exactly the loader of a training run.
Each batch is moved to the device and finished there by the datamodule's own `on_after_batch_transfer` (0..1,
ImageNet statistics, grey to 3 channels): Lightning does it itself, the bare loop and the inference loop call it
after `.to(device)` (`to_model_input`). Both training loops train a fresh copy of the same initial weights with
Adam and masked BCE; torch.compile goes through `chestx.models.compiling`, as `module.compile` does in training.

Timing starts when batch `warmup - 1` is done (at the start with warmup=0) and ends after the last batch (CUDA
synchronised), so it covers loading, transfer, normalisation and the step of every timed batch, in both loops
alike; the Lightning/bare ratio is the framework's overhead.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import gc
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn
from torch.utils.data import DataLoader

from chestx.core.hardware import resolve_device_defaults
from chestx.data.loading.datamodule import ChestXDataModule, LoaderOptions
from chestx.data.labels.table import NIH_PATHOLOGIES
from chestx.models.backbones import create_backbone
from chestx.models.callbacks import peak_memory_mb
from chestx.models.compiling import compile_net
from chestx.models.losses import MaskedBCELoss
from chestx.models.module import ChestXModule
from chestx.throughput.bench_data import BenchData

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


def make_datamodule(files: Sequence[Path], size: int, batch_size: int, eval_batch_size: int, n_batches: int,
                    workers: int, pin_memory: bool, cache_dir: Path | None, in_chans: int = 3,
                    seed: int = 0) -> ChestXDataModule:
    """The training run's datamodule over `files` repeated into `n_batches` training and test batches (one
    validation row), from the pixel cache under `cache_dir`, with chestx.train's default augmentation."""
    rows = {"train": batch_size * n_batches, "val": 1, "test": eval_batch_size * n_batches}
    data = BenchData(files, rows, cache=True, cache_dir=str(cache_dir) if cache_dir else None, seed=seed)
    loader = LoaderOptions(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=workers,
                           pin_memory=pin_memory, normalize_on_device=True)
    datamodule = ChestXDataModule(data, size, in_chans=in_chans, loader=loader)
    datamodule.setup("fit")
    return datamodule


def make_loader(datamodule: ChestXDataModule, train: bool) -> DataLoader:
    """The training loader (`ResumableDataLoader` over an `EpochSampler`), or the test loader, of `datamodule`."""
    return datamodule.train_dataloader() if train else datamodule.test_dataloader()


def to_model_input(datamodule: ChestXDataModule, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """What Lightning does to a batch before the step: move it to `device`, then the datamodule's
    `on_after_batch_transfer` (uint8 (B, 1, S, S) -> float32 (B, C, S, S) model input)."""
    return datamodule.on_after_batch_transfer(move_data_to_device(batch, device), 0)


class _Timer(L.Callback):
    """From the end of batch `warmup - 1` to the end of the epoch; CUDA synchronised there only, so the timed
    batches queue their work as they do in training."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.images, self.t0, self.t1 = warmup, 0, 0.0, 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # type: ignore[override]
        if self.warmup == 0:
            _sync(pl_module.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[override]
        if batch_idx == self.warmup - 1:
            _sync(pl_module.device)
            self.t0 = time.perf_counter()
        elif batch_idx >= self.warmup:
            self.images += len(batch["image"])

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # type: ignore[override]
        _sync(pl_module.device)
        self.t1 = time.perf_counter()


def lightning_images_per_s(net: nn.Module, datamodule: ChestXDataModule, option: Option, warmup: int,
                           accelerator: str) -> float:
    """The real loop: ChestXModule + lightning.Trainer.fit on the datamodule, no validation, checkpoints or loggers."""
    module = ChestXModule(net, list(NIH_PATHOLOGIES), MaskedBCELoss(), functools.partial(torch.optim.Adam, lr=1e-4),
                          channels_last=option.channels_last, compile=option.compile)
    timer = _Timer(warmup)
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, precision=option.precision, max_epochs=1, limit_val_batches=0,
        num_sanity_val_steps=0, enable_checkpointing=False, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer], benchmark=resolve_device_defaults(accelerator).benchmark,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*val_dataloader.*")  # no validation on purpose
        trainer.fit(module, datamodule=datamodule)
    return timer.images / max(timer.t1 - timer.t0, 1e-9)


def _autocast(device: torch.device, precision: str):
    if precision == "32-true":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _prepare_net(net: nn.Module, option: Option, device: torch.device, train: bool) -> nn.Module:
    if option.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net = net.to(device).train(train)
    compile_net(net, option.compile)
    return net


def bare_images_per_s(net: nn.Module, datamodule: ChestXDataModule, option: Option, warmup: int,
                      device: torch.device) -> float:
    """The same work in plain PyTorch: the datamodule's batches to the device and normalised there, forward under
    autocast, backward, Adam step."""
    net = _prepare_net(net, option, device, train=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_fn = MaskedBCELoss()
    scaler = torch.amp.GradScaler(device.type, enabled=option.precision == "16-mixed")
    images, t0 = 0, time.perf_counter()
    for step, batch in enumerate(make_loader(datamodule, train=True)):
        batch = to_model_input(datamodule, batch, device)
        x = batch["image"]  # (B, C, H, W) float32
        if option.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, option.precision):
            logits = net(x)  # (B, K)
            loss = loss_fn(logits, batch["target"], batch["uncertain"])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if step == warmup - 1:
            _sync(device)
            t0 = time.perf_counter()
        elif step >= warmup:
            images += len(x)
    _sync(device)
    return images / max(time.perf_counter() - t0, 1e-9)


@torch.inference_mode()
def infer_images_per_s(net: nn.Module, datamodule: ChestXDataModule, option: Option, warmup: int,
                       device: torch.device) -> float:
    """Forward passes over the datamodule's test loader (evaluation transform, eval batch size), each batch moved to
    the device and normalised there."""
    net = _prepare_net(net, option, device, train=False)
    images, t0 = 0, time.perf_counter()
    for step, batch in enumerate(make_loader(datamodule, train=False)):
        x = to_model_input(datamodule, batch, device)["image"]
        if option.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, option.precision):
            net(x)
        if step == warmup - 1:
            _sync(device)
            t0 = time.perf_counter()
        elif step >= warmup:
            images += len(x)
    _sync(device)
    return images / max(time.perf_counter() - t0, 1e-9)


def bench_training(
    files: Sequence[Path], backbones: list[str], options: list[Option], size: int, batch_size: int, batches: int,
    warmup: int, workers: int, repeats: int, device: torch.device, eval_batch_size: int, cache_dir: Path | None,
) -> tuple[list[dict], list[dict]]:
    """Rows for the train table (Lightning vs bare) and the inference table; `files` are the measured images."""
    accelerator = "gpu" if device.type == "cuda" else "cpu"

    def datamodule() -> ChestXDataModule:  # a fresh one per measurement: every loop sees epoch 0's batches
        return make_datamodule(files, size, batch_size, eval_batch_size, warmup + batches, workers,
                               pin_memory=device.type == "cuda", cache_dir=cache_dir)

    train_rows, infer_rows = [], []
    for name in backbones:
        torch.manual_seed(0)
        initial = create_backbone(name, len(NIH_PATHOLOGIES))
        for option in options:
            best = {"lightning": 0.0, "bare": 0.0}
            peaks = {"lightning": 0.0, "bare": 0.0}
            for _ in range(repeats):  # interleaved so that load changes hit both loops alike
                for loop in ("bare", "lightning"):
                    reset_peak(device)
                    net = copy.deepcopy(initial)
                    rate = (lightning_images_per_s(net, datamodule(), option, warmup, accelerator) if loop == "lightning"
                            else bare_images_per_s(net, datamodule(), option, warmup, device))
                    best[loop] = max(best[loop], rate)
                    peaks[loop] = max(peaks[loop], peak_mb(device))
                    gc.collect()  # the Trainer's reference cycles hold its loader's worker processes
            row = {"backbone": name, "option": option.name, "size": size, "batch_size": batch_size, "batches": batches,
                   "workers": workers, "lightning_images_per_s": best["lightning"], "bare_images_per_s": best["bare"],
                   "lightning_over_bare": best["lightning"] / max(best["bare"], 1e-9),
                   "peak_memory_mb": max(peaks.values())}
            train_rows.append(row)
            log.info("train %s %s: lightning %.1f, bare %.1f images/s (%.3f)", name, option.name,
                     best["lightning"], best["bare"], row["lightning_over_bare"])
            reset_peak(device)
            rate = infer_images_per_s(copy.deepcopy(initial), datamodule(), option, warmup, device)
            infer_rows.append({"backbone": name, "option": option.name, "size": size, "batch_size": eval_batch_size,
                               "workers": workers, "images_per_s": rate, "peak_memory_mb": peak_mb(device)})
            log.info("infer %s %s: %.1f images/s", name, option.name, rate)
    return train_rows, infer_rows
