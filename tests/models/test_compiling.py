"""`module.compile`: the setting's values, where the compile caches go, and a real compiled `chestx.train` run on the
CPU whose second run in the same cache folder reads the cache."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chestx.models.backbones import create_backbone
from chestx.models.compiling import COMPILE_MODES, compile_mode, use_compile_caches
from chestx.models.losses import MaskedBCELoss
from chestx.models.module import ChestXModule


def test_settings_map_to_torch_compile_modes() -> None:
    assert [compile_mode(v) for v in (None, False, "false", True, "true")] == [None, None, None, "default", "default"]
    assert [compile_mode(m) for m in COMPILE_MODES] == list(COMPILE_MODES)
    with pytest.raises(ValueError, match=r"module.compile='fast': use false, true or one of \['default'"):
        compile_mode("fast")


def test_caches_go_under_the_chestx_cache_unless_the_user_chose(tmp_path: Path, monkeypatch) -> None:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir as inductor_default

    monkeypatch.setenv("CHESTX_CACHE_DIR", str(tmp_path / "chestx"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.path.abspath(inductor_default()))  # what torch sets by itself
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    assert use_compile_caches() == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "chestx" / "torch_compile" / "inductor"),
                                    "TRITON_CACHE_DIR": str(tmp_path / "chestx" / "torch_compile" / "triton")}
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # the user's: kept
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "my_triton"))
    assert use_compile_caches() == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "mine"),
                                    "TRITON_CACHE_DIR": str(tmp_path / "my_triton")}


def _module(compile_setting) -> ChestXModule:
    net = create_backbone("resnet18", num_outputs=14)
    return ChestXModule(net, [f"p{i}" for i in range(14)], MaskedBCELoss(),
                        functools.partial(torch.optim.Adam, lr=1e-3), compile=compile_setting)


@pytest.mark.parametrize("setting", [None, False])
def test_null_and_false_leave_the_backbone_eager(setting) -> None:
    module = _module(setting)
    assert module.compile_mode is None and module.compile_seconds() is None
    assert module.net._compiled_call_impl is None  # nn.Module.compile was not called


def test_compiled_backbone_keeps_its_state_dict_keys(tmp_path: Path, monkeypatch) -> None:
    """nn.Module.compile in place: checkpoints load into an uncompiled network (inference, Grad-CAM, ONNX)."""
    monkeypatch.setenv("CHESTX_CACHE_DIR", str(tmp_path))
    compiled, eager = _module("max-autotune-no-cudagraphs"), create_backbone("resnet18", num_outputs=14)
    assert compiled.compile_mode == "max-autotune-no-cudagraphs" and compiled.net._compiled_call_impl is not None
    assert list(compiled.net.state_dict()) == list(eager.state_dict())
    assert compiled.compile_seconds() is None  # nothing compiled before the first batch


@pytest.mark.slow
def test_compiled_training_run_records_compile_time_into_the_chestx_cache(repo_root: Path, tmp_path: Path) -> None:
    """`python -m chestx.train module.compile=true` on timm's test_resnet at 32 px (two training steps, no evaluation,
    so one training graph compiles): the run finishes, metrics.json has the compile seconds, the inductor cache is
    under the chestx cache folder (what lets a sweep's next job skip the work; measured on the 2-core EPYC: 51-110 s
    cold, 4-5 s warm, `chestx.perf parts=[epoch] epoch_runs=2` measures it for a real backbone)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    env["CHESTX_CACHE_DIR"] = str(tmp_path / "cache")
    out = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "chestx.train", "model=timm", "model.name=test_resnet",
                    "data.image_size=32", "loader.batch_size=4", "loader.eval_batch_size=8", "loader.num_workers=0",
                    "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=0",
                    "trainer.accelerator=cpu", "test=false", "logger=none", "callbacks=none", "clinical=none",
                    "subgroups=none", "scheduler=none", "module.compile=true", f"hydra.run.dir={out}"],
                   cwd=repo_root, env=env, check=True, capture_output=True, timeout=900)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["compile"] == "default"
    assert metrics["compile_seconds"] > 0
    assert "torch.compile (mode default)" in (out / "train.log").read_text()
    inductor = tmp_path / "cache" / "torch_compile" / "inductor"
    assert inductor.is_dir() and any(p.is_file() for p in inductor.rglob("*"))
