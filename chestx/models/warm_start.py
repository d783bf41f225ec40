"""Start a network from another chestx run's checkpoint: its backbone weights, the classification head reset.

The second stage of LibAUC's two-stage recipe (examples/scripts/05_optimizing_auroc_loss_with_densenet121_on_
chexpert.py) loads the cross-entropy model's weights without ``classifier.weight`` / ``classifier.bias``
(``load_state_dict(strict=False)``), so the head keeps the fresh initialisation of the new network. Here the head is
the backbone's ``get_classifier()`` (timm's API, which every chestx backbone has), found by identity, so the rule
holds for any architecture. The file is read without running code (``chestx.core.checkpoint_io``).
"""
from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from chestx.core.checkpoint_io import CheckpointError, load_checkpoint

__all__ = ["head_state_names", "load_backbone_weights"]

log = logging.getLogger(__name__)

NET_PREFIX = "net."  # ChestXModule keeps the backbone as `net`


def head_state_names(net: nn.Module) -> set[str]:
    """State-dict keys of the network's classification head (``get_classifier()``)."""
    if not hasattr(net, "get_classifier"):
        raise ValueError(f"{type(net).__name__} has no get_classifier(): its head cannot be told apart to reset it")
    head = net.get_classifier()
    tensors = {id(t) for t in (*head.parameters(), *head.buffers())}
    return {name for name, t in net.state_dict(keep_vars=True).items() if id(t) in tensors}


def load_backbone_weights(net: nn.Module, ckpt: str | Path, reset_head: bool = True, trust: bool = False) -> list[str]:
    """Load the `net.*` weights of a chestx Lightning checkpoint into `net`; with `reset_head` all but the head's,
    which keep their current (fresh) values. Returns the keys left at their current values. Any other missing or
    unexpected key, or a shape mismatch, is an error: the checkpoint is of another architecture."""
    state = load_checkpoint(ckpt, trust=trust).get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{ckpt} has no state_dict: pass a chestx training checkpoint (checkpoints/best.ckpt)")
    weights = {k[len(NET_PREFIX):]: v for k, v in state.items() if k.startswith(NET_PREFIX)}
    head = head_state_names(net) if reset_head else set()
    kept = {k: v for k, v in weights.items() if k not in head}
    own = net.state_dict()
    wrong = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in kept.items() if k in own
             and tuple(v.shape) != tuple(own[k].shape)]
    missing, unexpected = net.load_state_dict(kept, strict=False) if not wrong else ([], [])
    missing = sorted(set(missing) - head)
    if wrong or missing or unexpected:
        raise CheckpointError(f"{ckpt} does not fit this network ({type(net).__name__}): shapes {wrong[:3]}, "
                              f"missing {missing[:3]}, unexpected {list(unexpected)[:3]}; init_from needs a checkpoint "
                              "of the same model.name and in_chans")
    log.info("Backbone weights from %s (%d tensors)%s", ckpt, len(kept),
             f"; head reset ({', '.join(sorted(head))})" if head else "")
    return sorted(head)
