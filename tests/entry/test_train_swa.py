"""swa=default: Lightning's StochasticWeightAveraging in a real tiny run; the tested checkpoint (swa.ckpt) holds the
arithmetic mean of the weights Lightning averaged, with BatchNorm statistics recomputed for those weights.

Which weights Lightning averages (lightning/pytorch/callbacks/stochastic_weight_avg.py, Lightning 2.6): with
`swa_epoch_start=1` (an int, 1-based) `swa_start` is epoch 0 and `swa_end` is `max_epochs - 1` = 2. In
`on_train_epoch_start` of every epoch e with swa_start <= e <= swa_end it calls `update_parameters` with the model's
weights at that moment, i.e. before epoch e trains: the initial weights (e = 0), those after epoch 0 and those after
epoch 1. The weights after the last epoch (2) are never averaged. A model with BatchNorm gets one more epoch (3): at
its start the average is copied into the model's parameters, the BatchNorm running statistics are reset (momentum
None: a cumulative mean), and one pass over the training batches without an optimiser step recomputes them.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chestx.core.checkpoint_io import load_checkpoint

AVERAGED_EPOCH_STARTS = (0, 1, 2)  # epochs whose start-of-epoch weights update_parameters averages (see above)
BATCHNORM_EPOCH = 3  # max_epochs: the extra epoch that recomputes the BatchNorm statistics


@pytest.mark.slow
def test_swa_checkpoint_is_the_mean_of_the_averaged_epochs(compose, tiny_overrides, tmp_path: Path,
                                                           monkeypatch) -> None:
    from lightning.pytorch.callbacks import StochasticWeightAveraging

    from chestx.train import train

    # the model's state at the start of every epoch, taken just before Lightning's own hook runs (which is where it
    # calls update_parameters, and, at the BatchNorm epoch, swaps the average in)
    starts: dict[int, dict[str, torch.Tensor]] = {}
    parameters: set[str] = set()
    hook = StochasticWeightAveraging.on_train_epoch_start

    def recording(self, trainer, pl_module) -> None:
        starts.setdefault(trainer.current_epoch, {k: v.detach().clone() for k, v in pl_module.state_dict().items()})
        parameters.update(name for name, p in pl_module.named_parameters() if p.requires_grad)
        hook(self, trainer, pl_module)

    monkeypatch.setattr(StochasticWeightAveraging, "on_train_epoch_start", recording)
    metrics = train(compose([*tiny_overrides, "model=resnet18", "trainer.max_epochs=3", "swa=default",
                             "swa.swa_epoch_start=1", "subgroups=none", "callbacks.early_stopping=null"],
                            tmp_path / "run"))
    assert metrics["swa"] is True and metrics["best_checkpoint"].endswith("checkpoints/swa.ckpt")
    assert sorted(starts) == [*AVERAGED_EPOCH_STARTS, BATCHNORM_EPOCH]
    swa = load_checkpoint(Path(metrics["best_checkpoint"]))["state_dict"]

    # every trainable weight (convolutions, the classifier, BatchNorm's affine terms) is the arithmetic mean
    assert any(k.endswith("conv1.weight") for k in parameters) and any(k.endswith("fc.weight") for k in parameters)
    last_trained = starts[BATCHNORM_EPOCH]  # the weights after the last training epoch
    for key in sorted(parameters):
        stack = torch.stack([starts[e][key].double() for e in AVERAGED_EPOCH_STARTS])  # (3, *shape)
        torch.testing.assert_close(swa[key].double(), stack.mean(0), rtol=0, atol=1e-6, msg=key)
    # the test can tell: the epochs' weights differ far beyond the tolerance (another set of epochs would fail)
    conv = next(k for k in sorted(parameters) if k.endswith("conv1.weight"))
    other = torch.stack([starts[e][conv].double() for e in (1, 2, 3)]).mean(0)
    assert (swa[conv].double() - other).abs().max() > 1e-4
    assert all((swa[conv] - starts[e][conv]).abs().max() > 1e-4 for e in starts)

    # BatchNorm statistics recomputed for the averaged weights: one pass over the epoch's 2 batches (the counter was
    # reset), so they differ from the last trained epoch's
    stats = [k for k in swa if k.endswith(("running_mean", "running_var"))]
    assert stats
    for key in stats:
        assert (swa[key] - last_trained[key]).abs().max() > 1e-6, key
    counts = {int(swa[k]) for k in swa if k.endswith("num_batches_tracked")}
    assert counts == {2}, counts  # trainer.limit_train_batches=2 (tiny_overrides); trained epochs counted 6
    assert {int(last_trained[k]) for k in last_trained if k.endswith("num_batches_tracked")} == {6}
    assert (tmp_path / "run" / "predictions.csv").is_file()
