"""`make benchmark`: sweep the five backbones (one Hydra multirun), then always build the report on the sweep.

    python -m chestx.benchmark                                  # embedded NIH sample, experiment=benchmark_sample
    python -m chestx.benchmark data=nih data.root=/data/ChestX-ray14   # experiment=benchmark (full size)
    python -m chestx.benchmark model=resnet18,mobilenetv2 trainer.max_epochs=1 report.resamples=2000

Every argument is a `chestx.train` override, except `report.reference=`, `report.resamples=` and
`report.seed=`, which go to the report. The sweep goes to `hydra.sweep.dir` (default
outputs/benchmark/<date>_<time>) and the report to <sweep>/report.

Failure policy: Hydra's basic launcher runs every job of the sweep even when one raises (the job
writes metrics.json with status failed), then exits non-zero. The report is built regardless and
lists failed and incomplete runs. Exit status: 0 when the report was built from at least one finished
run; 1 when every run failed; 2 when the report itself could not be built.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from chestx._hydra import REPO_DIR
from chestx.report import report
from chestx.comparison import ReportError

log = logging.getLogger("chestx.benchmark")

REPORT_KEYS = {"report.reference": "reference", "report.resamples": "resamples", "report.seed": "seed"}


def machine() -> dict[str, Any]:
    """What the benchmark ran on (stated in the report and benchmark.json)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"host": platform.node(), "cpu": cpu, "cores": len(os.sched_getaffinity(0))
                            if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover
        pass
    if hasattr(os, "getloadavg"):
        info["load_avg_1min_at_start"] = round(os.getloadavg()[0], 2)
    return info


def split_args(argv: list[str]) -> tuple[list[str], dict[str, Any], Path, str]:
    """(train overrides, report options, sweep dir, data option) from the command line."""
    overrides: list[str] = []
    report: dict[str, Any] = {}
    sweep_dir: Path | None = None
    data = "nih_sample"
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"argument {arg!r} is not key=value: pass chestx.train overrides, e.g. trainer.max_epochs=1")
        if key in REPORT_KEYS:
            report[REPORT_KEYS[key]] = int(value) if key != "report.reference" else value
            continue
        if key == "hydra.sweep.dir":
            sweep_dir = Path(value)
            continue
        if key == "data":
            data = value
        overrides.append(arg)
    if not any(a.startswith(("experiment=", "+experiment=")) for a in overrides):
        overrides.insert(0, "experiment=" + ("benchmark_sample" if data == "nih_sample" else "benchmark"))
    if sweep_dir is None:
        sweep_dir = REPO_DIR / "outputs" / "benchmark" / time.strftime("%Y-%m-%d_%H-%M-%S")
    return overrides, report, sweep_dir, data


def run(argv: list[str]) -> int:
    overrides, report_options, sweep_dir, data = split_args(argv)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    info = machine()
    command = [sys.executable, "-m", "chestx.train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    log.info("Sweep: %s", " ".join(command[1:]))
    started = time.perf_counter()
    sweep = subprocess.run(command, cwd=REPO_DIR)
    sweep_seconds = time.perf_counter() - started
    if sweep.returncode != 0:
        log.warning("The sweep exited with status %d (a run failed or the sweep was cut short): "
                    "building the report from the runs that finished", sweep.returncode)
    notes = [f"Sweep: `python {' '.join(command[1:])}` on data={data}; exit status {sweep.returncode}; "
             f"wall time {sweep_seconds / 60:.1f} min on {info['cpu']} ({info['cores']} cores"
             f"{', GPU ' + info['gpu'] if info.get('gpu') else ''}; 1-min load average at start "
             f"{info.get('load_avg_1min_at_start')})."]
    try:
        result = report([sweep_dir], sweep_dir / "report", notes=notes, **report_options)
    except ReportError as error:
        log.error("Report failed: %s", error)
        return 2
    summary = {"sweep_dir": str(sweep_dir), "command": command[1:], "sweep_exit_status": sweep.returncode,
               "sweep_wall_time_s": sweep_seconds, "report_wall_time_s": result.seconds,
               "total_wall_time_s": time.perf_counter() - started, "machine": info,
               "runs": {str(r.path.name): {"label": r.label, "status": r.status, "reason": r.reason} for r in result.runs}}
    (sweep_dir / "benchmark.json").write_text(json.dumps(summary, indent=2))
    print((result.out / "auroc_table.md").read_text())
    print(f"Report: {result.out / 'report.html'}  (sweep {sweep_seconds / 60:.1f} min, "
          f"total {summary['total_wall_time_s'] / 60:.1f} min)")
    if result.n_ok == 0:
        log.error("Every run failed: see %s", result.out / "auroc_table.md")
        return 1
    return 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
