"""What a running training process uses, sampled from outside it: GPU busy % and GPU memory (NVML), and the host
memory of the process and its loader workers (Linux /proc).

NVML through nvidia-ml-py (`import pynvml`, NVIDIA's maintained binding; docs: NVML API reference,
`nvmlDeviceGetUtilizationRates` = percent of the last sample period during which a kernel ran,
`nvmlDeviceGetMemoryInfo` = memory in use on the device by every process). Without the package or a GPU the
GPU columns are None, and `gpu_note` says why. Host memory: the proportional set size (PSS, /proc/<pid>/smaps_rollup)
summed over the process tree, so that pages the loader workers share with the main process (the memory-mapped
pixel cache, the forked interpreter) count once; and the resident set of the main process alone.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc/<pid>/task/*/children)."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                out += [int(c) for c in handle.read().split()]
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += _children(current)
    return tree


def _status_kib(pid: int, key: str, name: str = "status") -> int | None:
    try:
        with open(f"/proc/{pid}/{name}") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def tree_pss_mb(pid: int) -> float | None:
    """Proportional set size of `pid` and its descendants, MB (shared pages split between their users)."""
    values = [_status_kib(p, "Pss:", "smaps_rollup") for p in process_tree(pid)]
    known = [v for v in values if v is not None]
    return sum(known) / 1024 if known else None


def _nvml(device_index: int) -> tuple[Any, Any, str | None]:
    """(pynvml module, device handle, None), or (None, None, why not)."""
    try:
        import pynvml
    except ImportError:
        return None, None, "not measured: nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(device_index), None
    except Exception as error:  # pynvml.NVMLError: no driver, no GPU
        return None, None, f"not measured: no GPU ({type(error).__name__}: {error})"


def visible_gpu_index() -> int:
    """NVML's index of the first GPU CUDA sees (CUDA_VISIBLE_DEVICES=3,1 -> 3); NVML ignores that variable."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


@dataclass
class Samples:
    """Time series of one sampled run: (time.time(), value) pairs per quantity."""

    gpu_busy: list[tuple[float, float]] = field(default_factory=list)  # percent
    gpu_memory_mb: list[tuple[float, float]] = field(default_factory=list)
    host_pss_mb: list[tuple[float, float]] = field(default_factory=list)  # process tree
    main_rss_mb: list[tuple[float, float]] = field(default_factory=list)  # the training process alone
    gpu_note: str | None = None  # why the GPU columns are empty

    @staticmethod
    def values(series: list[tuple[float, float]], start: float | None = None, end: float | None = None) -> list[float]:
        """The values sampled between `start` and `end` (e.g. during the fit)."""
        return [v for t, v in series if (start is None or t >= start) and (end is None or t <= end)]


class Sampler:
    """Samples `pid` in a thread until `stop()`: the GPU every `interval` seconds, host memory (PSS over the process
    tree, which costs the kernel a page-table walk per process) every `host_every` samples."""

    def __init__(self, pid: int, interval: float = 0.25, host_every: int = 4, gpu: bool = True) -> None:
        self.pid, self.interval, self.host_every = pid, interval, max(1, host_every)
        self.samples = Samples()
        self._nvml, self._handle, note = _nvml(visible_gpu_index()) if gpu else (None, None, "not measured: no GPU")
        self.samples.gpu_note = note
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chestx-perf-sampler", daemon=True)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def _take(self, tick: int) -> None:
        s, now = self.samples, time.time()
        if self._nvml is not None:
            try:
                s.gpu_busy.append((now, float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)))
                s.gpu_memory_mb.append((now, self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20))
            except Exception as error:  # pynvml.NVMLError mid-run: keep the host figures
                s.gpu_note = f"NVML failed during the run: {error}"
                self._nvml = None
        if tick % self.host_every == 0:
            pss, rss = tree_pss_mb(self.pid), _status_kib(self.pid, "VmRSS:")
            if pss is not None:
                s.host_pss_mb.append((now, pss))
            if rss is not None:
                s.main_rss_mb.append((now, rss / 1024))

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            self._take(tick)
            tick += 1
            self._stop.wait(self.interval)

    def stop(self) -> Samples:
        self._stop.set()
        self._thread.join()
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # pynvml.NVMLError: nothing left to release
                pass
        return self.samples
