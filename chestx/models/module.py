"""LightningModule for multi-label chest X-ray classification.

One backbone producing K logits (three for each pathology under the CheXpert `multiclass`
uncertainty policy, see `OutputLayout`), a
masked loss, and per-pathology AUROC computed at the end of each validation/test epoch on the
whole split. Predictions are gathered with torchmetrics' `CatMetric` (which syncs across DDP
processes) together with each image's dataset index, so images padded in by a distributed
sampler are dropped, not counted twice. Images arrive normalised: `ChestXDataModule` finishes its
uint8 batches on the device (`on_after_batch_transfer`) before they reach the steps here.
`compile` (module.compile) compiles the backbone in place (`chestx.models.compiling`); `compile_seconds()` is the
time torch spent on it, and `timestamps` the wall-clock moments of the run's phases this module sees (first
training batch, end of fit) for metrics.json.
"""
from __future__ import annotations

import inspect
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as L
import numpy as np
import torch
from torch import nn
from torchmetrics.aggregation import CatMetric

from chestx.core.checkpoint_io import CheckpointError, load_checkpoint, plain, unsafe_entries
from chestx.metrics.auroc import masked_auroc
from chestx.models.compiling import compile_net, compile_mode
from chestx.models.losses import OutputLayout, probabilities

log = logging.getLogger(__name__)


NAN_CHECK_EVERY = 50  # on a GPU, steps between reading back whether the loss went non-finite (one sync each)


FREEZE_OPTIONS: tuple[str | None, ...] = (None, "backbone")


def _head(net: nn.Module) -> nn.Module:
    """The final linear head of a timm model (``get_classifier``) or a chestx encoder (``head``)."""
    return net.get_classifier() if hasattr(net, "get_classifier") else net.head


def _features(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, D) pooled features, the head's input (timm: ``forward_head(pre_logits=True)``)."""
    if hasattr(net, "get_classifier"):
        return net.forward_head(net.forward_features(images), pre_logits=True)
    return net.forward_features(images)


class NaNLossError(RuntimeError):
    """Raised when the training loss stops being finite."""


@dataclass
class EpochOutputs:
    """Predictions of one full split, one row per image, sorted by dataset index."""

    index: np.ndarray  # (N,) int64 dataset row index
    probs: np.ndarray  # (N, K) float32
    targets: np.ndarray  # (N, K) float32 1/0/NaN


