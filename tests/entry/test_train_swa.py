"""swa=default: Lightning's StochasticWeightAveraging in a real tiny run; the tested checkpoint (swa.ckpt) holds the
averaged weights that Lightning put into the model (the BatchNorm pass's epoch), not any epoch's trained weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chestx.core.checkpoint_io import load_checkpoint


@pytest.mark.slow
def test_swa_tests_the_averaged_weights(compose, tiny_overrides, tmp_path: Path) -> None:
    from chestx.train import train

    every = tmp_path / "every_epoch"
    metrics = train(compose([
        *tiny_overrides, "model=resnet18", "trainer.max_epochs=3", "swa=default", "swa.swa_epoch_start=1",
        "subgroups=none", "callbacks.early_stopping=null",
        "+callbacks.every._target_=lightning.pytorch.callbacks.ModelCheckpoint", f"+callbacks.every.dirpath={every}",
        "+callbacks.every.filename='e{epoch}'", "+callbacks.every.save_top_k=-1", "+callbacks.every.monitor=null",
        "+callbacks.every.auto_insert_metric_name=false", "+callbacks.every.enable_version_counter=false",
    ], tmp_path / "run"))
    assert metrics["swa"] is True and metrics["best_checkpoint"].endswith("checkpoints/swa.ckpt")
    swa = load_checkpoint(Path(metrics["best_checkpoint"]))["state_dict"]
    # the BatchNorm epoch (e3) runs no optimiser step: its weights are the averaged ones Lightning transferred
    ends = {e: load_checkpoint(every / f"e{e}.ckpt")["state_dict"] for e in (0, 1, 2, 3)}
    convs = [k for k in swa if k.startswith("net.") and k.endswith("conv1.weight")]
    assert convs
    for key in convs:
        torch.testing.assert_close(swa[key], ends[3][key])
        assert all(not torch.allclose(swa[key], ends[e][key]) for e in (0, 1, 2))  # averaged, not one epoch's
    assert (tmp_path / "run" / "predictions.csv").is_file()
