"""The report's sections over the compared runs: test AUROC, cost, DeLong significance, operating points.

Each function builds its frame, writes it as CSV into the report folder, and renders the table from that same frame
(`chestx.comparison.tables`: a cell is the CSV's value, `n/a` for a missing value, `—` for no row). A section with
nothing to show returns its heading and a note saying why.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from chestx.comparison.compare import MEAN, Comparison
from chestx.comparison.tables import (
    ALPHA, NO_ROW, Cell, Section, Table, fmt, fmt_p, frame_cells, integer_text, is_missing, significant,
)
from chestx.runs.discover import Run
from chestx.core.run_folder import OPERATING_POINTS_FILE, PREDICTIONS_TTA_FILE

log = logging.getLogger(__name__)

AUROC_CSV = "auroc_table.csv"
AUROC_PER_RUN_CSV = "auroc_per_run.csv"
COSTS_CSV = "costs.csv"
PVALUES_CSV = "pvalues.csv"
OPERATING_POINTS_CSV = "operating_points.csv"
COST_COLUMNS = (  # (metrics.json key, header, format)
    ("params", "params (M)", lambda v: f"{v / 1e6:.2f}"),
    ("macs", "GMACs", lambda v: f"{v / 1e9:.2f}"),
    ("image_size", "image px", lambda v: f"{int(v)}"),
    ("train_images_per_s", "train img/s", lambda v: f"{v:.1f}"),
    ("infer_images_per_s", "infer img/s", lambda v: f"{v:.1f}"),
    ("peak_memory_mb", "peak mem (MB)", lambda v: f"{v:.0f}"),
    ("wall_time_s", "wall (s)", lambda v: f"{v:.0f}"),
    ("epochs", "epochs", lambda v: f"{int(v)}"),
    ("best_epoch", "best epoch", lambda v: f"{int(v)}"),
)
AUROC_SUFFIXES = (("auroc", ""), ("lower", " lower"), ("upper", " upper"), ("sd", " sd"),
                  ("n_replicates", " n_replicates"))
OPERATING_COLUMNS = ("threshold", "sensitivity", "specificity", "ppv", "npv", "f1")


def _write(frame: pd.DataFrame, out: Path, name: str, float_format: str | None = "%.6f") -> dict[str, Path]:
    frame.to_csv(out / name, index=False, float_format=float_format)
    return {name: out / name}


# ------------------------------------------------------------------ test AUROC
def auroc_frame(comparison: Comparison) -> pd.DataFrame:
    """Wide CSV: pathology, then per group `<label>`, `<label> lower`, `<label> upper`, `<label> sd`,
    `<label> n_replicates` (all empty where the group has no value for that pathology)."""
    summary = comparison.summary
    frame = pd.DataFrame({"pathology": [*comparison.pathologies, MEAN]})
    for label in comparison.groups:
        block = summary[summary["label"] == label].set_index("pathology")
        for column, suffix in AUROC_SUFFIXES:
            frame[label + suffix] = frame["pathology"].map(block[column])
    return frame


def auroc_table(frame: pd.DataFrame, pvalues: pd.DataFrame, reference: str, labels: list[str]) -> Table:
    """Rows: pathologies + mean; columns: run groups; best per row bold; `*`: a single run that differs from the
    reference (its DeLong row in `pvalues`, Holm p < ALPHA)."""
    columns = ["pathology"] + [f"{lab} (ref)" if lab == reference else lab for lab in labels]
    marked = {(r.label, r.pathology) for r in pvalues.itertuples() if significant(r.p_holm)}
    rows = []
    for record in frame.to_dict("records"):
        pathology = record["pathology"]
        values = [record[lab] for lab in labels]
        finite = [float(v) for v in values if not is_missing(v)]
        best = max(finite) if finite else None
        row = [Cell(pathology, bold=pathology == MEAN)]
        for lab, value in zip(labels, values):
            n = record[lab + " n_replicates"]
            if is_missing(n):
                row.append(Cell(NO_ROW))
            elif n > 1:
                row.append(Cell(f"{fmt(value)} ± {fmt(record[lab + ' sd'])}", bold=value == best))
            else:
                row.append(Cell(f"{fmt(value)} [{fmt(record[lab + ' lower'])}, {fmt(record[lab + ' upper'])}]",
                                bold=value == best, mark="*" if (lab, pathology) in marked else ""))
        rows.append(row)
    return Table(columns, rows)


def tta_note(comparison: Comparison, tested: bool = True) -> list[str]:
    """The note on TTA-pass columns (`<label> tta=<mode>`), when the comparison has any."""
    if not comparison.passes:
        return []
    labels = ", ".join(f"`{label}`" for label, runs in comparison.groups.items() if runs[0].is_tta)
    return [f"{labels}: the run's test-time-augmentation pass ({PREDICTIONS_TTA_FILE}, the same checkpoint and test "
            "images as its plain pass), a column of its own with the same patient bootstrap"
            + (" and DeLong test against the reference" if tested else "")
            + "; its gain over its own plain pass is in the section on ensembles and test-time augmentation."]


def auroc_section(comparison: Comparison, out: Path) -> Section:
    frame = auroc_frame(comparison)
    files = _write(frame, out, AUROC_CSV) | _write(comparison.per_run, out, AUROC_PER_RUN_CSV)
    table = auroc_table(frame, comparison.pvalues, comparison.reference, list(comparison.groups))
    notes = tta_note(comparison)
    if any(c.text == NO_ROW for row in table.rows for c in row):
        notes.append(f"`{NO_ROW}`: the run group does not predict that pathology.")
    if any(c.text.startswith("n/a") for row in table.rows for c in row[1:]):
        notes.append("`n/a`: no AUROC, because the test split has only one class (or no known label) for that "
                     "pathology.")
    return Section("Test AUROC", notes, table, AUROC_CSV, files=files, latex_label="tab:auroc")


# ------------------------------------------------------------------ cost
def cost_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run: label, seed, fold (k-fold runs), folder, then the raw cost numbers from metrics.json."""
    rows = []
    for run in runs:
        row = {"label": run.label, "seed": run.seed, "fold": run.fold, "run": str(run.path)}
        row.update({key: run.metrics.get(key) for key, _, _ in COST_COLUMNS})
        rows.append(row)
    return pd.DataFrame(rows, columns=["label", "seed", "fold", "run", *[k for k, _, _ in COST_COLUMNS]])


