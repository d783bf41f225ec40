"""AUC-margin loss (AUC-M) and its PESG optimizer, from LibAUC, for masked multi-label labels.

Yuan, Yan, Sonka, Yang 2021, "Large-scale Robust Deep AUC Maximization: A New Surrogate Loss and Empirical Studies
on Medical Image Classification" (ICCV; arXiv:2012.03173), as implemented by the `libauc` package (2.0.1):
``libauc.losses.MultiLabelAUCMLoss`` and ``libauc.optimizers.PESG`` are used, not copied. What chestx adds:

- ``MaskedAUCMarginLoss``: LibAUC's multi-label loss does not mask. Column k's loss is LibAUC's loss of task k on
  the rows where label k is known (NaN = unknown), and the result is the mean over the columns with a known label,
  so a batch with masked cells gives the loss of the same batch with those cells removed. Scores are
  ``sigmoid(logits)``, as LibAUC's examples feed the loss. The class priors p_k (LibAUC's ``imratio``) are fixed
  from the training split's known labels (``auc_margin(labels)``), not re-estimated on every batch (LibAUC's
  ``auto=True``).
- The loss's auxiliary variables a, b (K,) and alpha (K,) are registered as ``nn.Parameter`` and the priors as a
  buffer (LibAUC keeps them as plain tensors), so they are saved in every checkpoint, restored on resume, moved to
  the device with the model, and kept equal on every DDP process (DDP broadcasts parameters and buffers from rank
  0 and averages the gradients; ``pesg`` broadcasts PESG's random first reference point, which LibAUC draws on
  each process).
- ``pesg(params, loss, ...)``: LibAUC's PESG with the network's parameters and the loss's a, b, alpha;
  ``PESGEpochDecay``: its ``update_regularizer`` (lr / decay_factor and a new reference point for the epoch-level
  penalty) after every epoch, as LibAUC's CheXpert examples call it before every epoch but the first, as a
  Lightning epoch scheduler (saved with the checkpoint, so a resumed run decays exactly once per epoch).
"""
from __future__ import annotations

import logging
from typing import Iterable, Optional, Union

import numpy as np
import torch
import torch.nn as nn
from libauc.losses import MultiLabelAUCMLoss
from libauc.optimizers import PESG

__all__ = ["MaskedAUCMarginLoss", "PESGEpochDecay", "auc_margin", "class_priors", "find_auc_margin_loss", "pesg"]

log = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor, list, tuple]


def class_priors(labels: np.ndarray) -> np.ndarray:
    """Per-class positive fraction among the known labels (N, K) of the training split (NaN = unknown) -> (K,)
    float32. Values other than 0 / 1 (soft labels) are refused: AUC-M needs hard labels."""
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"labels must be (N, K), got shape {y.shape}")
    known = ~np.isnan(y)
    _check_hard(y[known])
    n_known = known.sum(axis=0)  # (K,)
    n_pos = np.where(known, y, 0.0).sum(axis=0)  # (K,)
    priors = np.divide(n_pos, n_known, out=np.zeros(y.shape[1]), where=n_known > 0)
    degenerate = (n_pos == 0) | (n_pos == n_known)
    if degenerate.any():
        log.warning("AUC-M: classes %s have no positive or no negative training label (prior %s): their AUC is "
                    "undefined and their loss term cannot rank", np.flatnonzero(degenerate).tolist(),
                    np.round(priors[degenerate], 3).tolist())
    return priors.astype(np.float32)


def _check_hard(values: np.ndarray | torch.Tensor) -> None:
    soft = (values != 0) & (values != 1)
    if bool(soft.any()):
        bad = sorted({round(float(v), 3) for v in values[soft][:20]})
        raise ValueError(f"loss=auc_margin needs 0/1 labels (NaN = unknown), got soft labels such as {bad}: use "
                         "data.uncertainty=ignore, zeros, ones or a mapping of those (not lsr_*), or another loss")


