"""`make benchmark`: one Hydra multirun of `chestx.train` over the five backbones; the report is built
by a Hydra callback as the sweep goes (after every job, so a failed or interrupted sweep still has one).

    python -m chestx.benchmark                                        # embedded NIH sample (benchmark_sample)
    python -m chestx.benchmark experiment=benchmark data=nih data.root=/data/ChestX-ray14   # full size
    python -m chestx.benchmark model=resnet18,mobilenetv2 trainer.max_epochs=1 report.resamples=2000

The entry config is conf/benchmark.yaml: train.yaml in MULTIRUN mode with the benchmark recipe, a sweep
folder under outputs/benchmark/ and `report.*` options. The report goes to <sweep>/report. Failure
policy: Hydra runs every job of the sweep even when one fails (the job writes metrics.json with status
failed) and then exits non-zero; the report lists failed and incomplete runs and is built from the rest.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from chestx._hydra import CONFIG_DIR
from chestx.comparison import ReportError, build_report
from chestx.core.hardware import machine
from chestx.train import run_job

log = logging.getLogger("chestx.benchmark")


class SweepReport(Callback):
    """Hydra callback: (re)build the comparison report of the sweep folder after each job and at the end."""

    def __init__(self, reference: str | None = None, resamples: int = 1000, seed: int = 0,
                 metrics: list[str] | None = None) -> None:
        self.options = dict(reference=reference, n_resamples=int(resamples), seed=int(seed),
                            metrics=list(metrics or ["auroc"]))
        self.started = time.perf_counter()
        self.machine = machine()

    def _build(self, config: DictConfig, final: bool) -> None:
        sweep = Path(config.hydra.sweep.dir)
        info = self.machine
        notes = [f"Sweep {sweep} on {info['cpu']} ({info['cores']} cores, torch CPU capability "
                 f"{info['cpu_capability']}{', GPU ' + info['gpu'] if info.get('gpu') else ''}; torch {info['torch']}); "
                 f"{(time.perf_counter() - self.started) / 60:.1f} min so far{'' if final else ' (sweep running)'}."]
        try:
            result = build_report([sweep], sweep / "report", notes=notes, **self.options)
        except ReportError as error:  # e.g. no run folder yet: the next job's end tries again
            log.warning("No report yet: %s", error)
            return
        summary = {"sweep_dir": str(sweep), "final": final, "wall_time_s": time.perf_counter() - self.started,
                   "report_wall_time_s": result.seconds, "machine": info,
                   "runs": {r.path.name: {"label": r.label, "status": r.status, "reason": r.reason} for r in result.runs}}
        (sweep / "benchmark.json").write_text(json.dumps(summary, indent=2))
        if final:
            print((result.out / "auroc_table.md").read_text())
            print(f"Report: {result.out / 'report.html'}")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self._build(config, final=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._build(config, final=True)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="benchmark")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg)


if __name__ == "__main__":
    main()
