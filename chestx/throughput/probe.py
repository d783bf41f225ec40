"""Linear probe vs fine-tune: seconds per training epoch through the real Lightning loop (`chestx.perf parts=[probe]`).

Both train the same initial backbone for `epochs` epochs over the same rows (`BenchData`: the measured images
repeated into `batch_size * batches` training rows, uint8 from the pixel cache, normalised on the device), with
augmentation off in both so that only the module differs: fine-tune (`module.freeze=null`: forward and backward
through the whole net) against the probe (`module.freeze=backbone`, `cache_features=true`: the frozen encoder runs
once per image in the first epoch, later epochs read the cached features and train the linear head). The loader
still delivers the images every epoch in both (the probe ignores them after the first), so the ratio after the
first epoch is the full cost of an epoch, loading included, not only the model's.
"""
from __future__ import annotations

import copy
import functools
import logging
import time
import warnings
from pathlib import Path
from typing import Sequence

import lightning.pytorch as L
import torch

from chestx.data.labels.table import NIH_PATHOLOGIES
from chestx.models.backbones import create_backbone
from chestx.models.losses import MaskedBCELoss
from chestx.models.module import ChestXModule
from chestx.throughput.bench_data import BenchData

log = logging.getLogger(__name__)

NO_AUGMENT = {"hflip": 0.0, "scale": [1.0, 1.0], "rotate": 0.0, "brightness": 0.0, "contrast": 0.0}


class EpochClock(L.Callback):
    """Wall-clock seconds of every training epoch (CUDA synchronised at both ends)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._t0 = 0.0

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # type: ignore[override]
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # type: ignore[override]
        self._sync(pl_module)
        self.seconds.append(time.perf_counter() - self._t0)


def epoch_seconds(net: torch.nn.Module, files: Sequence[Path], size: int, batch_size: int, batches: int, epochs: int,
                  freeze: str | None, accelerator: str, cache_dir: Path | None) -> list[float]:
    """Seconds of each of `epochs` training epochs of `net` (fine-tune, or probe with cached features)."""
    data = BenchData(files, {"train": batch_size * batches, "val": 1, "test": 1}, cache=True,
                     cache_dir=str(cache_dir) if cache_dir else None, seed=0, augment=dict(NO_AUGMENT))
    from chestx.data.loading.datamodule import ChestXDataModule, LoaderOptions

    loader = LoaderOptions(batch_size=batch_size, eval_batch_size=batch_size, num_workers=0, pin_memory=False,
                           normalize_on_device=True)
    datamodule = ChestXDataModule(data, size, in_chans=3, loader=loader)
    module = ChestXModule(net, list(NIH_PATHOLOGIES), MaskedBCELoss(), functools.partial(torch.optim.Adam, lr=1e-4),
                          freeze=freeze, cache_features=freeze == "backbone")
    clock = EpochClock()
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=epochs, limit_val_batches=0,
                        num_sanity_val_steps=0, enable_checkpointing=False, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[clock])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*val_dataloader.*")  # no validation on purpose
        trainer.fit(module, datamodule=datamodule)
    return clock.seconds


def bench_probe(files: Sequence[Path], backbone: str, size: int, batch_size: int, batches: int, epochs: int,
                device: torch.device, cache_dir: Path | None) -> dict:
    """Per-epoch seconds of fine-tune and probe from the same initial weights, and their ratio after epoch 1."""
    if epochs < 2:
        raise ValueError(f"probe_epochs={epochs}: needs >= 2 (the first epoch fills the feature cache)")
    initial = create_backbone(backbone, len(NIH_PATHOLOGIES))
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    rows: dict = {"backbone": backbone, "size": size, "batch_size": batch_size,
                  "images_per_epoch": batch_size * batches, "epochs": epochs}
    for mode, freeze in (("finetune", None), ("probe", "backbone")):
        seconds = epoch_seconds(copy.deepcopy(initial), files, size, batch_size, batches, epochs, freeze,
                                accelerator, cache_dir)
        rows[mode] = {"epoch_seconds": seconds, "first": seconds[0], "later_mean": sum(seconds[1:]) / len(seconds[1:])}
        log.info("%s %s: epoch seconds %s", backbone, mode, [round(s, 3) for s in seconds])
    rows["finetune_over_probe_later"] = rows["finetune"]["later_mean"] / max(rows["probe"]["later_mean"], 1e-9)
    rows["finetune_over_probe_first"] = rows["finetune"]["first"] / max(rows["probe"]["first"], 1e-9)
    return rows


def format_probe(result: dict) -> list[str]:
    """Lines of the PROBE section of chestx.perf's table."""
    return ["", f"PROBE vs FINE-TUNE  ({result['backbone']}, {result['size']} px, {result['images_per_epoch']} images "
            f"per epoch, batch {result['batch_size']}, augmentation off in both; seconds per epoch)",
            f"{'mode':<10}{'epoch 1':>10}{'later (mean)':>14}",
            *(f"{m:<10}{result[m]['first']:>10.2f}{result[m]['later_mean']:>14.3f}" for m in ("finetune", "probe")),
            f"fine-tune / probe per epoch after the first: {result['finetune_over_probe_later']:.1f}x "
            f"(epoch 1: {result['finetune_over_probe_first']:.2f}x)"]
