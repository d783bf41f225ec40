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
from typing import Sequence

import hydra
from omegaconf import DictConfig, OmegaConf

from chestx._hydra import CONFIG_DIR, hydra_run_dir
from chestx.comparison import ReportError, ReportResult, build_report

log = logging.getLogger("chestx.report")

TITLE = "chestx benchmark: test AUROC per pathology"


def report(runs: Sequence[str | Path], out: str | Path, reference: str | None = None, resamples: int = 1000,
           seed: int = 0, ci: float = 0.95, title: str = TITLE, notes: list[str] | None = None) -> ReportResult:
    """Read the run folders (or sweep folders holding them) in `runs`, write the report into `out`.

    `reference`: the run the DeLong tests compare against (column label, model name or run folder;
    default the best mean AUROC). Raises ReportError when nothing can be built.
    """
    if not runs:
        raise ReportError("runs=[] names no folder: pass runs=[<sweep or run folder>,...]")
    if resamples < 1:
        raise ReportError(f"resamples={resamples}: the bootstrap needs at least 1 resample (1000 recommended)")
    if not 0.0 < ci < 1.0:
        raise ReportError(f"ci={ci}: the confidence level must be in (0, 1), e.g. ci=0.95")
    return build_report([Path(r) for r in runs], Path(out), reference, resamples, seed, ci, title, notes=notes)


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
        result = report(_folders(cfg.runs), hydra_run_dir(), cfg.reference, cfg.resamples, cfg.seed, cfg.ci, cfg.title)
    except ReportError as error:
        log.error("%s", error)
        raise SystemExit(2) from error
    print(format_result(result))
    if result.n_ok == 0:
        log.error("No run finished: nothing to compare (see the failures above)")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
