"""Combine finished runs into an ensemble, written as a run folder of its own (chestx.runs.ensemble).

    python -m chestx.ensemble runs=[outputs/multirun/2026-12-07/10-00-00]              # every run below a sweep
    python -m chestx.ensemble runs=[RUN_A,RUN_B,RUN_C] combine=logit name=my_ensemble hydra.run.dir=outputs/ens

The folder (outputs/ensemble/<date>/<time>, or `hydra.run.dir=`) holds predictions.csv, auroc.csv, members.csv
(each member's checkpoint and its SHA-256) and metrics.json, so `chestx.report runs=[<sweep>,<ensemble>]` shows it
like any run, with its gain over its best member (docs/report.md, "Ensembles and test-time augmentation").
Exit status 2 when the members cannot be combined (the message names the member and the difference).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from chestx._hydra import CONFIG_DIR, hydra_run_dir
from chestx.core.run_folder import AUROC_FILE, format_auroc_table
from chestx.runs.discover import ReportError
from chestx.runs.ensemble import build_ensemble

log = logging.getLogger("chestx.ensemble")


class EnsembleReport(Callback):
    """Hydra callback of a training sweep (experiment=ensemble_sample): when every job has finished, the ensemble
    of the sweep's finished runs into <sweep>/ensemble, then the report of runs and ensemble into <sweep>/report
    (with the TTA passes' gains and costs when the runs had `tta=`)."""

    def __init__(self, combine: str = "prob", resamples: int = 1000, seed: int = 0,
                 metrics: list[str] | None = None) -> None:
        self.combine, self.resamples, self.seed = combine, int(resamples), int(seed)
        self.metrics = list(metrics or ["auroc"])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from chestx.comparison import build_report

        sweep = Path(config.hydra.sweep.dir)
        runs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
        try:
            build_ensemble(runs, sweep / "ensemble", combine=self.combine)
        except ReportError as error:  # e.g. a job failed and one run is left: the report still comes
            log.error("No ensemble: %s", error)
        result = build_report([sweep], sweep / "report", n_resamples=self.resamples, seed=self.seed,
                              metrics=self.metrics, title="chestx: seeds, their ensemble and TTA")
        print((result.out / "auroc_table.md").read_text())
        print(f"Report: {result.out / 'report.html'}")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="ensemble")
def main(cfg: DictConfig) -> None:
    import pandas as pd

    runs = OmegaConf.to_container(cfg.runs) if OmegaConf.is_list(cfg.runs) else [cfg.runs]
    out = hydra_run_dir()
    try:
        metrics = build_ensemble([Path(str(r)) for r in runs], out, combine=str(cfg.combine), name=cfg.get("name"))
    except ReportError as error:
        log.error("%s", error)
        raise SystemExit(2) from error
    print(f"{metrics['model']}: {metrics['n_members']} members\n{format_auroc_table(pd.read_csv(out / AUROC_FILE))}")
    print(f"Ensemble run folder: {out}")


if __name__ == "__main__":
    main()
