"""The CUDA code paths (skipped without a GPU; CI has none): run them on a GPU machine with

    .venv/bin/python -m pytest -m gpu -p no:xdist tests/gpu

Mixed precision (bf16, fp16) with channels_last through the real training loop, the hardware
defaults on a real GPU (cuDNN autotuning on), device-side normalisation equal to the CPU path, torch.compile
(compiled == eager, and `module.compile=true` through chestx.train), NVML sampling for `chestx.perf parts=[epoch]`,
and a checkpoint written on the GPU scored on a CPU. Bounded to fit 4 minutes on one H200 with the benchmark in the
same device call: small models at 64 px, a few batches; the two compile tests share one compile cache (the same
ResNet-18 graphs at batch 16, bf16, channels_last), so the second can read the first's. The first H200 run took
more than 130 s for these tests, most of it compiling DenseNet121 at 224 px (../shared/device/README.md).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from chestx.data.images.read import load_grayscale
from chestx.models.compiling import compile_net
from chestx.data.loading.transforms import build_input_normalizer, build_transform
from chestx.inference.predictor import load_for_inference
from chestx.core.run_folder import read_predictions
from chestx.train import apply_device_defaults, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")]

GPU_RUN = ("data.image_size=64", "loader.batch_size=16", "loader.eval_batch_size=64", "trainer.max_epochs=1",
           "trainer.limit_train_batches=4", "logger=none", "clinical=none", "model=resnet18",
           "trainer.accelerator=gpu", "trainer.devices=1")


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory) -> Iterator[Path]:
    """One chestx cache folder for the compile tests of this module (the second reads the first's graphs)."""
    folder = tmp_path_factory.mktemp("chestx_cache")
    saved = {k: os.environ.get(k) for k in ("CHESTX_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    os.environ["CHESTX_CACHE_DIR"] = str(folder)
    for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        os.environ.pop(key, None)
    yield folder
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_channels_last_train_and_test(precision: str, compose, tmp_path: Path) -> None:
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    cfg = compose([*GPU_RUN, f"trainer.precision={precision}", "module.channels_last=true"], tmp_path)
    metrics = train(cfg)
    assert metrics["status"] == "ok" and np.isfinite(metrics["train/loss_epoch"])
    _, probs, _, _ = read_predictions(tmp_path / "predictions.csv")
    assert probs.shape == (metrics["n_test"], 14) and np.isfinite(probs).all()
    assert json.loads((tmp_path / "metrics.json").read_text())["machine"]["gpu"]


def test_defaults_on_a_real_gpu(compose, tmp_path: Path) -> None:
    cfg = compose(["data=nih", "data.root=/data"], tmp_path)
    apply_device_defaults(cfg)
    expected = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    assert cfg.trainer.precision == expected and cfg.module.channels_last and cfg.loader.pin_memory
    assert cfg.loader.num_workers >= 1
    assert cfg.trainer.benchmark is True and cfg.module.compile is False  # cuDNN autotuning; compile not measured yet


@pytest.mark.parametrize("normalization", ["imagenet", "per_image", "none"])
def test_device_normalisation_on_the_gpu_equals_the_cpu_path(sample_root: Path, normalization: str) -> None:
    images = [load_grayscale(p) for p in sorted((sample_root / "images").glob("*.png"))[:16]]
    cpu = torch.stack([build_transform(224, train=False, normalization=normalization)(img) for img in images])
    pixels = torch.stack([build_transform(224, train=False, normalization=normalization, normalize=False)(img)
                          for img in images]).pin_memory().cuda(non_blocking=True)  # (16, 1, 224, 224) uint8
    gpu = build_input_normalizer(3, normalization).cuda()(pixels)
    assert (gpu.cpu() - cpu).abs().max().item() <= 1e-6


def test_torch_compile_matches_eager_under_bf16(compile_cache: Path) -> None:
    """chestx's compile path (nn.Module.compile, caches under the chestx cache) on ResNet-18 at 64 px, batch 16."""
    from chestx.models.backbones import create_backbone

    net = create_backbone("resnet18", num_outputs=14).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(16, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager_out = net(x)
        clock = compile_net(net, True)
        compiled_out = net(x)
        compiled_out.float().sum().backward()  # the backward graph compiles too
    assert torch.allclose(eager_out.float(), compiled_out.float(), atol=5e-2, rtol=5e-2)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    assert clock is not None and clock.seconds() > 0
    assert any((compile_cache / "torch_compile" / "inductor").rglob("*.py"))  # generated kernels kept for next time


def test_compiled_training_run_records_its_compile_time(compose, tmp_path: Path, compile_cache: Path) -> None:
    cfg = compose([*GPU_RUN, "module.compile=true", "trainer.limit_val_batches=2", "test=false"], tmp_path)
    metrics = train(cfg)
    assert metrics["status"] == "ok" and metrics["compile"] == "default" and metrics["compile_seconds"] > 0
    assert np.isfinite(metrics["train/loss_epoch"])


def test_nvml_samples_this_gpu() -> None:
    """What `chestx.perf parts=[epoch]` reads while a run trains: GPU busy % and memory (nvidia-ml-py)."""
    import time

    from chestx.throughput.monitor import Sampler

    sampler = Sampler(os.getpid(), interval=0.05).start()
    x = torch.randn(4096, 4096, device="cuda")
    deadline = time.time() + 1.0
    while time.time() < deadline:
        x = (x @ x).clamp_(-1, 1)
    torch.cuda.synchronize()
    samples = sampler.stop()
    assert samples.gpu_note is None, samples.gpu_note
    assert samples.gpu_busy and max(v for _, v in samples.gpu_busy) > 0
    assert samples.gpu_memory_mb and max(v for _, v in samples.gpu_memory_mb) > 64


def test_checkpoint_written_on_gpu_scores_the_same_on_cpu(compose, tmp_path: Path) -> None:
    cfg = compose([*GPU_RUN, "trainer.precision=32-true"], tmp_path)  # fp32: the CPU must match closely
    train(cfg)
    ids, probs, _, _ = read_predictions(tmp_path / "predictions.csv")
    predictor = load_for_inference(tmp_path / "checkpoints" / "best.ckpt", device="cpu")
    split = {p.name: p for p in (Path(cfg.data.root) / "images").glob("*.png")}
    images = [load_grayscale(split[name]) for name in ids["image_id"][:32]]
    on_cpu = predictor.probabilities(predictor.preprocess(images))  # (32, 14)
    np.testing.assert_allclose(on_cpu, probs[:32], atol=1e-3)


def test_nan_loss_on_the_gpu_is_found_without_a_sync_per_step(compose, tmp_path: Path, monkeypatch) -> None:
    """The loss is read back every NAN_CHECK_EVERY steps and at the epoch's end, naming the first bad step."""
    from chestx.models import losses
    from chestx.models.module import NaNLossError

    forward = losses.MaskedBCELoss.forward
    calls = {"n": 0}

    def nan_from_step_2(self, logits, target, uncertain):
        calls["n"] += 1
        value = forward(self, logits, target, uncertain)
        return value * torch.tensor(float("nan"), device=value.device) if calls["n"] >= 3 else value

    monkeypatch.setattr(losses.MaskedBCELoss, "forward", nan_from_step_2)
    with pytest.raises(NaNLossError, match="global step 2"):
        train(compose([*GPU_RUN, "callbacks=none", "trainer.precision=32-true"], tmp_path))
