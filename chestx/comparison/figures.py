"""The report's figures (matplotlib, Agg): ROC curves per pathology, AUROC heatmap, mean AUROC vs cost.

Each function saves one PNG and returns its path; `report.html` embeds them as data URIs.
"""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np

from chestx.comparison.compare import MEAN, Comparison
from chestx.core.figures import plt, save_figure  # plt: pyplot on the Agg backend

log = logging.getLogger(__name__)


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1). NaN labels masked.

    sklearn's ``roc_curve`` with ``drop_intermediate=False``; a class that is absent gives
    rates of 0 (not sklearn's NaN and warning).
    """
    from sklearn.metrics import roc_curve  # lazy: sklearn.metrics takes ~2 s to import

    keep = ~np.isnan(labels)
    y = labels[keep] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UndefinedMetricWarning for an absent class -> NaN rates, zeroed below
        fpr, tpr, _ = roc_curve(y, scores[keep], drop_intermediate=False)
    return np.nan_to_num(fpr, nan=0.0), np.nan_to_num(tpr, nan=0.0)


def _colors(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def roc_grid(comparison: Comparison, path: Path) -> Path:
    """One panel per pathology; every run's ROC curve, one colour per run group (seeds share it)."""
    names = comparison.pathologies
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
    colors = dict(zip(comparison.groups, _colors(len(comparison.groups))))
    summary = comparison.summary.set_index(["label", "pathology"])["auroc"]
    for ax, name in zip(axes.flat, names):
        drawn, one_class = 0, 0
        for ts in comparison.test_sets:
            if name not in ts.pathologies:
                continue
            k = ts.pathologies.index(name)
            if np.unique(ts.labels[~np.isnan(ts.labels[:, k]), k]).size < 2:
                one_class += 1
                continue
            drawn += 1
            seen: set[str] = set()
            for r, run in enumerate(ts.runs):
                fpr, tpr = roc_points(ts.probs[r, :, k], ts.labels[:, k])
                label = None if run.label in seen else f"{run.label} ({summary.get((run.label, name), np.nan):.3f})"
                seen.add(run.label)
                ax.plot(fpr, tpr, color=colors[run.label], lw=1.2, alpha=0.9, label=label)
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        if not drawn and one_class:
            log.info("ROC panel %r: every test split has one class of it, so no curve is drawn", name)
            ax.text(0.5, 0.5, "one class in the test split: no ROC", ha="center", va="center", fontsize=8,
                    transform=ax.transAxes, wrap=True)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=name.replace("_", " "), xlabel="1 - specificity", ylabel="sensitivity")
        ax.title.set_fontsize(10)
        if ax.get_legend_handles_labels()[0]:  # a panel without curves has no legend (and no matplotlib warning)
            ax.legend(fontsize=6, loc="lower right")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("Test ROC curves per pathology (legend: run, AUROC)")
    fig.tight_layout()
    return save_figure(fig, path)


def heatmap(comparison: Comparison, path: Path) -> Path:
    """Run groups x (pathologies + mean) AUROC, values written in the cells."""
    labels = list(comparison.groups)
    columns = [*comparison.pathologies, MEAN]
    summary = comparison.summary.set_index(["label", "pathology"])["auroc"]
    grid = np.array([[summary.get((lab, p), np.nan) for p in columns] for lab in labels])  # (G, K + 1)
    finite = grid[np.isfinite(grid)]
    low = min(0.5, float(finite.min())) if finite.size else 0.5
    high = max(0.5 + 1e-3, float(finite.max())) if finite.size else 1.0
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(columns), 1.4 + 0.45 * len(labels)))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=low, vmax=high, aspect="auto")
    ax.set_xticks(range(len(columns)), [c.replace("_", " ") for c in columns], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    mid = (low + high) / 2
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if grid[i, j] > mid else "white")
    fig.colorbar(image, ax=ax, label="test AUROC", fraction=0.03)
    ax.set_title("Test AUROC: runs x pathologies")
    fig.tight_layout()
    return save_figure(fig, path)


COSTS = (("params", "parameters (M)", 1e-6), ("macs", "GMACs per image", 1e-9),
         ("train_images_per_s", "training images/s", 1.0))


def cost_scatter(comparison: Comparison, path: Path) -> Path:
    """Mean test AUROC (with its bootstrap CI, or +- sd over replicates) against three costs, log x."""
    summary = comparison.summary[comparison.summary["pathology"] == MEAN].set_index("label")
    colors = dict(zip(comparison.groups, _colors(len(comparison.groups))))
    fig, axes = plt.subplots(1, len(COSTS), figsize=(4.2 * len(COSTS), 3.6), squeeze=False)
    for ax, (key, title, scale) in zip(axes.flat, COSTS):
        plotted = 0
        for label, runs in comparison.groups.items():
            values = [r.metrics.get(key) for r in runs if r.metrics.get(key)]
            if not values or label not in summary.index:
                continue
            x = float(np.mean(values)) * scale
            row = summary.loc[label]
            y = float(row["auroc"])
            if row["n_replicates"] > 1:
                err = np.array([[row["sd"]], [row["sd"]]])
            else:
                err = np.array([[y - row["lower"]], [row["upper"] - y]])
            ax.errorbar([x], [y], yerr=np.nan_to_num(np.abs(err)), fmt="o", color=colors[label], capsize=3, label=label)
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            plotted += 1
        if plotted:
            ax.set_xscale("log")
        else:
            ax.text(0.5, 0.5, f"no {key} in metrics.json", ha="center", va="center", transform=ax.transAxes)
        ax.set(xlabel=title, ylabel="mean test AUROC")
        ax.grid(alpha=0.3)
    fig.suptitle("Mean AUROC (95% CI) vs cost")
    fig.tight_layout()
    return save_figure(fig, path)


def all_figures(comparison: Comparison, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "ROC curves per pathology": roc_grid(comparison, folder / "roc_curves.png"),
        "AUROC heatmap": heatmap(comparison, folder / "auroc_heatmap.png"),
        "Mean AUROC vs cost": cost_scatter(comparison, folder / "auroc_vs_cost.png"),
    }
