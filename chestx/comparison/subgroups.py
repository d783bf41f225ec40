"""The report's subgroup section: each run's subgroups.csv side by side (a gap table and one figure).

Table: one row per subgroup (sex, age band, view, ...), per run group the gap to its whole test split of
AUROC and of the false-negative rate at the validation-frozen threshold, averaged over the pathologies that
have a number in that group (and over seeds); in bold the run that treats the group worst (lowest AUROC gap,
highest FNR gap). Figure: the same gaps per pathology, one heatmap column per run group, colour scales shared
so the runs compare. Files: subgroup_gaps.csv (the table's numbers), subgroups_per_run.csv (every run's rows) and
figures/subgroup_gaps.png.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from chestx.comparison.tables import NO_ROW, Cell, Section, Table
from chestx.core.figures import plt, save_figure  # plt: pyplot on the Agg backend
from chestx.runs.discover import Run
from chestx.runs.subgroups import SUBGROUPS_FILE, read_subgroups

log = logging.getLogger(__name__)

HEADING = "Subgroups: gap to the whole test split (mean over pathologies)"
FIGURE = "subgroup_gaps.png"
PER_RUN_FILE = "subgroups_per_run.csv"
GAPS_FILE = "subgroup_gaps.csv"
GAPS = (("auroc_gap", "ΔAUROC", "RdBu"), ("fnr_gap", "ΔFNR", "RdBu_r"))  # (column, header, worse = red)


def load_subgroups(runs: list[Run]) -> tuple[pd.DataFrame, list[Run]]:
    """Every run's subgroups.csv with label, run, seed in front; and the runs that have none (or unreadable)."""
    frames, without = [], []
    for run in runs:
        path = run.clinical_file(SUBGROUPS_FILE)
        if path is None:
            without.append(run)
            continue
        try:
            table = read_subgroups(path)
        except (OSError, ValueError, pd.errors.ParserError) as error:
            log.warning("%s unreadable (%s): left out of the subgroup section", path, error)
            without.append(run)
            continue
        frames.append(table.assign(label=run.label, run=run.path.name, seed=run.seed))
    if not frames:
        return pd.DataFrame(), without
    frame = pd.concat(frames, ignore_index=True)
    return frame[["label", "run", "seed", *[c for c in frame.columns if c not in ("label", "run", "seed")]]], without


