"""`chestx.perf parts=[epoch]`: one epoch of the simulated full NIH tree through a real `python -m chestx.train`.

The run is a subprocess, started as a user starts it, on the tree `scale.build_nih_tree` lays out (112,120 files
under NIH's names, hard links to the embedded sample) with NIH's real label file and official split. While it runs,
`monitor.Sampler` samples GPU busy % and GPU memory (NVML) and the host memory of the process and its loader
workers. Afterwards the phases come from the run's metrics.json ("phases", written by `chestx.train.run_summary`):

    process start -> first log        interpreter, imports, Hydra composing the config
    data set-up                       labels, file search, header check, split, pixel cache (built or reused)
    time to the first training batch  from process start: all of the above, model, trainer, loader workers
    fit                               first training batch -> end of fit (training and validation)
    whole process                     launch -> exit, as the parent saw it (with the test and the files)

and the run's own figures: training and inference images/s (`CostMonitor`), peak GPU memory (allocator), compile
time. `epoch_runs=2` runs it twice: the second run shows warm caches (pixel cache, torch.compile caches).
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from chestx.core.run_folder import METRICS_FILE
from chestx.throughput.monitor import Sampler, Samples
from chestx.throughput.scale import build_nih_tree

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parents[2]
OUTPUT_FILE = "perf_epoch_output.log"  # the subprocess's stdout and stderr, beside its run folder
# (key, label): the phase durations of the table, from `phase_seconds`
PHASES = (("startup_s", "process start -> first log"), ("data_setup_s", "data set-up"),
          ("to_first_batch_s", "time to the first training batch"), ("fit_s", "fit (first batch -> fit end)"),
          ("whole_process_s", "whole process (launch -> exit)"))


def epoch_command(root: Path, run_dir: Path, model: str, size: int, batch_size: int, eval_batch_size: int,
                  limit_batches: int | None, cache: bool, cache_dir: Path, accelerator: str,
                  args: Sequence[str] = ()) -> list[str]:
    """The `python -m chestx.train` command line of one measured epoch (`args` last: they win)."""
    limits = ([f"trainer.limit_{stage}_batches={int(limit_batches)}" for stage in ("train", "val", "test")]
              if limit_batches else [])
    return [sys.executable, "-m", "chestx.train", "data=nih", f"data.root={root}", f"model={model}",
            "model.pretrained=false", f"data.image_size={size}", f"loader.batch_size={batch_size}",
            f"loader.eval_batch_size={eval_batch_size}", f"data.cache={str(bool(cache)).lower()}",
            f"data.cache_dir={cache_dir}", "trainer.max_epochs=1", f"trainer.accelerator={accelerator}",
            "logger=none", "clinical=none", "subgroups=none", *limits, f"hydra.run.dir={run_dir}", *args]


def phase_seconds(phases: dict[str, float | None], launched: float, exited: float) -> dict[str, float | None]:
    """The durations of the table from the run's phase times (seconds since the epoch; None where a phase is missing)."""
    def between(a: float | None, b: float | None) -> float | None:
        return b - a if a is not None and b is not None else None

    return {"startup_s": between(phases.get("process_start"), phases.get("first_log")),
            "data_setup_s": between(phases.get("first_log"), phases.get("data_ready")),
            "to_first_batch_s": between(phases.get("process_start"), phases.get("first_batch")),
            "fit_s": between(phases.get("first_batch"), phases.get("fit_end")),
            "whole_process_s": exited - launched}


def _usage(samples: Samples, phases: dict[str, float | None]) -> dict[str, Any]:
    """GPU busy % (mean and median during the fit), peak GPU memory, peak host memory."""
    busy = samples.values(samples.gpu_busy, phases.get("first_batch"), phases.get("fit_end"))
    gpu_memory, pss, rss = (samples.values(s) for s in (samples.gpu_memory_mb, samples.host_pss_mb, samples.main_rss_mb))
    return {"gpu_busy_mean_pct": statistics.fmean(busy) if busy else None,
            "gpu_busy_median_pct": statistics.median(busy) if busy else None,
            "gpu_memory_peak_mb": max(gpu_memory) if gpu_memory else None, "gpu_samples": len(busy),
            "gpu_note": samples.gpu_note if not busy else None,
            "host_memory_peak_mb": max(pss) if pss else None, "main_process_rss_peak_mb": max(rss) if rss else None}


