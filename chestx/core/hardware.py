"""What a run or a measurement ran on: CPU model, cores, instruction set torch dispatches to, GPU, versions.

Figures depend on the machine (CPU kernels differ between instruction sets, so even one seed's
predictions differ between an Intel and an AMD CPU): every benchmark, report and perf table states it.
"""
from __future__ import annotations

import os
import platform
from typing import Any


ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY",
           "OMP_NUM_THREADS")


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` says."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU, usable cores, torch's CPU capability (e.g. AVX512 / AVX2), GPU, OS and library versions."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "host": platform.node(), "cpu": cpu_model(), "cores": cores,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        # instruction-set caps a user may set: they change which CPU kernels run, hence the numbers
        "isa_env": {k: os.environ[k] for k in ISA_ENV if k in os.environ},
    }
    if hasattr(os, "getloadavg"):
        info["load_avg_1min_at_start"] = round(os.getloadavg()[0], 2)
    return info


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: str = "cpu") -> bool:
    """Whether bfloat16 runs in hardware: the GPU's own check on CUDA, AVX512-BF16 / AMX-BF16 on a CPU
    (without them bf16 is emulated and far slower than fp32)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