def cost_table(frame: pd.DataFrame) -> Table:
    kfold = frame["fold"].notna().any()
    columns = ["run", "seed", *(["fold"] if kfold else [])] + [header for _, header, _ in COST_COLUMNS]
    rows = []
    for record in frame.to_dict("records"):
        row = [Cell(str(record["label"])), Cell(integer_text(record["seed"])),
               *([Cell(integer_text(record["fold"]))] if kfold else [])]
        row += [Cell(fmt_value(record[key], formatter)) for key, _, formatter in COST_COLUMNS]
        rows.append(row)
    return Table(columns, rows)


def fmt_value(value: object, formatter) -> str:
    return "n/a" if is_missing(value) else formatter(float(value))


def cost_section(runs: list[Run], out: Path) -> Section:
    frame = cost_frame(runs)
    notes = ["`n/a`: the run's metrics.json has no such figure (e.g. a chestx.evaluate folder)."] \
        if frame[[k for k, _, _ in COST_COLUMNS]].isna().any().any() else []
    return Section("Cost per run", notes, cost_table(frame), COSTS_CSV, files=_write(frame, out, COSTS_CSV, None),
                   latex_label="tab:cost")


# ------------------------------------------------------------------ significance
def pvalue_table(pvalues: pd.DataFrame, pathologies: list[str], multi: set[str]) -> Table:
    """Rows: pathologies; one column per tested run (`run_path`), in the frame's order; cells: Holm p (raw p).

    Built from the rows of `pvalues` themselves (the frame written as pvalues.csv), keyed by the run's folder: no
    value is matched back by text, so a missing seed or fold cannot empty a cell."""
    columns: dict[str, str] = {}
    cells: dict[tuple[str, str], Cell] = {}
    for r in pvalues.itertuples():
        columns.setdefault(r.run_path, f"{r.label} ({r.replicate})" if r.label in multi else str(r.label))
        cells[(r.run_path, r.pathology)] = Cell(f"{fmt_p(r.p_holm)} ({fmt_p(r.p_value)})",
                                                mark="*" if significant(r.p_holm) else "")
    rows = [[Cell(p)] + [cells.get((key, p), Cell(NO_ROW)) for key in columns] for p in pathologies]
    return Table(["pathology", *columns.values()], rows)


