"""Figures of a run's clinical read-out (matplotlib, Agg backend).

Confusion matrices per pathology at the frozen thresholds, and reliability diagrams (Guo et al.
2017, "On calibration of modern neural networks", fig. 1 style: fraction positive vs mean predicted
probability per bin).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from chestx.core.figures import plt, save_figure  # plt: pyplot on the Agg backend

log = logging.getLogger(__name__)


def _grid(n: int, cols: int = 5) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return int(math.ceil(n / cols)), cols


def plot_confusion_matrices(points: pd.DataFrame, path: Path) -> Path:
    """One 2x2 matrix (rows truth pos/neg, columns predicted pos/neg) per row of operating_points.csv."""
    rows, cols = _grid(len(points))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel()[len(points):]:
        ax.axis("off")
    for ax, row in zip(axes.ravel(), points.itertuples()):
        counts = np.array([[row.tp, row.fn], [row.fp, row.tn]], dtype=np.float64)  # (2, 2)
        ax.imshow(np.nan_to_num(counts), cmap="Blues")
        for (i, j), v in np.ndenumerate(counts):
            dark = not np.isnan(v) and v > 0.5 * np.nanmax(counts)
            ax.text(j, i, "n/a" if np.isnan(v) else f"{int(v)}", ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
        ax.set_xticks([0, 1], ["pred +", "pred -"], fontsize=7)
        ax.set_yticks([0, 1], ["true +", "true -"], fontsize=7)
        ax.set_title(f"{row.pathology}\nt={row.threshold:.3f}", fontsize=8)
    fig.suptitle("Test confusion matrices at validation thresholds", fontsize=10)
    return save_figure(fig, path)


def plot_reliability(bins: dict[str, pd.DataFrame], ece: dict[str, float], path: Path) -> Path:
    """Reliability diagram per pathology: fraction positive vs mean confidence of each non-empty bin."""
    rows, cols = _grid(len(bins))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel()[len(bins):]:
        ax.axis("off")
    for ax, (name, table) in zip(axes.ravel(), bins.items()):
        filled = table[table["count"] > 0]
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.bar(filled["lower"], filled["fraction_positive"], width=filled["upper"] - filled["lower"],
               align="edge", alpha=0.6, edgecolor="black", lw=0.4)
        ax.plot(filled["mean_confidence"], filled["fraction_positive"], "o", ms=2.5, color="C3")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=6)
        ax.set_title(f"{name}\nECE={ece.get(name, float('nan')):.3f}", fontsize=8)
    fig.supxlabel("mean predicted probability", fontsize=8)
    fig.supylabel("fraction positive", fontsize=8)
    return save_figure(fig, path)