class ChestXModule(L.LightningModule):
    """Backbone + masked multi-label loss + per-pathology AUROC."""

    def __init__(
        self,
        net: nn.Module,
        pathologies: list[str],
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_monitor: str = "val/loss",
        multiclass: bool | list[bool] = False,
        channels_last: bool = False,
        checkpoint_info: dict[str, Any] | None = None,
        compile: bool | str | None = False,
        freeze: str | None = None,
        cache_features: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "checkpoint_info"])
        self.net = net
        self.pathologies = list(pathologies)
        self.loss_fn = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_monitor = scheduler_monitor
        self.multiclass = OutputLayout(multiclass, len(self.pathologies)).multiclass  # (K,) per-pathology flags
        self.channels_last = bool(channels_last)
        self._gather = nn.ModuleDict(
            {name: CatMetric(nan_strategy="disable") for name in ("index", "probs", "targets")}
        )
        self.outputs: dict[str, EpochOutputs] = {}
        # plain fields saved into every checkpoint (model name, pathologies, preprocessing; no _target_s)
        self.checkpoint_info: dict[str, Any] = dict(checkpoint_info or {})
        if freeze not in FREEZE_OPTIONS:
            raise ValueError(f"module.freeze={freeze!r} is not one of {list(FREEZE_OPTIONS)} (null: fine-tune all, "
                             "backbone: linear probe, only the head trains)")
        self.freeze = freeze
        self.feature_cache: dict[tuple[str, int], torch.Tensor] | None = None  # (stage, row) -> (D,) features
        self.feature_cache_hits = 0  # images whose features came from the cache
        if freeze == "backbone":
            head = set(map(id, _head(self.net).parameters()))
            for p in self.net.parameters():
                p.requires_grad_(id(p) in head)
            self.feature_cache = {} if cache_features else None
            self.checkpoint_info["freeze"] = {
                "frozen": "backbone", "trainable_parameters": sum(p.numel() for p in self.net.parameters()
                                                                  if p.requires_grad),
                "frozen_parameters": sum(p.numel() for p in self.net.parameters() if not p.requires_grad),
                "bn_statistics": "frozen (eval mode)", "feature_cache": bool(cache_features)}
            log.info("linear probe: backbone frozen (weights and batch-norm statistics), %s; features %s",
                     self.checkpoint_info["freeze"], "cached after their first pass" if cache_features else
                     "recomputed every epoch (the training transform is random)")
            self.train()  # the backbone in eval mode from the start (Lightning restores each module's mode)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.compile_mode = compile_mode(compile)  # None: eager
        self._compile_clock = compile_net(self.net, compile)
        self.timestamps: dict[str, float] = {}  # phase -> time.time(): first_batch, fit_end
        self._first_bad_step: torch.Tensor | None = None  # () long on the GPU: first step with a non-finite loss

    def compile_seconds(self) -> float | None:
        """Seconds torch spent compiling the backbone so far (training and evaluation graphs); None when not compiled."""
        return self._compile_clock.seconds() if self._compile_clock is not None else None

    def on_train_epoch_start(self) -> None:
        if self.freeze == "backbone":
            self.train()  # whatever set the modes since (validation, Lightning's mode restore): backbone eval

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.timestamps.setdefault("first_batch", time.time())  # the first batch is loaded and on the device

    def on_fit_end(self) -> None:
        self.timestamps["fit_end"] = time.time()
        if self._compile_clock is not None:
            log.info("torch.compile (mode %s): %.1f s compiling during fit", self.compile_mode,
                     self.compile_seconds() or 0.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)  # (B, num_outputs) logits, see OutputLayout

    def train(self, mode: bool = True) -> "ChestXModule":
        """Lightning's train() switches every module to training mode; a frozen backbone stays in eval mode (its
        batch-norm statistics and dropout do not move), only the head follows ``mode``."""
        super().train(mode)
        if self.freeze == "backbone":
            self.net.eval()
            _head(self.net).train(mode)
        return self

    def _logits(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """(B, num_outputs) logits; a linear probe takes the frozen features from the cache when it has them."""
        if self.freeze != "backbone":
            return self(batch["image"])
        cache, rows = self.feature_cache, batch["index"].tolist()
        if cache is not None and stage in ("train", "val") and all((stage, r) in cache for r in rows):
            features = torch.stack([cache[(stage, r)] for r in rows]).to(batch["image"].device)  # (B, D)
            self.feature_cache_hits += len(rows)
        else:
            with torch.no_grad():
                images = batch["image"]
                if self.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                features = _features(self.net, images)  # (B, D)
            if cache is not None and stage in ("train", "val"):
                for r, f in zip(rows, features.detach().cpu()):
                    cache[(stage, r)] = f
        return _head(self.net)(features)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self._logits(batch, "train")
        loss = self.loss_fn(logits, batch["target"], batch["uncertain"])
        self._watch_loss(loss)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(logits))
        return loss

    def _watch_loss(self, loss: torch.Tensor) -> None:
        """Stop on a non-finite training loss, naming the first step where it happened.

        Reading a GPU value back makes the host wait for the device every step, which starves the GPU of queued
        work; so on a GPU the first bad step is recorded on the device (no transfer) and read back every
        NAN_CHECK_EVERY steps and at the end of each epoch. On the CPU every step is checked at once (no cost).
        """
        bad = ~torch.isfinite(loss.detach())
        if loss.device.type != "cuda":
            if bool(bad):
                self._raise_nan(self.global_step, float(loss.detach()))
            return
        step = torch.tensor(self.global_step, device=loss.device)
        if self._first_bad_step is None or self._first_bad_step.device != loss.device:
            self._first_bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        self._first_bad_step = torch.where(bad & (self._first_bad_step < 0), step, self._first_bad_step)
        if (self.global_step + 1) % NAN_CHECK_EVERY == 0:
            self._check_recorded_loss()

    def _check_recorded_loss(self) -> None:
        if self._first_bad_step is not None and int(self._first_bad_step) >= 0:
            self._raise_nan(int(self._first_bad_step), float("nan"))

    def _raise_nan(self, step: int, value: float) -> None:
        raise NaNLossError(
            f"training loss became {value} at global step {step} (epoch {self.current_epoch}); lower "
            "optimizer.lr, check the input normalisation, or use trainer.precision=32"
        )

    def on_train_epoch_end(self) -> None:
        self._check_recorded_loss()

    # ---------------------------------------------------------------- evaluation
    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        logits = self._logits(batch, stage)
        loss = self.loss_fn(logits, batch["target"], batch["uncertain"])
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=len(logits), sync_dist=True)
        probs = probabilities(logits.float(), self.multiclass)  # (B, K)
        self._gather["index"].update(batch["index"].float())
        self._gather["probs"].update(probs)
        self._gather["targets"].update(batch["eval_target"])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _collect(self) -> EpochOutputs:
        parts = {name: metric.compute() for name, metric in self._gather.items()}
        for metric in self._gather.values():
            metric.reset()
        index = parts["index"].long().cpu().numpy().reshape(-1)
        k = len(self.pathologies)
        probs = parts["probs"].float().cpu().numpy().reshape(-1, k)
        targets = parts["targets"].float().cpu().numpy().reshape(-1, k)
        index, first = np.unique(index, return_index=True)  # drop sampler padding duplicates
        return EpochOutputs(index, probs[first], targets[first])

    def _end_eval_epoch(self, stage: str) -> None:
        if self.trainer.sanity_checking:
            for metric in self._gather.values():
                metric.reset()
            return
        out = self._collect()
        self.outputs[stage] = out
        table = masked_auroc(out.probs, out.targets, self.pathologies)
        for row in table.itertuples():
            key = f"{stage}/auroc_mean" if row.pathology == "mean" else f"{stage}/auroc/{row.pathology}"
            value = float(row.auroc) if not math.isnan(row.auroc) else float("nan")
            self.log(key, value, prog_bar=row.pathology == "mean", sync_dist=False, rank_zero_only=False)

    def on_validation_epoch_end(self) -> None:
        self._end_eval_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._end_eval_epoch("test")

    # ----------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.net.parameters() if p.requires_grad]  # a linear probe: the head only
        if "loss" in inspect.signature(self.optimizer_factory).parameters:  # PESG: also the loss's a, b, alpha
            optimizer = self.optimizer_factory(params=trainable, loss=self.loss_fn)
        elif any(True for _ in self.loss_fn.parameters()):
            raise ValueError(f"the loss {type(self.loss_fn).__name__} has trainable parameters (AUC-M's a, b, alpha) "
                             f"that optimizer {getattr(self.optimizer_factory, 'func', self.optimizer_factory)} "
                             "does not update: use optimizer=pesg (LibAUC's optimizer for loss=auc_margin)")
        else:
            optimizer = self.optimizer_factory(params=trainable)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = self.scheduler_monitor
        return {"optimizer": optimizer, "lr_scheduler": config}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # plain values only, so that every reader loads the file with weights_only=True (chestx.core.checkpoint_io)
        info = dict(self.checkpoint_info)
        loss = getattr(self, "loss_fn", None)
        for part in loss.modules() if isinstance(loss, nn.Module) else ():  # e.g. AUC-M's class priors
            if hasattr(part, "checkpoint_fields"):
                info.update(part.checkpoint_fields())
        checkpoint["chestx"] = plain(info, "checkpoint['chestx']")
        unsafe = unsafe_entries(checkpoint)
        if unsafe:
            raise CheckpointError(f"this checkpoint would hold {unsafe[:5]}, which torch.load(weights_only=True) "
                                  "refuses, so chestx could not read it back: keep those states to tensors and plain "
                                  "values (numbers, strings, lists, dicts)")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.checkpoint_info = checkpoint.get("chestx", {})
        own = set(self.loss_fn.state_dict())
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("loss_fn.") and k[len("loss_fn."):] not in own]:
            del state[key]  # another loss's variables (AUC-M's a, b, alpha, priors): scoring its net needs none


def checkpoint_epoch(path: str | Path, trust: bool = False) -> int | None:
    """The epoch a Lightning checkpoint was written in (memory-mapped: the weights are not read; read without
    running code unless `trust`, see chestx.core.checkpoint_io)."""
    return load_checkpoint(path, trust=trust, mmap=True).get("epoch")
