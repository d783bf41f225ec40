"""The report's sections of metrics beyond AUROC (`metrics=[auroc, auprc, sens_at_spec90]`): one section each.

Same cells as the AUROC table (`chestx.comparison.sections.auroc_table`): a run's value with its patient-bootstrap
percentile interval (the same patient draws as AUROC: same `resamples=` and `seed=`), or mean ± sd over replicates;
best per row in bold. The mean row is the metric's mean over pathologies with its own bootstrap interval (for AUPRC:
mAP). No significance marks: the DeLong test is for AUROC only. A run's TTA pass is a column of its own, as in the
AUROC table. Files: `<metric>_table.csv`, `<metric>_per_run.csv`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from chestx.comparison.compare import MEAN, Comparison
from chestx.comparison.sections import AUROC_SUFFIXES, auroc_table, tta_note
from chestx.comparison.tables import NO_ROW, Cell, Section
from chestx.metrics.ranking import METRICS

TABLE_CSV = "{metric}_table.csv"
PER_RUN_CSV = "{metric}_per_run.csv"


def metric_frame(comparison: Comparison, metric: str) -> pd.DataFrame:
    """Wide CSV as auroc_table.csv: pathology, then per group `<label>`, `<label> lower|upper|sd|n_replicates`."""
    summary = comparison.other_metrics[metric][1]
    frame = pd.DataFrame({"pathology": [*comparison.pathologies, MEAN]})
    for label in comparison.groups:
        block = summary[summary["label"] == label].set_index("pathology")
        for column, suffix in AUROC_SUFFIXES:
            frame[label + suffix] = frame["pathology"].map(block[metric if column == "auroc" else column])
    return frame


def metric_section(comparison: Comparison, out: Path, metric: str) -> Section:
    """One metric's table, its CSV and its per-run CSV."""
    spec = METRICS[metric]
    frame = metric_frame(comparison, metric)
    table_csv, per_run_csv = TABLE_CSV.format(metric=metric), PER_RUN_CSV.format(metric=metric)
    frame.to_csv(out / table_csv, index=False, float_format="%.6f")
    comparison.other_metrics[metric][0].to_csv(out / per_run_csv, index=False, float_format="%.6f")
    no_tests = pd.DataFrame(columns=["label", "pathology", "p_holm"])
    table = auroc_table(frame, no_tests, comparison.reference, list(comparison.groups))
    for row in table.rows:
        if row[0].text == MEAN:
            row[0] = Cell(spec.mean_name, bold=True)
    notes = [f"Test {spec.title} per pathology with a {comparison.ci:.0%} percentile interval from the same "
             f"patient bootstrap as AUROC ({comparison.n_resamples} resamples, seed {comparison.seed}); "
             f"row `{spec.mean_name}`: the mean over pathologies, bootstrapped as a whole. Best per row in bold; "
             f"no significance test for this metric. Numbers: {table_csv}, {per_run_csv}.",
             *tta_note(comparison, tested=False)]
    if any(c.text == NO_ROW for row in table.rows for c in row):
        notes.append(f"`{NO_ROW}`: the run group does not predict that pathology.")
    if any(c.text.startswith("n/a") for row in table.rows for c in row[1:]):
        notes.append("`n/a`: undefined, because the test split has only one class for that pathology.")
    return Section(f"Test {spec.title}", notes, table, table_csv,
                   files={table_csv: out / table_csv, per_run_csv: out / per_run_csv},
                   latex_label=f"tab:{metric}")


def metric_sections(comparison: Comparison, out: Path) -> list[Section]:
    """A section per metric beyond AUROC, in the order of `metrics=[...]`."""
    return [metric_section(comparison, out, name) for name in comparison.other_metrics]
