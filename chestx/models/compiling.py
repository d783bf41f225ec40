"""torch.compile of a backbone (`module.compile`): the mode, the caches that let the next run skip the work, and
how long compiling took.

`compile_net(net, setting)` compiles the network in place with `nn.Module.compile` (PyTorch's recommended form:
`state_dict` keys stay those of the plain network, so checkpoints load into an uncompiled one for inference,
Grad-CAM and ONNX export). Compilation itself happens lazily, at the first forward of each kind (training,
evaluation; and once more when the batch size changes, after which the batch dimension is dynamic).

Caches: TorchInductor keeps compiled graphs (FX graph cache, AOTAutograd cache, autotuning results) under
`TORCHINDUCTOR_CACHE_DIR` and Triton its kernels under `TRITON_CACHE_DIR`; both go under chestx's cache folder
(`$CHESTX_CACHE_DIR`, else `~/.cache/chestx`) / `torch_compile` unless the user set them, so the jobs of a sweep
compile each backbone once (on the 2-core EPYC: 51 s cold, 4 s warm for timm's test_resnet). Sources: PyTorch
docs "torch.compile" (modes: default, reduce-overhead = CUDA graphs, max-autotune, max-autotune-no-cudagraphs),
"Compile Time Caching in torch.compile" (the cache variables), `torch._dynamo.utils.get_compilation_metrics`
(one record per compiled graph, forward and backward, with its duration).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from torch import nn

from chestx.data.images.cache import default_cache_dir

log = logging.getLogger(__name__)

# `module.compile` string values: torch.compile's modes ("default" = true)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CACHE_VARIABLES = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}


def compile_mode(setting: bool | str | None) -> str | None:
    """`module.compile` -> the torch.compile mode to use, or None for no compile (null and false)."""
    if setting is None or setting is False:
        return None
    if setting is True:
        return "default"
    if isinstance(setting, str) and setting.lower() in ("false", "true"):
        return "default" if setting.lower() == "true" else None
    if setting not in COMPILE_MODES:
        raise ValueError(f"module.compile={setting!r}: use false, true or one of {list(COMPILE_MODES)} "
                         "(torch.compile's modes; reduce-overhead uses CUDA graphs)")
    return str(setting)


def _set_by_torch(variable: str, value: str) -> bool:
    """Whether `value` is what torch writes into `variable` itself when nobody set it: importing torch._inductor
    (timm -> torchvision -> torch._dynamo does) sets TORCHINDUCTOR_CACHE_DIR to /tmp/torchinductor_<user>, and
    Triton kernels get TRITON_CACHE_DIR=<that>/triton/<device>."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir as inductor_default
    except ImportError:
        return False
    inductor = os.path.abspath(inductor_default())
    if variable == "TORCHINDUCTOR_CACHE_DIR":
        return os.path.abspath(value) == inductor
    return os.path.dirname(os.path.abspath(value)) == os.path.join(inductor, "triton")


def use_compile_caches(base: Path | None = None) -> dict[str, str]:
    """Point TorchInductor's and Triton's caches under `base` (default: chestx's cache folder / torch_compile),
    each unless the user set it (a value torch set by itself, its /tmp default, counts as unset); returns the
    variables as they now are."""
    base = Path(base) if base is not None else default_cache_dir() / "torch_compile"
    for variable, folder in CACHE_VARIABLES.items():
        value = os.environ.get(variable)
        if not value or _set_by_torch(variable, value):
            os.environ[variable] = str(base / folder)
    return {variable: os.environ[variable] for variable in CACHE_VARIABLES}


class CompileClock:
    """Seconds torch spent compiling graphs since this clock started (forward and backward graphs of every
    recompile), from torch's own compilation records; None where this torch keeps none."""

    def __init__(self) -> None:
        self.started_us = int(time.time() * 1e6)

    def records(self) -> list:
        try:
            from torch._dynamo.utils import get_compilation_metrics
        except ImportError:  # a torch without compilation records
            return []
        return [m for m in get_compilation_metrics()
                if (getattr(m, "start_time_us", None) or getattr(m, "end_time_us", None) or 0) >= self.started_us]

    def seconds(self) -> float | None:
        records = self.records()
        if not records:
            return None
        return sum((getattr(m, "duration_us", None) or 0) for m in records) / 1e6


def compile_net(net: nn.Module, setting: bool | str | None) -> CompileClock | None:
    """Compile `net` in place as `module.compile` says (nothing for null / false); returns the clock of its
    compile time, or None when not compiled."""
    mode = compile_mode(setting)
    if mode is None:
        return None
    caches = use_compile_caches()
    net.compile(mode=None if mode == "default" else mode)
    log.info("torch.compile (mode %s) of the backbone: compiled at its first batches; caches %s", mode,
             ", ".join(f"{k}={v}" for k, v in caches.items()))
    return CompileClock()
