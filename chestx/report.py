"""Compare finished runs: per-pathology AUROC with patient-bootstrap CIs, DeLong tests, cost, figures.

    python -m chestx.report outputs/multirun/2026-11-23/10-00-00
    python -m chestx.report SWEEP_A SWEEP_B runs/my_eval --reference densenet121 --out reports/cmp

Writes auroc_table.{md,csv,tex}, pvalues.csv, figures/*.png and report.html to --out (default
<first folder>/report), prints the Markdown table. Exit status 1 when no run finished.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from chestx.reporting import ReportError, build_report

log = logging.getLogger("chestx.report")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chestx.report", description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="sweep folders and/or run folders")
    parser.add_argument("--reference", default=None,
                        help="run the DeLong tests against (column label, model name or run folder); default: best mean AUROC")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <first folder>/report)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--ci", type=float, default=0.95, help="confidence level (default 0.95)")
    parser.add_argument("--title", default="chestx benchmark: test AUROC per pathology")
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error(f"--resamples must be >= 1, got {args.resamples}")
    if not 0.0 < args.ci < 1.0:
        parser.error(f"--ci must be in (0, 1), got {args.ci}")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    args = parse_args(argv)
    try:
        result = build_report(args.folders, args.out, args.reference, args.resamples, args.seed, args.ci, args.title)
    except ReportError as error:
        log.error("%s", error)
        return 2
    print((result.out / "auroc_table.md").read_text())
    print(f"Report: {result.out / 'report.html'}")
    if result.n_ok == 0:
        log.error("No run finished: nothing to compare (see the failures above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