class MaskedAUCMarginLoss(nn.Module):
    """LibAUC's multi-label AUC-M loss over the known cells; ``loss(logits, target, uncertain) -> scalar``.

    logits, target: (B, K), target 1 / 0 / NaN. ``priors`` (K,): the training split's positive fraction per class.
    ``version`` v1 (LibAUC's default, uses the priors) or v2 (without priors). LibAUC 2.0.1's v1 multi-label loss
    leaves the margin out of the loss itself (PESG's alpha update uses it), so only margin=1.0 is the loss of the
    paper there.
    """

    def __init__(self, priors: ArrayLike, margin: float = 1.0, version: str = "v1") -> None:
        super().__init__()
        p = torch.as_tensor(np.asarray(priors, dtype=np.float32)).reshape(-1)  # (K,)
        if version not in ("v1", "v2"):
            raise ValueError(f"loss.version must be v1 or v2 (LibAUC's AUC-M versions), got {version!r}")
        if margin <= 0:
            raise ValueError(f"loss.margin must be > 0, got {margin}")
        if version == "v1" and margin != 1.0:
            log.warning("AUC-M v1: LibAUC's MultiLabelAUCMLoss leaves margin=%s out of the loss (PESG's alpha "
                        "update uses it); margin=1.0 is the loss of the paper", margin)
        self.libauc_loss = MultiLabelAUCMLoss(margin=margin, version=version, imratio=p.tolist(), num_labels=len(p),
                                              device=torch.device("cpu"))
        inner = self.libauc_loss
        for name in ("a", "b", "alpha"):  # plain tensors in LibAUC: parameters here (checkpoint, device, DDP)
            setattr(inner, name, nn.Parameter(getattr(inner, name).detach().clone()))
        del inner.p  # a list in LibAUC: a buffer here, indexed the same way (p[k])
        inner.register_buffer("p", p.clone())

    @property
    def priors(self) -> torch.Tensor:
        return self.libauc_loss.p  # (K,)

    # PESG reads these from its loss_fn
    @property
    def a(self) -> nn.Parameter:
        return self.libauc_loss.a  # (K,)

    @property
    def b(self) -> nn.Parameter:
        return self.libauc_loss.b  # (K,)

    @property
    def alpha(self) -> nn.Parameter:
        return self.libauc_loss.alpha  # (K,)

    @property
    def margin(self) -> float:
        return float(self.libauc_loss.margin)

    def checkpoint_fields(self) -> dict[str, list[float]]:
        """Plain values for the checkpoint's `chestx` entry (the priors are also in the state dict)."""
        return {"class_priors": [float(v) for v in self.priors.cpu()]}

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, uncertain: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """logits, target: (B, K); ``uncertain`` is unused (uncertain cells are NaN or mapped by policy)."""
        if logits.shape != target.shape or logits.ndim != 2:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must be the same (B, K)")
        if logits.shape[1] != len(self.priors):
            raise ValueError(f"{logits.shape[1]} outputs for {len(self.priors)} class priors")
        known = ~torch.isnan(target)  # (B, K)
        _check_hard(target[known])
        scores = torch.sigmoid(logits.float())  # (B, K), as LibAUC's examples feed the loss
        y = torch.where(known, target, torch.zeros_like(target)).float()  # (B, K)
        total, columns = scores.new_zeros(()), 0
        for k in range(target.shape[1]):
            rows = known[:, k]  # (B,)
            if not bool(rows.any()):
                continue
            task = torch.tensor([k], device=logits.device)
            total = total + self.libauc_loss(scores[rows], y[rows], task_id=task, auto=False)
            columns += 1
        if columns == 0:
            return (scores * 0).sum()  # no known label: 0.0 that still has a grad_fn
        return total / columns


def auc_margin(labels: np.ndarray, margin: float = 1.0, version: str = "v1") -> MaskedAUCMarginLoss:
    """``MaskedAUCMarginLoss`` with class priors from the training split's known labels (N, K) (`loss=auc_margin`;
    ``chestx.models.losses.build_loss`` passes `labels`)."""
    priors = class_priors(labels)
    log.info("AUC-M (LibAUC MultiLabelAUCMLoss %s, margin %s): class priors from the training split %s", version,
             margin, [round(float(v), 4) for v in priors])
    return MaskedAUCMarginLoss(priors, margin=margin, version=version)


def find_auc_margin_loss(loss: nn.Module) -> Optional[MaskedAUCMarginLoss]:
    """The AUC-M loss in `loss` (itself, or the binary part of a per-pathology ``MixedPolicyLoss``), else None."""
    return next((m for m in loss.modules() if isinstance(m, MaskedAUCMarginLoss)), None)


def pesg(params: Iterable[nn.Parameter], loss: nn.Module, lr: float = 0.1, epoch_decay: float = 2e-3,
         weight_decay: float = 1e-5, momentum: float = 0.9, clip_value: float = 1.0, mode: str = "sgd") -> PESG:
    """LibAUC's PESG over the network's `params` and the AUC-M loss's a, b (primal) and alpha (dual)
    (`optimizer=pesg`; the module passes its loss)."""
    auc = find_auc_margin_loss(loss)
    if auc is None:
        raise ValueError(f"optimizer=pesg optimises the AUC-margin loss, but the loss is {type(loss).__name__}: use "
                         "loss=auc_margin (or experiment=auc_margin_chexpert), or another optimizer")
    params = list(params)
    device = params[0].device if params else auc.a.device
    optimizer = PESG(params, loss_fn=auc, lr=lr, mode=mode, clip_value=clip_value, weight_decay=weight_decay,
                     epoch_decay=epoch_decay, momentum=momentum, verbose=False, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # PESG draws its first reference point at random (normal, std 0.01) on each process: under DDP the
        # processes would pull their weights towards different points and drift apart; rank 0's for all
        for reference in optimizer.model_ref or []:
            torch.distributed.broadcast(reference, src=0)
    return optimizer


class PESGEpochDecay(torch.optim.lr_scheduler.LRScheduler):
    """After each epoch: PESG's ``update_regularizer(decay_factor)``, i.e. lr / decay_factor and the epoch-level
    penalty's reference point moved to the mean of the epoch's iterates (`scheduler=pesg_epoch_decay`)."""

    def __init__(self, optimizer: torch.optim.Optimizer, decay_factor: float = 10.0) -> None:
        if not isinstance(optimizer, PESG):
            raise ValueError(f"scheduler=pesg_epoch_decay needs optimizer=pesg, got {type(optimizer).__name__}")
        if decay_factor <= 0:
            raise ValueError(f"scheduler.decay_factor must be > 0, got {decay_factor}")
        self.decay_factor = float(decay_factor)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self, epoch: Optional[int] = None) -> None:  # noqa: ARG002 (epoch: the LRScheduler signature)
        self.last_epoch += 1
        if self.last_epoch > 0:  # the first call is LRScheduler's own, at construction
            optimizer: PESG = self.optimizer  # type: ignore[assignment]
            if optimizer.model_ref is not None and optimizer.T > 0:
                optimizer.update_regularizer(decay_factor=self.decay_factor)
            else:  # epoch_decay=0 keeps no reference point
                optimizer.update_lr(decay_factor=self.decay_factor)
            log.info("PESG after epoch %d: lr %.3g, epoch-level reference point updated", self.last_epoch - 1,
                     optimizer.param_groups[0]["lr"])
        self._last_lr = self.get_lr()
