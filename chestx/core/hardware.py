"""The hardware: what a run or a measurement ran on, and the fast defaults it implies.

`machine()`: CPU model, cores, instruction set torch dispatches to, GPU, versions. Figures depend on the machine
(CPU kernels differ between instruction sets, so even one seed's predictions differ between an Intel and an AMD
CPU): every benchmark, report and perf table states it.

`resolve_device_defaults()`: what a run uses for the settings left `null` in its config. On a CUDA GPU: mixed
precision (bf16 where the GPU has it, else fp16), channels_last, one loader worker per core available to each GPU
process (one core left for the process itself), pinned memory, cuDNN autotuning (`trainer.benchmark`: the input
size is fixed, so the fastest convolution algorithms are chosen once; off under `trainer.deterministic`, which
PyTorch would otherwise ignore). On a CPU: fp32, contiguous tensors, half the cores for loader workers (at most 4,
the other half computes), no pinned memory, no cuDNN. `module.compile` (torch.compile) stays off on both until a
measurement shows it pays back within a run (`COMPILE_DEFAULT`). Every value set in the config wins;
`chestx.train` logs what was chosen and why, and writes the resolved values into the run's config.yaml.
"""
from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass
from typing import Any, Sequence

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


def cores_available() -> int:
    """CPU cores this process may run on (the affinity mask: what SLURM or taskset granted)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def process_start_time() -> float | None:
    """When this process started, in seconds since the epoch (Linux /proc, 10 ms resolution), else None."""
    try:
        with open("/proc/self/stat") as handle:  # field 22, after the parenthesised command name: start in ticks
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as handle:  # seconds since boot, to 10 ms (/proc/stat's btime is whole seconds)
            boot = time.time() - float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    """CPU, usable cores, torch's CPU capability (e.g. AVX512 / AVX2), GPU, OS and library versions."""
    import torch

    cores = cores_available()
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


# ------------------------------------------------------------------ fast defaults from the hardware
log = logging.getLogger(__name__)

GPU_ACCELERATORS = ("gpu", "cuda")


@dataclass(frozen=True)
class DeviceDefaults:
    """The machine-dependent settings of one run, and the reason for them."""

    precision: str  # trainer.precision
    channels_last: bool  # module.channels_last
    num_workers: int  # loader.num_workers (DataLoader workers per training process)
    pin_memory: bool  # loader.pin_memory
    reason: str
    benchmark: bool = False  # trainer.benchmark (cuDNN autotuning)
    compile: bool | str = False  # module.compile (torch.compile: false, true or a mode)


# module.compile when left null, by device type: off until a measurement shows it pays back within a run.
# CPU (measured on a 2-core EPYC, tests/models/test_compiling.py): a cold compile of timm's tiny test_resnet took
# 50-110 s (4-5 s from a warm cache), evaluation compiling again; DenseNet121's is longer, against the ~140 training
# steps of `make train`. CUDA (not measured yet): the first H200 run spent more than 130 s in the gpu tests,
# most of it compiling DenseNet121 (../shared/device/README.md); at the 3,000 images/s target an NIH epoch lasts
# ~26 s, so a compile of that length pays back only over many epochs or from a warm cache. The measurement that
# decides: `python -m chestx.perf parts=[epoch] epoch_runs=2 "epoch_args=['module.compile=true']"` against the same
# without it (the second run reads the compile cache).
COMPILE_DEFAULT = {"cpu": False, "cuda": False}


def _processes_per_node(devices: int | str | Sequence[int] | None, gpu_count: int) -> int:
    """Training processes on this node: one per device in use."""
    if isinstance(devices, (list, tuple)):
        return max(1, len(devices))
    if devices in (None, "auto", -1, "-1"):
        return max(1, gpu_count)
    try:
        return max(1, int(devices))  # "2" from a command line, or 2
    except (TypeError, ValueError):  # "0,1": a device list as a string
        return max(1, len(str(devices).strip(",").split(",")))


def resolve_device_defaults(
    accelerator: str = "auto",
    devices: int | str | Sequence[int] | None = 1,
    cuda_available: bool | None = None,
    bf16_supported: bool | None = None,
    gpu_count: int | None = None,
    cores: int | None = None,
    deterministic: bool | str | None = False,
) -> DeviceDefaults:
    """Defaults for `accelerator`/`devices` on this machine; the keyword arguments fake the device query (tests).

    `deterministic` is `trainer.deterministic`: when true, cuDNN autotuning stays off (PyTorch ignores
    `cudnn.deterministic` while `cudnn.benchmark` is on).
    """
    import torch

    cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
    cores = cores_available() if cores is None else cores
    accelerator = str(accelerator).lower()
    gpu = accelerator in GPU_ACCELERATORS or (accelerator == "auto" and cuda_available)
    if not gpu:
        workers = max(1, min(4, cores // 2))
        return DeviceDefaults("32-true", False, workers, False,
                              f"{accelerator} accelerator on the CPU ({cores} cores): fp32, {workers} loader workers",
                              benchmark=False, compile=COMPILE_DEFAULT["cpu"])
    if bf16_supported is None:
        bf16_supported = bool(cuda_available and torch.cuda.is_bf16_supported())
    gpu_count = (torch.cuda.device_count() if cuda_available else 1) if gpu_count is None else gpu_count
    processes = _processes_per_node(devices, gpu_count)
    workers = max(1, cores // processes - 1)
    precision = "bf16-mixed" if bf16_supported else "16-mixed"
    benchmark = deterministic in (None, False)  # "warn" or true: deterministic algorithms asked for
    compile_ = COMPILE_DEFAULT["cuda"]
    return DeviceDefaults(
        precision, True, workers, True,
        f"CUDA GPU ({'bf16' if bf16_supported else 'no bf16: fp16'}), {processes} process(es) on {cores} cores: "
        f"{precision}, channels_last, {workers} loader workers per process, pinned memory, "
        + ("cuDNN autotuning" if benchmark else "no cuDNN autotuning (trainer.deterministic)")
        + f", torch.compile {'on' if compile_ else 'off'}",
        benchmark=benchmark, compile=compile_,
    )


# where each default goes in the train config
DEFAULT_KEYS: dict[str, str] = {
    "trainer.precision": "precision",
    "module.channels_last": "channels_last",
    "loader.num_workers": "num_workers",
    "loader.pin_memory": "pin_memory",
    "trainer.benchmark": "benchmark",
    "module.compile": "compile",
}


def fill_defaults(current: dict[str, Any], defaults: DeviceDefaults) -> dict[str, Any]:
    """The values for the keys of DEFAULT_KEYS that are None in `current` ({"trainer.precision": None, ...}).

    Keys absent from `current` or set there (by the user or a config) are left alone; what is filled
    in is logged with the reason.
    """
    filled = {key: getattr(defaults, field) for key, field in DEFAULT_KEYS.items()
              if key in current and current[key] is None}
    if filled:
        log.info("Defaults from the hardware (%s): %s", defaults.reason,
                 ", ".join(f"{k}={v}" for k, v in filled.items()))
    return filled