def run_epoch(command: list[str], run_dir: Path, gpu: bool, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one measured `chestx.train` and return its row (an `error` field when it failed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    output = run_dir.parent / f"{run_dir.name}_{OUTPUT_FILE}"
    log.info("epoch: %s", " ".join(command[1:]))
    with open(output, "w") as out:
        launched = time.time()
        process = subprocess.Popen(command, cwd=REPO_DIR, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        sampler = Sampler(process.pid, gpu=gpu).start()
        code = process.wait()
        exited = time.time()
        samples = sampler.stop()
    text = output.read_text(errors="replace")
    row: dict[str, Any] = {"command": command[1:], "run_dir": str(run_dir), "output": str(output), "returncode": code,
                           "cache_built": "Building the pixel cache" in text, "error": None}
    metrics_path = run_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    if code != 0 or metrics.get("status") != "ok":
        row["error"] = metrics.get("error") or "\n".join(text.strip().splitlines()[-5:]) or f"exit code {code}"
        log.warning("epoch run failed (exit code %d): %s", code, row["error"])
    phases = metrics.get("phases") or {}
    row.update({"phases": phases, **phase_seconds(phases, launched, exited), "launched": launched, "exited": exited,
                **{k: metrics.get(k) for k in ("model", "image_size", "n_train", "n_val", "n_test",
                                                "train_images_per_s", "infer_images_per_s", "peak_memory_mb",
                                                "compile", "compile_seconds", "epochs")},
                **_usage(samples, phases)})
    return row


def measure_epoch(nih_dir: Path, sample_images: Path, work: Path, size: int, model: str, batch_size: int,
                  limit_batches: int | None, cache: bool, cache_dir: Path, runs: int, device: str,
                  args: Sequence[str] = ()) -> dict[str, Any]:
    """`runs` measured epochs on the simulated tree under `work` (built there, or reused)."""
    root, tree_seconds = build_nih_tree(nih_dir, sample_images, work / "nih_full")
    gpu = device.startswith("cuda")
    rows = []
    for i in range(runs):
        run_dir = work / f"epoch_run{i + 1}"
        command = epoch_command(root, run_dir, model, size, batch_size, 2 * batch_size, limit_batches, cache,
                                cache_dir, "gpu" if gpu else "cpu", args)
        rows.append({"run": i + 1, **run_epoch(command, run_dir, gpu)})
    return {"images": 112120, "tree": str(root), "tree_seconds": tree_seconds, "size": size, "model": model,
            "batch_size": batch_size, "limit_batches": limit_batches, "cache": cache, "args": list(args), "runs": rows}


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def format_epoch(epoch: dict[str, Any]) -> list[str]:
    """The EPOCH section of the perf table: one column per run."""
    runs = epoch["runs"]
    limit = f"{epoch['limit_batches']} batches per stage" if epoch["limit_batches"] else "the whole epoch"
    lines = ["", f"EPOCH  (python -m chestx.train on the simulated full NIH tree, {epoch['images']:,} files; "
             f"{epoch['model']}, {epoch['size']} px, batch {epoch['batch_size']}, {limit}, "
             f"pixel cache {'on' if epoch['cache'] else 'off'}{', ' + ' '.join(epoch['args']) if epoch['args'] else ''})",
             f"{'':<36}" + "".join(f"{'run ' + str(r['run']):>14}" for r in runs)]

    def line(label: str, values: list[str]) -> str:
        return f"{label:<36}" + "".join(f"{v:>14}" for v in values)

    for key, label in PHASES:
        lines.append(line(label, [_fmt(r.get(key), ".1f", " s") for r in runs]))
    lines += [line("training images/s", [_fmt(r.get("train_images_per_s"), ",.0f") for r in runs]),
              line("inference images/s (test)", [_fmt(r.get("infer_images_per_s"), ",.0f") for r in runs]),
              line("GPU busy during the fit, mean", [_fmt(r.get("gpu_busy_mean_pct"), ".0f", " %") for r in runs]),
              line("GPU memory peak (NVML)", [_fmt(r.get("gpu_memory_peak_mb"), ",.0f", " MB") for r in runs]),
              line("peak memory (the run's metrics.json)", [_fmt(r.get("peak_memory_mb"), ",.0f", " MB") for r in runs]),
              line("host memory peak (PSS, + workers)", [_fmt(r.get("host_memory_peak_mb"), ",.0f", " MB") for r in runs]),
              line("compile", [_fmt(r.get("compile_seconds"), ".1f", " s") if r.get("compile") else "off"
                               for r in runs]),
              line("pixel cache", ["built" if r.get("cache_built") else ("reused" if epoch["cache"] else "off")
                                   for r in runs])]
    notes = sorted({r["gpu_note"] for r in runs if r.get("gpu_note")})
    lines += [f"GPU columns: {note}" for note in notes]
    lines += [f"run {r['run']} FAILED: {r['error']}" for r in runs if r.get("error")]
    return lines
