"""subgroups.csv of a run folder: per pathology x subgroup (sex, age band, view, frontal/lateral) the test AUROC
with a patient-bootstrap CI and the TPR / FNR at the validation-frozen threshold, with gaps to the whole split.

Called by `chestx.train` after the clinical step and by `chestx.evaluate` (`conf/subgroups/default.yaml`, off
with `subgroups=none`). The metadata comes from predictions.csv (sex, age, view columns, written from the
label file); the thresholds from the clinical step's thresholds.csv, or, without one (`clinical=none`,
`chestx.evaluate`), chosen on predictions_val.csv by Youden's J as the clinical step does by default; without
validation predictions the TPR / FNR columns are empty. The table itself: `chestx.metrics.subgroups`.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chestx.core.run_folder import (
    PREDICTIONS_FILE, SUBGROUPS_FILE, THRESHOLDS_FILE, VAL_PREDICTIONS_FILE, read_predictions,
)
from chestx.metrics.subgroups import DEFAULT_AGE_EDGES, check_subgroup_options, subgroup_table
from chestx.metrics.thresholds import select_thresholds

log = logging.getLogger(__name__)


def write_subgroups(path: str | Path, table: pd.DataFrame) -> Path:
    """Write a `subgroup_table` as CSV (NaN as empty cells)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format="%.6g")
    return path


def read_subgroups(path: str | Path) -> pd.DataFrame:
    """subgroups.csv back as a DataFrame (group names stay strings, empty notes become '')."""
    table = pd.read_csv(path, dtype={"attribute": str, "group": str, "pathology": str, "note": str})
    table["note"] = table["note"].fillna("")
    return table


def frozen_thresholds(folder: Path, run_dir: Path, pathologies: list[str]) -> np.ndarray | None:
    """(K,) thresholds frozen on validation: `folder`/thresholds.csv, else Youden's J on `run_dir`/predictions_val.csv,
    else None."""
    path = folder / THRESHOLDS_FILE
    if path.is_file():
        table = pd.read_csv(path).set_index("pathology")["threshold"]
        missing = [p for p in pathologies if p not in table.index]
        if missing:
            raise ValueError(f"{path} has no threshold for {missing}: it belongs to another run; re-run "
                             f"`python -m chestx.clinical run={run_dir}`")
        return table.loc[pathologies].to_numpy(dtype=np.float64)
    val = run_dir / VAL_PREDICTIONS_FILE
    if val.is_file():
        _, probs, labels, names = read_predictions(val)
        if names != pathologies:
            raise ValueError(f"{val} has pathologies {names}, predictions.csv {pathologies}: not the same run")
        log.info("Subgroups: no %s (clinical=none or chestx.evaluate): thresholds by Youden's J on %s",
                 THRESHOLDS_FILE, VAL_PREDICTIONS_FILE)
        return select_thresholds(probs, labels, method="youden")
    log.warning("Subgroups: neither %s nor %s in %s: no frozen threshold, TPR / FNR left empty",
                THRESHOLDS_FILE, VAL_PREDICTIONS_FILE, run_dir)
    return None


class SubgroupAnalysis:
    """The subgroup step of a run (built by Hydra from `conf/subgroups/default.yaml`; the options are checked
    when it is built, before training). Call it with a run folder to write subgroups.csv."""

    def __init__(self, age_edges: Sequence[float] = DEFAULT_AGE_EDGES, min_images: int = 20, min_per_class: int = 2,
                 resamples: int = 1000, seed: int = 0, ci: float = 0.95) -> None:
        self.age_edges = check_subgroup_options(age_edges, min_images, min_per_class, resamples, ci,
                                                prefix="subgroups.")
        self.min_images, self.min_per_class = min_images, min_per_class
        self.resamples, self.seed, self.ci = resamples, seed, ci

    def table(self, run_dir: str | Path, thresholds_dir: str | Path | None = None) -> pd.DataFrame:
        """The subgroup table of `run_dir`'s predictions.csv, at the thresholds in `thresholds_dir` (default `run_dir`)."""
        run_dir = Path(run_dir)
        path = run_dir / PREDICTIONS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"subgroups need {path}; train with test=true first")
        ids, probs, labels, pathologies = read_predictions(path)
        thresholds = frozen_thresholds(Path(thresholds_dir or run_dir), run_dir, pathologies)
        return subgroup_table(ids, probs, labels, pathologies, thresholds,
                              self.age_edges, self.min_images, self.min_per_class, self.resamples, self.seed, self.ci)

    def __call__(self, run_dir: str | Path, out_dir: str | Path | None = None) -> pd.DataFrame:
        """Write subgroups.csv into `out_dir` (default `run_dir`) and log the largest gaps; returns the table.

        The thresholds are those of the clinical step's thresholds.csv in `out_dir` (where `chestx.clinical`
        writes them), else in `run_dir`.
        """
        out = Path(out_dir or run_dir)
        table = self.table(run_dir, out if (out / THRESHOLDS_FILE).is_file() else run_dir)
        path = write_subgroups(out / SUBGROUPS_FILE, table)
        log.info("Subgroups written to %s (%d groups x %d pathologies)\n%s", path,
                 len(table.drop_duplicates(["attribute", "group"])), table["pathology"].nunique(), format_gaps(table))
        return table


def format_gaps(table: pd.DataFrame, top: int = 5) -> str:
    """The `top` largest FNR gaps and AUROC drops, as plain text for the terminal."""
    groups = table[table["attribute"] != "all"]
    lines = []
    for column, ascending, what in (("fnr_gap", False, "FNR above the whole split"),
                                    ("auroc_gap", True, "AUROC below the whole split")):
        worst = groups.dropna(subset=[column]).sort_values(column, ascending=ascending).head(top)
        lines.append(f"Largest {what}:")
        lines += [f"  {r.attribute + '=' + r.group:<16} {r.pathology:<20} {column} {getattr(r, column):+.3f} "
                  f"(n_pos {r.n_pos}, n_neg {r.n_neg})" for r in worst.itertuples()] or ["  none defined"]
    return "\n".join(lines)
