"""Masked multi-label losses for chest X-ray classification.

Every loss is an ``nn.Module`` called as ``loss(logits, target, uncertain) -> scalar`` where
``target`` is float32 (B, K) with 1 / 0 / NaN (NaN = unknown, masked; soft values allowed) and
``uncertain`` a bool (B, K) mask of CheXpert "uncertain" (-1) labels (see docs/design.md).
Masked cells contribute nothing (zero loss, zero gradient); the reduction is the mean over
observed cells; a batch with no observed cell gives 0.0 that still has a ``grad_fn``.

- ``MaskedBCELoss``: binary cross-entropy with logits, optional per-class positive/negative weights.
- ``WeightedBCELoss`` / ``class_weights_from_labels``: the class-balanced BCE of CheXNet
  (Rajpurkar et al. 2017, arXiv:1711.05225), w+ = N_neg / N_obs and w- = N_pos / N_obs per class
  (the normalised form of Wang et al. 2017 "ChestX-ray8", CVPR, Eq. 1: beta_P = N/|P|, beta_N = N/|N|).
- ``MaskedFocalLoss``: Lin et al. 2017, "Focal Loss for Dense Object Detection" (ICCV).
- ``MulticlassUncertaintyLoss``: the CheXpert "U-MultiClass" policy (Irvin et al. 2019, AAAI):
  logits (B, 3K) laid out as (B, K, 3) with classes 0 = negative, 1 = positive, 2 = uncertain,
  i.e. the logit of class c for pathology k is at column ``3 * k + c``.
- ``OutputLayout`` / ``MixedPolicyLoss``: per-pathology policies. Pathology k has one logit, or
  three (negative, positive, uncertain) when its policy is ``multiclass``, in pathology order; the
  configured loss trains the one-logit pathologies and ``MulticlassUncertaintyLoss`` the others.
"""
from __future__ import annotations

import inspect
import logging
from typing import Callable, Optional, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "MULTICLASS_NEG",
    "MULTICLASS_POS",
    "MULTICLASS_UNCERTAIN",
    "MaskedBCELoss",
    "WeightedBCELoss",
    "MaskedFocalLoss",
    "MulticlassUncertaintyLoss",
    "MixedPolicyLoss",
    "OutputLayout",
    "build_loss",
    "class_weights_from_labels",
    "multiclass_classes",
    "weighted_bce",
    "multiclass_positive_probability",
    "probabilities",
]

log = logging.getLogger(__name__)

MULTICLASS_NEG, MULTICLASS_POS, MULTICLASS_UNCERTAIN = 0, 1, 2  # column 3*k + c of the (B, 3K) logits

ArrayLike = Union[np.ndarray, torch.Tensor, list, tuple]


def _as_weight(w: Optional[ArrayLike]) -> Optional[torch.Tensor]:
    if w is None:
        return None
    return torch.as_tensor(np.asarray(w, dtype=np.float32) if not isinstance(w, torch.Tensor) else w).float()


