"""Fast by default on a GPU, fp32 on a CPU: the settings left null are filled from the hardware, faked here
(precision, channels_last, loader workers, pinned memory, cuDNN autotuning, torch.compile)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from chestx.core.hardware import resolve_device_defaults
from chestx.train import apply_device_defaults


def test_cuda_with_bf16() -> None:
    d = resolve_device_defaults("auto", 1, cuda_available=True, bf16_supported=True, gpu_count=1, cores=16)
    assert (d.precision, d.channels_last, d.num_workers, d.pin_memory) == ("bf16-mixed", True, 15, True)
    assert (d.benchmark, d.compile) == (True, False) and "cuDNN autotuning" in d.reason


@pytest.mark.parametrize(("deterministic", "benchmark"), [(False, True), (None, True), (True, False), ("warn", False)])
def test_cudnn_autotuning_gives_way_to_deterministic(deterministic, benchmark: bool) -> None:
    """PyTorch ignores cudnn.deterministic while cudnn.benchmark is on, so trainer.deterministic turns it off."""
    d = resolve_device_defaults("gpu", 1, cuda_available=True, bf16_supported=True, gpu_count=1, cores=16,
                                deterministic=deterministic)
    assert d.benchmark is benchmark


def test_cuda_without_bf16_uses_fp16() -> None:
    d = resolve_device_defaults("gpu", 1, cuda_available=True, bf16_supported=False, gpu_count=1, cores=8)
    assert d.precision == "16-mixed" and d.num_workers == 7 and "fp16" in d.reason


@pytest.mark.parametrize(("devices", "workers"), [(-1, 3), ("auto", 3), (2, 7), ("2", 7), ([0, 1, 2, 3], 3),
                                                  ("0,1", 7)])
def test_loader_workers_share_the_cores_between_gpu_processes(devices, workers: int) -> None:
    d = resolve_device_defaults("gpu", devices, cuda_available=True, bf16_supported=True, gpu_count=4, cores=16)
    assert d.num_workers == workers


@pytest.mark.parametrize("accelerator", ["cpu", "auto"])
def test_cpu_stays_fp32(accelerator: str) -> None:
    d = resolve_device_defaults(accelerator, 1, cuda_available=False, cores=2)
    assert (d.precision, d.channels_last, d.num_workers, d.pin_memory) == ("32-true", False, 1, False)
    assert (d.benchmark, d.compile) == (False, False)
    assert resolve_device_defaults("cpu", 1, cuda_available=True, cores=32).num_workers == 4  # half, at most 4
    assert resolve_device_defaults("cpu", 1, cuda_available=True, cores=32).precision == "32-true"


@pytest.fixture
def fake_cuda(monkeypatch) -> None:
    """A machine with 2 bf16 GPUs and 16 cores, as far as the device query can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr("chestx.core.hardware.cores_available", lambda: 16)


def test_train_config_on_a_gpu_machine(compose, tmp_path: Path, fake_cuda, caplog) -> None:
    caplog.set_level(logging.INFO, logger="chestx.core.hardware")
    cfg = compose(["data=nih", "data.root=/data"], tmp_path)
    filled = apply_device_defaults(cfg)
    assert filled == {"trainer.precision": "bf16-mixed", "module.channels_last": True, "loader.num_workers": 15,
                      "loader.pin_memory": True, "trainer.benchmark": True, "module.compile": False}
    assert cfg.trainer.benchmark is True and cfg.module.compile is False
    assert cfg.trainer.precision == "bf16-mixed" and cfg.module.channels_last and cfg.loader.num_workers == 15
    assert "Defaults from the hardware (CUDA GPU (bf16)" in caplog.text
    ddp = compose(["data=nih", "data.root=/data", "trainer=ddp"], tmp_path)  # devices=-1: both GPUs
    apply_device_defaults(ddp)
    assert ddp.loader.num_workers == 7 and ddp.trainer.precision == "bf16-mixed"
    exact = compose(["data=nih", "data.root=/data", "trainer.deterministic=true"], tmp_path)
    apply_device_defaults(exact)
    assert exact.trainer.benchmark is False


def test_every_item_can_still_be_set(compose, tmp_path: Path, fake_cuda) -> None:
    cfg = compose(["data=nih", "data.root=/data", "trainer.precision=16-mixed", "module.channels_last=false",
                   "loader.num_workers=3", "loader.pin_memory=false", "trainer.benchmark=false",
                   "module.compile=max-autotune"], tmp_path)
    assert apply_device_defaults(cfg) == {}
    assert (cfg.trainer.precision, cfg.module.channels_last, cfg.loader.num_workers, cfg.loader.pin_memory) == (
        "16-mixed", False, 3, False)
    assert cfg.trainer.benchmark is False and cfg.module.compile == "max-autotune"
    cpu = compose(["data=nih", "data.root=/data", "trainer=cpu"], tmp_path)  # explicit CPU on a GPU machine
    apply_device_defaults(cpu)
    assert cpu.trainer.precision == "32-true" and not cpu.module.channels_last and not cpu.data.pin_memory


def test_train_config_on_this_cpu(compose, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose(["data=nih", "data.root=/data"], tmp_path)
    apply_device_defaults(cfg)
    assert cfg.trainer.precision == "32-true" and cfg.module.channels_last is False and cfg.loader.pin_memory is False
    assert 1 <= cfg.loader.num_workers <= 4
    assert cfg.trainer.benchmark is False and cfg.module.compile is False
