"""module.freeze=backbone (linear probe): the backbone's weights and batch-norm buffers are bit-identical after a
probe run, the head trains, the checkpoint records what was frozen, and epochs after the first use cached features."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chestx.core.checkpoint_io import load_checkpoint
from chestx.train import build


def _state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.slow
def test_probe_keeps_backbone_weights_and_bn_buffers_bit_identical(compose, tiny_overrides, tmp_path: Path) -> None:
    cfg = compose([*tiny_overrides, "model=resnet18", "experiment=linear_probe", "trainer.max_epochs=2",
                   "data.image_size=32", "trainer.limit_train_batches=1.0", "loader.batch_size=64", "loader.pin_memory=false",
                   "trainer.limit_val_batches=1"], tmp_path)
    _, datamodule, module, trainer = build(cfg, tmp_path)
    before = _state(module.net)
    head = {f"fc.{k}" for k in module.net.get_classifier().state_dict()}
    bn_buffers = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert bn_buffers and module.feature_cache == {}
    trainer.fit(module, datamodule=datamodule)
    after = module.net.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert set(changed) == head, changed  # only the head moved: every other weight and every BN buffer is equal
    assert not any(m.training for m in module.net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    n_train = len(datamodule.datasets["train"])
    assert sum(stage == "train" for stage, _ in module.feature_cache) == n_train  # every training image once
    assert module.feature_cache_hits >= n_train  # epoch 2 ran on cached features (val's second pass adds more)

    info = load_checkpoint(Path(trainer.checkpoint_callback.last_model_path))["chestx"]["freeze"]
    assert info["frozen"] == "backbone" and info["feature_cache"] is True
    assert info["trainable_parameters"] == sum(p.numel() for p in module.net.get_classifier().parameters())


def test_probe_cache_refuses_random_augmentation(compose, tiny_overrides, tmp_path: Path) -> None:
    cfg = compose([*tiny_overrides, "loader.pin_memory=false", "module.freeze=backbone", "module.cache_features=true"], tmp_path)
    with pytest.raises(ValueError, match="data.augment"):
        build(cfg, tmp_path)


def test_unknown_freeze_value_names_the_key(compose, tiny_overrides, tmp_path: Path) -> None:
    cfg = compose([*tiny_overrides, "loader.pin_memory=false", "module.freeze=encoder"], tmp_path)
    with pytest.raises(Exception, match="module.freeze='encoder'"):
        build(cfg, tmp_path)