def _subgroups(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(attribute, group) in the order the files list them, without the whole-split rows."""
    rows = frame[frame["attribute"] != "all"]
    return list(dict.fromkeys(zip(rows["attribute"], rows["group"])))


def gap_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """label, attribute, group, n_images, auroc_gap, fnr_gap: per run the mean over pathologies, then over seeds.

    The frame of the section's table, written as subgroup_gaps.csv; one row per (label, subgroup), in the order
    the runs' files list the subgroups."""
    rows = frame[frame["attribute"] != "all"]
    per_run = rows.groupby(["label", "run", "attribute", "group"], sort=False).agg(
        n_images=("n_images", "first"), auroc_gap=("auroc_gap", "mean"), fnr_gap=("fnr_gap", "mean")).reset_index()
    return per_run.groupby(["label", "attribute", "group"], sort=False).agg(
        n_images=("n_images", "first"), auroc_gap=("auroc_gap", "mean"), fnr_gap=("fnr_gap", "mean")).reset_index()


def _text(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+.3f}"


def gap_table(summary: pd.DataFrame) -> Table:
    """Rows: subgroups; columns: images, then ΔAUROC and ΔFNR per run group; bold: the worst run of the row.

    `summary` is `gap_summary`'s frame (subgroup_gaps.csv); a run group without a row for a subgroup gets `—`."""
    labels = list(dict.fromkeys(summary["label"]))
    indexed = summary.set_index(["label", "attribute", "group"])
    columns = ["subgroup", "images"] + [f"{label} {header}" for label in labels for _, header, _ in GAPS]
    rows = []
    for attribute, group in dict.fromkeys(zip(summary["attribute"], summary["group"])):
        present = [lab for lab in labels if (lab, attribute, group) in indexed.index]
        sizes = sorted({int(indexed.loc[(lab, attribute, group), "n_images"]) for lab in present})
        row = [Cell(f"{attribute}={group}"), Cell(str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}")]
        values = {column: np.array([indexed[column].get((lab, attribute, group), np.nan) for lab in labels])
                  for column, _, _ in GAPS}  # (L,) per gap
        worst = {}  # column -> the worst value of the row, when runs are compared
        for column, v in values.items():
            if len(labels) > 1 and np.isfinite(v).any():
                worst[column] = np.nanmin(v) if column == "auroc_gap" else np.nanmax(v)
        for i, label in enumerate(labels):
            for column, _, _ in GAPS:
                value = values[column][i]
                if label not in present:
                    row.append(Cell(NO_ROW))
                else:
                    row.append(Cell(_text(value), bold=column in worst and value == worst[column]))
        rows.append(row)
    return Table(columns, rows)


def gap_figure(frame: pd.DataFrame, path: Path) -> Path:
    """Heatmaps subgroup x pathology of ΔAUROC (top) and ΔFNR (bottom), one column per run group (seeds averaged)."""
    labels = list(dict.fromkeys(frame["label"]))
    pathologies = list(dict.fromkeys(frame["pathology"]))
    subgroups = _subgroups(frame)
    mean = frame[frame["attribute"] != "all"].groupby(["label", "attribute", "group", "pathology"], sort=False)[
        [c for c, _, _ in GAPS]].mean()
    width = 2.2 + 0.3 * len(pathologies)
    fig, axes = plt.subplots(len(GAPS), len(labels), figsize=(width * len(labels) + 1.0, 2 * (1.6 + 0.26 * len(subgroups))),
                             squeeze=False)
    for r, (column, header, cmap) in enumerate(GAPS):
        grids = [np.array([[mean[column].get((lab, a, g, p), np.nan) for p in pathologies] for a, g in subgroups])
                 for lab in labels]  # each (S, K)
        finite = np.concatenate([np.abs(g[np.isfinite(g)]) for g in grids])
        limit = max(float(finite.max()), 1e-3) if finite.size else 1.0
        colours = plt.get_cmap(cmap).with_extremes(bad="0.85")  # NaN: no number
        for c, (label, grid) in enumerate(zip(labels, grids)):
            ax = axes[r, c]
            image = ax.imshow(np.ma.masked_invalid(grid), cmap=colours, vmin=-limit, vmax=limit, aspect="auto")
            bottom = r == len(GAPS) - 1
            ax.set_xticks(range(len(pathologies)), [p.replace("_", " ") for p in pathologies] if bottom else [],
                          rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(len(subgroups)), [f"{a}={g}" for a, g in subgroups] if c == 0 else [], fontsize=7)
            ax.set_title(f"{label}: {header}", fontsize=9)
        fig.colorbar(image, ax=list(axes[r]), fraction=0.02, label=f"{header} (group − whole split)")
    fig.suptitle("Subgroup gaps per pathology (red: worse than the whole test split; grey: no number, see the note in subgroups.csv)")
    return save_figure(fig, path)


def subgroup_section(runs: list[Run], out: Path) -> Section:
    """Table, figure and files of the subgroup section; an explanatory note when no run has subgroups.csv."""
    frame, without = load_subgroups(runs)
    missing = ("Without subgroups.csv (trained before subgroups existed, or subgroups=none): "
               + ", ".join(f"`{r.label}` ({r.replicate})" for r in without) + ".") if without else ""
    if frame.empty:
        log.info("No run has %s: no subgroup table", SUBGROUPS_FILE)
        return Section("Subgroups", [f"No run has {SUBGROUPS_FILE}. {missing}".strip()])
    summary = gap_summary(frame)
    frame.to_csv(out / PER_RUN_FILE, index=False, float_format="%.6g")
    summary.to_csv(out / GAPS_FILE, index=False, float_format="%.6f")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figure = gap_figure(frame, out / "figures" / FIGURE)
    notes = ["Per subgroup, the gap (group − whole test split) of the test AUROC and of the false-negative rate "
             "(underdiagnosis) at the threshold each run froze on its validation split, averaged over the pathologies "
             "with a number in that group and over seeds. Bold: the run that treats the group worst. `n/a`: no "
             f"pathology has a number in that group (too few images or one class). Numbers: {GAPS_FILE}; "
             f"per-pathology values, bootstrap intervals and why a number is missing: {PER_RUN_FILE} and each run's "
             f"{SUBGROUPS_FILE}.", *([missing] if missing else [])]
    files = {PER_RUN_FILE: out / PER_RUN_FILE, GAPS_FILE: out / GAPS_FILE, FIGURE: figure}
    return Section(HEADING, notes, gap_table(summary), GAPS_FILE,
                   {"Gap per pathology and subgroup, runs side by side": figure}, files, latex_label="tab:subgroups")
