"""init_from (chestx.models.warm_start): a checkpoint's backbone weights, the classification head left as built."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chestx.core.checkpoint_io import CheckpointError
from chestx.models.backbones import create_backbone
from chestx.models.warm_start import head_state_names, load_backbone_weights


def _save(net: torch.nn.Module, path: Path) -> Path:
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "chestx": {"model": {"name": "x"}}}, path)
    return path


def test_backbone_loaded_and_head_reset(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_backbone("test_resnet", num_outputs=3, in_chans=3)
    torch.manual_seed(1)
    target = create_backbone("test_resnet", num_outputs=3, in_chans=3)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    head = load_backbone_weights(target, _save(source, tmp_path / "best.ckpt"))
    assert head == sorted(head_state_names(target)) and head == ["fc.bias", "fc.weight"]
    for key, value in target.state_dict().items():
        expected = fresh[key] if key in head else source.state_dict()[key]
        torch.testing.assert_close(value, expected, msg=key)
    assert not torch.equal(fresh["fc.weight"], source.state_dict()["fc.weight"])
    load_backbone_weights(target, tmp_path / "best.ckpt", reset_head=False)  # the head too
    torch.testing.assert_close(target.state_dict()["fc.weight"], source.state_dict()["fc.weight"])


def test_another_architecture_is_refused(tmp_path: Path) -> None:
    ckpt = _save(create_backbone("test_resnet", num_outputs=3, in_chans=1), tmp_path / "gray.ckpt")
    with pytest.raises(CheckpointError, match="does not fit this network.*same model.name and in_chans"):
        load_backbone_weights(create_backbone("test_resnet", num_outputs=3, in_chans=3), ckpt)