def significance_section(comparison: Comparison, out: Path) -> Section:
    pvalues = comparison.pvalues
    files = _write(pvalues, out, PVALUES_CSV, "%.6g")
    heading = f"DeLong vs {comparison.reference}: Holm-adjusted p (raw p)"
    others = [label for label in comparison.groups if label != comparison.reference]
    if pvalues.empty:
        why = ("only one configuration was compared: there is nothing to test against it"
               if not others else "no other run was scored on the reference's test images (see the log)")
        return Section(heading, [f"No DeLong test: {why}."], files=files)
    multi = {lab for lab, runs in comparison.groups.items() if len(runs) > 1}
    table = pvalue_table(pvalues, comparison.pathologies, multi)
    notes = [f"Paired DeLong test of each run against the reference's run of the same replicate, Holm-corrected "
             f"over the pathologies of that run; `*`: Holm p < {ALPHA}. Numbers: {PVALUES_CSV}."]
    untested = [label for label in others if label not in set(pvalues["label"])]
    if untested:
        notes.append("Not tested (not scored on the reference's test images): " + ", ".join(untested) + ".")
    if any(c.text == NO_ROW for row in table.rows for c in row):
        notes.append(f"`{NO_ROW}`: the run does not predict that pathology, or the reference does not.")
    return Section(heading, notes, table, PVALUES_CSV, files=files, latex_label="tab:delong")


# ------------------------------------------------------------------ operating points
def operating_points_frame(runs: list[Run]) -> tuple[pd.DataFrame, list[Run]]:
    """Every run's operating_points.csv with label, replicate and folder in front; and the runs without one."""
    frames, without = [], []
    for run in runs:
        path = run.clinical_file(OPERATING_POINTS_FILE)
        if path is None:
            without.append(run)
            continue
        try:
            frame = pd.read_csv(path)
            frame = frame[["pathology", *OPERATING_COLUMNS]]
        except (OSError, ValueError, KeyError, pd.errors.ParserError) as error:
            log.warning("%s unreadable (%s): left out of the report", path, error)
            without.append(run)
            continue
        frames.append(frame.assign(label=run.label, replicate=run.replicate, run=str(run.path)))
    if not frames:
        return pd.DataFrame(columns=["label", "replicate", "run", "pathology", *OPERATING_COLUMNS]), without
    frame = pd.concat(frames, ignore_index=True)
    return frame[["label", "replicate", "run", "pathology", *OPERATING_COLUMNS]], without


def operating_points_section(runs: list[Run], out: Path) -> Section:
    frame, without = operating_points_frame(runs)
    heading = "Operating points"
    missing = ("Without operating_points.csv (clinical=none, or not a chestx.train run): "
               + ", ".join(f"`{r.label}` ({r.replicate})" for r in without) + ".") if without else ""
    if frame.empty:
        return Section(heading, ["No run has operating points. " + missing])
    files = _write(frame, out, OPERATING_POINTS_CSV)
    several = frame["label"].nunique() < frame["run"].nunique()
    rows = [[Cell(f"{r['label']} ({r['replicate']})" if several else str(r["label"])), Cell(str(r["pathology"])),
             *frame_cells([r[c] for c in OPERATING_COLUMNS])] for r in frame.to_dict("records")]
    notes = ["Test-split sensitivity, specificity, PPV, NPV and F1 at the threshold each run froze on its validation "
             f"split (each run's thresholds.csv and {OPERATING_POINTS_FILE}).", *([missing] if missing else [])]
    table = Table(["run", "pathology", *OPERATING_COLUMNS], rows)
    if frame[list(OPERATING_COLUMNS)].isna().any().any():
        notes.append("`n/a`: no threshold (the run's validation split has one class for that pathology), or a rate "
                     "whose denominator is 0 on the test split.")
    return Section(heading, notes, table, OPERATING_POINTS_CSV, files=files, latex_label="tab:operating_points")

