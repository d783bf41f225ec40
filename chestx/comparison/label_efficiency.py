"""AUROC against label fraction: one row per (model, probe / fine-tune, training-label fraction), and its figure.

Reads run folders only (``chestx.runs.discover.Run``: config.yaml, metrics.json, predictions.csv):

- the fraction is the run's ``data.train_fraction`` in config.yaml (1.0 when the key is absent: every run before that
  key existed trained on all its training labels);
- the mode is ``probe`` when ``module.freeze`` is ``backbone``, else ``fine-tune``;
- per row: the seeds' test mean AUROC (metrics.json ``test/auroc_mean``), their mean and sd (ddof 1; NaN for one
  seed), and the patient-level bootstrap percentile interval of the seed-averaged mean AUROC
  (``chestx.metrics.bootstrap.bootstrap_auroc`` on the runs' predictions.csv, resampling the same patients for
  every seed; NaN when the seeds were scored on different test images).

This is the BenchX-style table (docs/encoders.md). The sweep that fills it (``experiment=label_efficiency``) needs
``data.train_fraction`` wired into the datasets, which comes after the data-layer restructuring.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chestx.core.figures import plt, save_figure
from chestx.core.run_folder import select
from chestx.metrics.bootstrap import bootstrap_auroc
from chestx.runs.discover import Run

__all__ = ["label_efficiency_figure", "label_efficiency_table", "run_fraction", "run_mode"]

log = logging.getLogger(__name__)

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
