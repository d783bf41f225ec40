"""Figures of the clinical read-out and of the dataset explorer (matplotlib, Agg backend).

Confusion matrices per pathology at the frozen thresholds, reliability diagrams (Guo et al. 2017,
"On calibration of modern neural networks", fig. 1 style: fraction positive vs mean predicted
probability per bin), Grad-CAM overlays titled with pathology and probability, and the
explorer's co-occurrence heatmap and age / sex / view bar charts.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

log = logging.getLogger(__name__)


def _grid(n: int, cols: int = 5) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return int(math.ceil(n / cols)), cols


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


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
    return _save(fig, path)


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
    return _save(fig, path)


def save_heatmap(path: Path, overlay_rgb: np.ndarray, title: str, box: Sequence[float] | None = None) -> Path:
    """Grad-CAM overlay (H, W, 3) uint8 under a white title band, with an optional (x, y, w, h) box in its pixels.

    Drawn with OpenCV (about 50x faster than a matplotlib figure; the training run draws them on its
    own time). Images narrower than 384 px are enlarged so that the title stays legible.
    """
    import cv2

    img = np.ascontiguousarray(overlay_rgb[..., ::-1])  # RGB -> BGR for OpenCV
    scale = max(1.0, 384.0 / img.shape[1])
    if scale > 1.0:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    if box is not None:
        x, y, w, h = (float(v) * scale for v in box)
        cv2.rectangle(img, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))), (0, 255, 0), 2)
    lines = title.splitlines() or [""]
    band = np.full((18 * len(lines) + 8, img.shape[1], 3), 255, dtype=np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (6, 18 * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.concatenate([band, img], axis=0)):
        raise OSError(f"could not write heatmap {path}")
    return path


def plot_cooccurrence(matrix: pd.DataFrame, path: Path, title: str) -> Path:
    """Square (K, K) count matrix with counts printed in the cells."""
    k = len(matrix)
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.5, 0.55 * k + 2))
    values = matrix.to_numpy(dtype=np.float64)
    ax.imshow(np.log1p(values), cmap="viridis")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=6, color="white")
    ax.set_xticks(range(k), matrix.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(k), matrix.index, fontsize=7)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_demographics(demographics: pd.DataFrame, path: Path) -> Path:
    """Bar charts of age bins, sex and view per split from the long demographics table."""
    variables = [v for v in ("age", "sex", "view") if v in set(demographics["variable"])]
    fig, axes = plt.subplots(1, max(1, len(variables)), figsize=(5 * max(1, len(variables)), 3.2), squeeze=False)
    for ax, var in zip(axes.ravel(), variables):
        part = demographics[demographics["variable"] == var]
        wide = part.pivot_table(index="value", columns="split", values="count", aggfunc="sum", sort=False).fillna(0)
        wide.plot.bar(ax=ax, width=0.8)
        ax.set_title(var, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("")
    return _save(fig, path)
