"""chestx.throughput.probe: probe vs fine-tune seconds per epoch through the real Lightning loop (tiny: 32 px)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chestx.throughput.probe import bench_probe, format_probe
from chestx.throughput.suite import check_targets


@pytest.mark.slow
def test_probe_epochs_after_the_first_skip_the_encoder(sample_root: Path, tmp_path: Path) -> None:
    files = sorted((sample_root / "images").glob("*.png"))[:8]
    result = bench_probe(files, "resnet18", 32, batch_size=8, batches=2, epochs=2, device=torch.device("cpu"),
                         cache_dir=tmp_path / "cache")
    for mode in ("finetune", "probe"):
        assert len(result[mode]["epoch_seconds"]) == 2 and all(s > 0 for s in result[mode]["epoch_seconds"])
    # the cached probe epoch trains a linear layer on 16 cached vectors; fine-tune runs ResNet-18 forward + backward
    assert result["finetune_over_probe_later"] > 1.0, result
    assert "PROBE vs FINE-TUNE" in "\n".join(format_probe(result))
    target = check_targets({"probe": result, "device": "cpu"})["probe_speedup_per_epoch_after_first"]
    assert target["value"] == result["finetune_over_probe_later"] and target["target"] == 10.0