def _masked_mean(cell_loss: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Mean of ``cell_loss`` over ``observed`` cells; 0.0 (with grad_fn) when none is observed."""
    total = torch.where(observed, cell_loss, torch.zeros_like(cell_loss)).sum()
    return total / observed.sum().clamp(min=1)


def _check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")


class MaskedBCELoss(nn.Module):
    """BCE with logits averaged over observed (non-NaN) cells, with optional per-class weights.

    Cell loss: ``-(w+_k * y * log s(z) + w-_k * (1 - y) * log(1 - s(z)))``; weights default to 1.
    """

    def __init__(self, pos_weight: Optional[ArrayLike] = None, neg_weight: Optional[ArrayLike] = None) -> None:
        super().__init__()
        self.register_buffer("pos_weight", _as_weight(pos_weight))  # (K,) or None
        self.register_buffer("neg_weight", _as_weight(neg_weight))  # (K,) or None

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, uncertain: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """logits, target: (B, K); ``uncertain`` is unused (uncertain cells are NaN or mapped by policy)."""
        _check_shapes(logits, target)
        for name, w in (("pos_weight", self.pos_weight), ("neg_weight", self.neg_weight)):
            if w is not None and w.numel() not in (1, logits.shape[1]):
                raise ValueError(f"{name} has {w.numel()} entries for {logits.shape[1]} outputs; one per class")
        observed = ~torch.isnan(target)  # (B, K)
        y = torch.where(observed, target, torch.zeros_like(target)).to(logits.dtype)  # (B, K) NaN -> 0
        if self.pos_weight is None and self.neg_weight is None:
            cell = F.binary_cross_entropy_with_logits(logits, y, reduction="none")  # (B, K)
        else:
            pos = self.pos_weight if self.pos_weight is not None else torch.ones(1, device=logits.device)
            neg = self.neg_weight if self.neg_weight is not None else torch.ones(1, device=logits.device)
            cell = -(pos * y * F.logsigmoid(logits) + neg * (1 - y) * F.logsigmoid(-logits))  # (B, K)
        return _masked_mean(cell, observed)


def class_weights_from_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class CheXNet weights from training labels (N, K) with NaN = unknown.

    ``pos_weight = N_neg / N_obs`` and ``neg_weight = N_pos / N_obs`` per class, counting only
    observed cells (soft labels count fractionally: N_pos = sum y, N_neg = sum (1 - y)).
    A class with no positives, no negatives or no observed label gets the balanced (0.5, 0.5)
    instead of a degenerate 1 / 0 pair, with a warning. Returns two float32 (K,) arrays.
    """
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"labels must be (N, K), got shape {y.shape}")
    observed = ~np.isnan(y)
    n_pos = np.where(observed, y, 0.0).sum(axis=0)  # (K,)
    n_neg = np.where(observed, 1.0 - y, 0.0).sum(axis=0)  # (K,)
    n_obs = n_pos + n_neg
    degenerate = (n_pos <= 0) | (n_neg <= 0)
    safe = np.where(degenerate, 1.0, n_obs)
    pos_weight = np.where(degenerate, 0.5, n_neg / safe)
    neg_weight = np.where(degenerate, 0.5, n_pos / safe)
    if degenerate.any():
        log.warning(
            "classes %s have no positive or no negative training label; using balanced weights 0.5/0.5",
            np.flatnonzero(degenerate).tolist(),
        )
    return pos_weight.astype(np.float32), neg_weight.astype(np.float32)


class WeightedBCELoss(MaskedBCELoss):
    """Class-balanced masked BCE (CheXNet); build it with ``weighted_bce(train_labels)``."""

    def __init__(self, pos_weight: ArrayLike, neg_weight: ArrayLike) -> None:
        super().__init__(pos_weight=pos_weight, neg_weight=neg_weight)

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> "WeightedBCELoss":
        return cls(*class_weights_from_labels(labels))


def weighted_bce(labels: np.ndarray) -> WeightedBCELoss:
    """``WeightedBCELoss`` with weights from training-split labels (N, K); see ``class_weights_from_labels``."""
    pos_weight, neg_weight = class_weights_from_labels(labels)
    log.info("weighted BCE: pos_weight=%s neg_weight=%s", np.round(pos_weight, 3), np.round(neg_weight, 3))
    return WeightedBCELoss(pos_weight, neg_weight)


