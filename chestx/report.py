"""Compare finished runs: per-pathology AUROC with patient-bootstrap CIs, DeLong tests, cost, figures.

    python -m chestx.report runs=[outputs/multirun/2026-11-23/10-00-00]
    python -m chestx.report runs=[SWEEP_A,SWEEP_B,outputs/evaluate/my_eval] reference=densenet121 hydra.run.dir=reports/cmp

Writes auroc_table.{md,csv,tex}, auroc_per_run.csv, costs.csv, pvalues.csv, figures/*.png and
report.html into the run folder (outputs/report/<date>/<time>, or `hydra.run.dir=<folder>`) and
prints the Markdown table. Exit status 1 when no run finished, 2 when the report cannot be built
(e.g. a folder without runs, an unknown reference).
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from chestx._hydra import CONFIG_DIR, hydra_run_dir
from chestx.comparison import ReportError, ReportResult, build_report

log = logging.getLogger("chestx.report")

def format_result(result: ReportResult) -> str:
    """What the command prints: the Markdown table and where the page is."""
    return f"{(result.out / 'auroc_table.md').read_text()}\nReport: {result.out / 'report.html'}"


def _folders(runs: object) -> list[str]:
    """`runs=[a,b]` or a single `runs=a`."""
    return [str(r) for r in OmegaConf.to_container(runs)] if OmegaConf.is_list(runs) else [str(runs)]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="report")
def main(cfg: DictConfig) -> None:
    """Exit status: 0 with at least one finished run, 1 when every run failed, 2 when no report was built."""
    try:
        result = build_report([Path(f) for f in _folders(cfg.runs)], hydra_run_dir(), cfg.reference, cfg.resamples,
                              cfg.seed, cfg.ci, cfg.title, metrics=list(cfg.get("metrics") or ["auroc"]))
    except ReportError as error:
        log.error("%s", error)
        raise SystemExit(2) from error
    print(format_result(result))
    if result.n_ok == 0:
        log.error("No run finished: nothing to compare (see the failures above)")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
