"""AUROC against label fraction: one row per (model, probe / fine-tune, training-label fraction), and its figure.

Reads run folders only (``chestx.runs.discover.Run``: config.yaml, metrics.json, predictions.csv):

- the fraction is the run's ``data.train_fraction`` in config.yaml (1.0 when the key is absent: every run before that
  key existed trained on all its training labels);
- the mode is ``probe`` when ``module.freeze`` is ``backbone``, else ``fine-tune``;
- per row: the seeds' test mean AUROC (metrics.json ``test/auroc_mean``), their mean and sd (ddof 1; NaN for one
  seed), and the patient-level bootstrap percentile interval of the seed-averaged mean AUROC
  (``chestx.metrics.bootstrap.bootstrap_auroc`` on the runs' predictions.csv, resampling the same patients for
  every seed; NaN when the seeds were scored on different test images).

This is the BenchX-style table (docs/encoders.md). The sweep that fills it is ``experiment=label_efficiency``;
``chestx.report`` shows it (``label_efficiency_section``) when the finished runs differ in ``data.train_fraction``.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chestx.comparison.tables import Section, Table, frame_cells
from chestx.core.figures import plt, save_figure
from chestx.core.run_folder import select
from chestx.metrics.bootstrap import bootstrap_auroc
from chestx.runs.discover import Run

__all__ = ["label_efficiency_figure", "label_efficiency_section", "label_efficiency_table", "run_fraction",
           "run_mode"]

log = logging.getLogger(__name__)

TABLE_FILE = "label_efficiency.csv"  # beside the report (chestx.report)
FIGURE_FILE = "label_efficiency.png"  # under the report's figures/
HEADING = "AUROC vs label fraction"
COLUMNS = ["model", "mode", "fraction", "n_seeds", "seeds", "auroc_mean", "auroc_sd", "ci_lower", "ci_upper"]


def run_fraction(run: Run) -> float:
    """The fraction of training labels the run trained on: ``data.train_fraction`` (absent: 1.0)."""
    value = select(run.config, "data.train_fraction")
    return 1.0 if value is None else float(value)


def run_mode(run: Run) -> str:
    """``probe`` (``module.freeze=backbone``) or ``fine-tune``."""
    return "probe" if select(run.config, "module.freeze") == "backbone" else "fine-tune"


def _seed_mean_interval(runs: list[Run], n_resamples: int, ci: float, seed: int) -> tuple[float, float]:
    """Bootstrap interval of the mean over runs of the mean AUROC, the same patients drawn for every run."""
    first = runs[0]
    if any(r.ids is None or not np.array_equal(r.ids["image_id"].to_numpy(), first.ids["image_id"].to_numpy())
           or r.pathologies != first.pathologies for r in runs):
        log.warning("%s: seeds scored on different test images; no pooled bootstrap interval", first.model)
        return float("nan"), float("nan")
    probs = np.stack([r.probs for r in runs])  # (R, N, K)
    out = bootstrap_auroc(probs, first.labels, first.ids["patient_id"].to_numpy(), n_resamples=n_resamples,
                          seed=seed, ci=ci, return_resamples=True, warn_invalid=False)
    defined = ~np.isnan(np.asarray(out["auroc"])).any(axis=0)  # (K,) pathologies defined for every run
    per_resample = np.nanmean(np.asarray(out["resamples"])[:, :, defined], axis=2).mean(axis=1)  # (B,)
    lower, upper = np.nanpercentile(per_resample, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
    return float(lower), float(upper)


def label_efficiency_table(runs: Sequence[Run], n_resamples: int = 1000, ci: float = 0.95,
                           seed: int = 0) -> pd.DataFrame:
    """One row per (model, mode, fraction) of the finished runs (columns ``COLUMNS``), sorted."""
    groups: dict[tuple[str, str, float], list[Run]] = {}
    for run in runs:
        if run.status != "ok" or run.metrics.get("test/auroc_mean") is None:
            continue
        groups.setdefault((run.model, run_mode(run), run_fraction(run)), []).append(run)
    rows = []
    for (model, mode, fraction), members in sorted(groups.items()):
        members.sort(key=lambda r: str(r.seed))
        values = np.array([float(r.metrics["test/auroc_mean"]) for r in members])
        lower, upper = _seed_mean_interval(members, n_resamples, ci, seed)
        rows.append(dict(model=model, mode=mode, fraction=fraction, n_seeds=len(members),
                         seeds=",".join(str(r.seed) for r in members), auroc_mean=float(values.mean()),
                         auroc_sd=float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                         ci_lower=lower, ci_upper=upper))
    return pd.DataFrame(rows, columns=COLUMNS)


def label_efficiency_figure(table: pd.DataFrame, path: Path, ci: float = 0.95) -> Path:
    """Mean test AUROC against the label fraction (log x), one line per model and mode (probe dashed): error bars
    are the sd over seeds, the band the bootstrap interval."""
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ((model, mode), rows) in enumerate(table.groupby(["model", "mode"], sort=True)):
        rows = rows.sort_values("fraction")
        color = colors[i % len(colors)]
        x, y = rows["fraction"].to_numpy(), rows["auroc_mean"].to_numpy()
        ax.errorbar(x, y, yerr=np.nan_to_num(rows["auroc_sd"].to_numpy()), fmt="o--" if mode == "probe" else "o-",
                    color=color, capsize=3, label=f"{model} ({mode})")
        ax.fill_between(x, rows["ci_lower"].to_numpy(), rows["ci_upper"].to_numpy(), color=color, alpha=0.15)
    ax.set_xscale("log")
    ax.set(xlabel="fraction of training labels", ylabel="mean test AUROC",
           title=f"AUROC vs label fraction (± sd over seeds; band: {ci:.0%} bootstrap)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def label_efficiency_section(runs: Sequence[Run], out: Path, n_resamples: int = 1000, ci: float = 0.95,
                             seed: int = 0) -> Section | None:
    """The report's label-efficiency part (table, label_efficiency.csv, figures/label_efficiency.png); None when
    the finished runs do not differ in ``data.train_fraction`` (nothing to plot against)."""
    finished = [r for r in runs if r.status == "ok" and r.metrics.get("test/auroc_mean") is not None]
    if len({run_fraction(r) for r in finished}) < 2:
        return None
    table = label_efficiency_table(finished, n_resamples, ci, seed)
    files = {TABLE_FILE: out / TABLE_FILE}
    table.to_csv(files[TABLE_FILE], index=False, float_format="%.6f")
    figure = label_efficiency_figure(table, out / "figures" / FIGURE_FILE, ci)
    files[FIGURE_FILE] = figure
    notes = [f"Mean test AUROC (mean over pathologies) per model, mode (`probe`: module.freeze=backbone) and "
             f"fraction of training patients (`data.train_fraction`): mean and sd over seeds, and the {ci:.0%} "
             f"patient-bootstrap interval ({n_resamples} resamples) of the seed-averaged AUROC."]
    log.info("Label efficiency: %d rows -> %s", len(table), files[TABLE_FILE])
    return Section(HEADING, notes, Table(list(table.columns), [frame_cells(list(row)) for row in table.itertuples(
        index=False)]), TABLE_FILE, figures={"AUROC vs label fraction": figure}, files=files,
        latex_label="tab:label_efficiency")