class MaskedFocalLoss(nn.Module):
    """Focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` (Lin et al. 2017) over observed cells.

    With soft targets, ``p_t = y p + (1 - y)(1 - p)`` and ``alpha_t = y alpha + (1 - y)(1 - alpha)``;
    ``alpha=None`` disables the alpha term; ``gamma=0, alpha=None`` equals ``MaskedBCELoss``.
    """

    def __init__(self, gamma: float = 2.0, alpha: Optional[float] = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        self.gamma = float(gamma)
        self.alpha = alpha

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, uncertain: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        _check_shapes(logits, target)
        observed = ~torch.isnan(target)  # (B, K)
        y = torch.where(observed, target, torch.zeros_like(target)).to(logits.dtype)
        ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")  # (B, K)
        p = torch.sigmoid(logits)
        p_t = y * p + (1 - y) * (1 - p)
        cell = ce * (1 - p_t).clamp(min=0).pow(self.gamma) if self.gamma != 0 else ce
        if self.alpha is not None:
            cell = (y * self.alpha + (1 - y) * (1 - self.alpha)) * cell
        return _masked_mean(cell, observed)


def multiclass_classes(target: torch.Tensor, uncertain: Optional[torch.Tensor]) -> torch.Tensor:
    """U-MultiClass training class of each cell (B, K) long: 2 where uncertain, else 1 if the target
    is >= 0.5, else 0; -1 (ignored) where the target is NaN and the cell is not uncertain."""
    if uncertain is None:
        uncertain = torch.zeros_like(target, dtype=torch.bool)
    uncertain = uncertain.to(torch.bool)
    known = ~torch.isnan(target)
    cls = torch.where(known, (target >= 0.5).long(), torch.full_like(target, -1, dtype=torch.long))
    return torch.where(uncertain, torch.full_like(cls, MULTICLASS_UNCERTAIN), cls)  # (B, K)


class MulticlassUncertaintyLoss(nn.Module):
    """CheXpert U-MultiClass: softmax cross-entropy over {negative, positive, uncertain} per pathology.

    logits (B, 3K) viewed as (B, K, 3); class 2 where ``uncertain``, else the target (0/1, soft values
    rounded at 0.5); cells that are NaN and not uncertain are ignored; mean over the remaining cells.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor, uncertain: Optional[torch.Tensor]) -> torch.Tensor:
        b, k = target.shape
        if logits.shape != (b, 3 * k):
            raise ValueError(f"multiclass logits must be (B, 3K) = {(b, 3 * k)}, got {tuple(logits.shape)}")
        cls = multiclass_classes(target, uncertain)  # (B, K) in {-1, 0, 1, 2}
        observed = cls >= 0
        cell = F.cross_entropy(logits.reshape(b * k, 3), cls.clamp(min=0).reshape(-1), reduction="none")
        return _masked_mean(cell.reshape(b, k), observed)


class OutputLayout:
    """Where each pathology's logits sit in the network output.

    ``multiclass[k]`` True: pathology k has three logits (negative, positive, uncertain), else one;
    columns follow pathology order. All-False is the plain (B, K) multi-label head, all-True the
    (B, 3K) U-MultiClass head of ``MulticlassUncertaintyLoss``.
    """

    def __init__(self, multiclass: "bool | list[bool] | tuple[bool, ...]", num_pathologies: int) -> None:
        flags = [bool(multiclass)] * num_pathologies if isinstance(multiclass, bool) else [bool(m) for m in multiclass]
        if len(flags) != num_pathologies:
            raise ValueError(f"multiclass has {len(flags)} flags for {num_pathologies} pathologies; give one per pathology")
        self.multiclass = flags
        widths = [3 if m else 1 for m in flags]
        self.start = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(int).tolist()  # (K,) first column
        self.num_outputs = int(sum(widths))
        self.binary_k = [k for k, m in enumerate(flags) if not m]
        self.multiclass_k = [k for k, m in enumerate(flags) if m]
        self._binary_cols = [self.start[k] for k in self.binary_k]
        self._multiclass_cols = [self.start[k] + c for k in self.multiclass_k for c in range(3)]

    @property
    def any_multiclass(self) -> bool:
        return bool(self.multiclass_k)

    def positive_column(self, k: int) -> int:
        """Column of pathology k's positive logit (the one Grad-CAM explains)."""
        return self.start[k] + (MULTICLASS_POS if self.multiclass[k] else 0)

    def binary_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, self._binary_cols]  # (B, K_binary)

    def multiclass_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, self._multiclass_cols]  # (B, 3 K_multiclass)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, num_outputs) logits -> (B, K) positive-class probabilities (multiclass: renormalised
        over positive and negative, the uncertain logit ignored)."""
        if logits.ndim != 2 or logits.shape[1] != self.num_outputs:
            raise ValueError(f"logits must be (B, {self.num_outputs}) for this layout, got {tuple(logits.shape)}")
        if not self.multiclass_k:
            return torch.sigmoid(logits)
        if not self.binary_k:
            return multiclass_positive_probability(logits)
        # a mix: one column per pathology, stacked (no in-place writes, so it also exports to ONNX)
        columns = [
            logits[:, s + MULTICLASS_POS] - logits[:, s + MULTICLASS_NEG] if m else logits[:, s]
            for s, m in zip(self.start, self.multiclass)
        ]
        return torch.sigmoid(torch.stack(columns, dim=1))  # (B, K)


class MixedPolicyLoss(nn.Module):
    """Per-pathology policies: ``binary_loss`` on the one-logit pathologies, U-MultiClass on the others.

    The two masked means are combined weighted by their observed cells, so the result equals
    ``binary_loss`` when no pathology is multiclass and ``MulticlassUncertaintyLoss`` when all are.
    """

    def __init__(self, binary_loss: Optional[nn.Module], layout: OutputLayout) -> None:
        super().__init__()
        if layout.binary_k and binary_loss is None:
            raise ValueError("a binary loss is needed for the pathologies whose policy is not multiclass")
        self.binary_loss = binary_loss if layout.binary_k else None
        self.multiclass_loss = MulticlassUncertaintyLoss()
        self.layout = layout

    def forward(self, logits: torch.Tensor, target: torch.Tensor, uncertain: Optional[torch.Tensor]) -> torch.Tensor:
        lay = self.layout
        total, cells = logits.new_zeros(()), 0
        if lay.binary_k:
            t = target[:, lay.binary_k]  # (B, K_binary)
            u = uncertain[:, lay.binary_k] if uncertain is not None else None
            n = (~torch.isnan(t)).sum()
            total, cells = total + self.binary_loss(lay.binary_logits(logits), t, u) * n, cells + n
        if lay.multiclass_k:
            t = target[:, lay.multiclass_k]  # (B, K_multiclass)
            u = uncertain[:, lay.multiclass_k] if uncertain is not None else None
            n = (multiclass_classes(t, u) >= 0).sum()
            total, cells = total + self.multiclass_loss(lay.multiclass_logits(logits), t, u) * n, cells + n
        return total / torch.as_tensor(cells).clamp(min=1)


def multiclass_positive_probability(logits: torch.Tensor) -> torch.Tensor:
    """P(positive | positive or negative) from (B, 3K) multiclass logits -> (B, K).

    Softmax over {negative, positive} only, i.e. ``sigmoid(z_pos - z_neg)``; the uncertain logit is ignored.
    """
    if logits.ndim != 2 or logits.shape[1] % 3 != 0:
        raise ValueError(f"multiclass logits must be (B, 3K), got {tuple(logits.shape)}")
    z = logits.reshape(logits.shape[0], -1, 3)  # (B, K, 3)
    return torch.sigmoid(z[..., MULTICLASS_POS] - z[..., MULTICLASS_NEG])  # (B, K)


def probabilities(logits: torch.Tensor, multiclass: "bool | list[bool] | tuple[bool, ...]" = False) -> torch.Tensor:
    """(B, K) positive-class probabilities: sigmoid, the renormalised multiclass positive, or per
    pathology when ``multiclass`` is a list of flags (see ``OutputLayout``)."""
    if isinstance(multiclass, bool):
        return multiclass_positive_probability(logits) if multiclass else torch.sigmoid(logits)
    return OutputLayout(multiclass, len(multiclass)).probabilities(logits)


def build_loss(factory: Callable[..., nn.Module], layout: OutputLayout, train_labels: np.ndarray) -> nn.Module:
    """The configured loss (`factory`, a Hydra partial) for a head laid out as `layout`.

    A factory with a `labels` parameter (`weighted_bce`) gets the training split's labels (N, K') of
    the pathologies it trains. Under per-pathology `multiclass` it trains only the one-logit
    pathologies, and ``MixedPolicyLoss`` adds the 3-way loss of the others.
    """
    binary = None
    if layout.binary_k:
        takes_labels = "labels" in inspect.signature(factory).parameters
        binary = factory(labels=train_labels[:, layout.binary_k]) if takes_labels else factory()
    if not layout.any_multiclass:
        log.info("Loss: %s", binary)
        return binary
    log.info("3-way output and MulticlassUncertaintyLoss for pathology columns %s; loss %s for %s",
             layout.multiclass_k, binary, layout.binary_k)
    return MixedPolicyLoss(binary, layout)
