"""Saving figures: the one place that sets matplotlib's non-interactive backend and the resolution of every PNG
chestx writes (run folders, explore, the report). Import `plt` from here (pyplot on the Agg backend)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["DPI", "plt", "save_figure"]

DPI = 110  # every PNG: run folders, chestx.explore and the report (was 100 / 110 before one home)


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write `fig` as a PNG at DPI (folders created), close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path
