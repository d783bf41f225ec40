"""The report's "Published results" section: each run beside the published entries it can be compared with.

Entries come from the registry (`chestx.published`, a data file naming where every number was read). A run
(its metrics.json `dataset`, config `data.split` / `data.chexnet_labels` / `data.csv`, its scored findings) meets
each entry on its dataset in one of two ways (`chestx.published.registry.differences`):

- **like for like** (same dataset, split and labels; a single model, one pass; the run scores the findings):
  published.csv, one row per (run, finding): the run's AUROC with its patient-bootstrap interval, the published
  value, and whether the published value lies inside the interval;
- **with differences** (another split, other labels, a protocol such as ensemble / TTA / linear probe, training on
  another dataset): published_other.csv, one row per (run, entry) with every difference named. These never share
  the like-for-like column.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from chestx.comparison.compare import MEAN, Comparison
from chestx.comparison.tables import Cell, Section, Table, fmt
from chestx.published.registry import Entry, RunFacts, differences, load_registry, run_facts
from chestx.runs.discover import Run

PUBLISHED_CSV = "published.csv"
OTHER_CSV = "published_other.csv"
COLUMNS = ("label", "replicate", "run", "entry", "pathology", "auroc", "lower", "upper", "published", "inside")
OTHER_COLUMNS = ("label", "replicate", "run", "entry", "source", "split", "protocol", "published_mean",
                 "differs_by", "link")


def facts_of(run: Run) -> RunFacts:
    return run_facts(run.config, run.metrics, run.pathologies)


def _like_rows(run: Run, entry: Entry, per_run: pd.DataFrame) -> list[dict]:
    mine = per_run[per_run["path"] == str(run.path)].set_index("pathology")
    rows = []
    for name, value in entry.auroc.items():
        rows.append((name, value))
    if entry.mean_is_mean_of_findings and entry.mean is not None and set(entry.findings) == set(run.pathologies):
        rows.append((MEAN, entry.mean))  # the run's bootstrap mean is over the same findings
    out = []
    for name, published in rows:
        auroc, lower, upper = (float(mine.loc[name, c]) for c in ("auroc", "lower", "upper"))
        inside = None if pd.isna(lower) or pd.isna(upper) else bool(lower <= published <= upper)
        out.append({"label": run.label, "replicate": run.replicate, "run": str(run.path), "entry": entry.id,
                    "pathology": name, "auroc": auroc, "lower": lower, "upper": upper, "published": published,
                    "inside": {None: "n/a", True: "yes", False: "no"}[inside]})
    return out


def published_frames(comparison: Comparison, entries: list[Entry]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(like-for-like rows, rows of entries with differences) for every finished run."""
    like, other = [], []
    for run in comparison.runs:
        facts = facts_of(run)
        for entry in entries:
            diff = differences(entry, facts)
            if diff is None:
                continue
            if not diff:
                like.extend(_like_rows(run, entry, comparison.per_run))
            else:
                other.append({"label": run.label, "replicate": run.replicate, "run": str(run.path),
                              "entry": entry.id, "source": entry.source, "split": entry.split,
                              "protocol": entry.protocol_text, "published_mean": entry.mean,
                              "differs_by": "; ".join(diff), "link": entry.link})
    return pd.DataFrame(like, columns=list(COLUMNS)), pd.DataFrame(other, columns=list(OTHER_COLUMNS))


def published_section(comparison: Comparison | None, out: Path, entries: list[Entry] | None = None) -> Section:
    """The section, its two CSVs written beside the report (docs/report.md, "Published results")."""
    heading = "Published results"
    if comparison is None:
        return Section(heading, ["No run finished: nothing to put beside published results."])
    entries = load_registry() if entries is None else entries
    like, other = published_frames(comparison, entries)
    files = {}
    for frame, name in ((like, PUBLISHED_CSV), (other, OTHER_CSV)):
        frame.to_csv(out / name, index=False, float_format="%.6f")
        files[name] = out / name
    notes = [f"Entries of the registry (chestx/published/results.yaml, {len(entries)} entries; docs/published.md) on "
             "each run's dataset. **Like for like** (same dataset, split, labels and findings; one model, one pass): "
             f"the run's AUROC with its {comparison.ci:.0%} patient-bootstrap interval, the published value and "
             f"whether it lies inside ({PUBLISHED_CSV})."]
    several = like["label"].nunique() < like["run"].nunique() if not like.empty else False
    table = None
    if like.empty:
        notes.append("No entry is like for like with these runs (dataset, split, labels or findings differ).")
    else:
        rows = [[Cell(f"{r['label']} ({r['replicate']})" if several else str(r["label"])), Cell(str(r["entry"])),
                 Cell(str(r["pathology"])), Cell(f"{fmt(r['auroc'])} [{fmt(r['lower'])}, {fmt(r['upper'])}]"),
                 Cell(fmt(r["published"], 4)), Cell(str(r["inside"]))] for r in like.to_dict("records")]
        table = Table(["run", "published entry", "pathology", "AUROC [95% CI]" if comparison.ci == 0.95
                       else f"AUROC [{comparison.ci:.0%} CI]", "published", "inside CI"], rows)
    if other.empty:
        notes.append("No other entry on these runs' datasets.")
    else:
        notes.append(f"Not like for like, listed apart with what differs ({OTHER_CSV}, not in the column above):")
        for r in other.drop_duplicates(subset=["entry", "differs_by"]).to_dict("records"):
            mean = "" if pd.isna(r["published_mean"]) else f", stated mean {r['published_mean']:g}"
            notes.append(f"- `{r['entry']}` ({r['source']}{mean}): {r['differs_by']}.")
    return Section(heading, notes, table, PUBLISHED_CSV, files=files, latex_label="tab:published")
