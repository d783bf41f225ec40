"""Statistics of a label table and its split, as `chestx.explore` reports them.

Counts follow the chosen uncertainty policy: `positive` / `negative` are cells equal to 1 / 0 after
the policy, `soft` the cells in (0, 1) (CheXpert `lsr_*`), `unknown` the NaN cells; `uncertain`
counts the source's -1.0 cells, whichever of the others the policy turned them into. Figures:
a co-occurrence heatmap and age / sex / view bar charts.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chestx.core.run_folder import SPLIT_FILE
from chestx.data.labels.table import LabelTable, find_pathology
from chestx.data.labels.splits import SPLITS, save_split

log = logging.getLogger(__name__)

AGE_BINS = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, np.inf]
AGE_LABELS = ["0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89", "90+"]


def _groups(split: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(name, bool mask) for each split present, then 'all'."""
    names = [s for s in SPLITS if (split == s).any()] + sorted(set(split) - set(SPLITS) - {""})
    return [(s, split == s) for s in names] + [("all", np.ones(len(split), dtype=bool))]


def overview(table: LabelTable, split: np.ndarray) -> pd.DataFrame:
    """Per split: images, patients, images per patient (mean / median / max), age mean / median."""
    rows = []
    age = pd.to_numeric(table.frame["age"], errors="coerce").to_numpy(dtype=np.float64)
    patients = table.frame["patient_id"].astype(str).to_numpy()
    for name, mask in _groups(split):
        per_patient = pd.Series(patients[mask]).value_counts()
        rows.append({
            "split": name, "images": int(mask.sum()), "patients": int(per_patient.size),
            "images_per_patient_mean": float(per_patient.mean()) if per_patient.size else np.nan,
            "images_per_patient_median": float(per_patient.median()) if per_patient.size else np.nan,
            "images_per_patient_max": int(per_patient.max()) if per_patient.size else 0,
            "age_mean": float(np.nanmean(age[mask])) if np.isfinite(age[mask]).any() else np.nan,
            "age_median": float(np.nanmedian(age[mask])) if np.isfinite(age[mask]).any() else np.nan,
        })
    return pd.DataFrame(rows)


def label_counts(table: LabelTable, split: np.ndarray) -> pd.DataFrame:
    """split, pathology, positive, negative, soft, unknown, uncertain (see the module docstring)."""
    labels, uncertain = table.labels, table.uncertain  # (N, K)
    parts = []
    for name, mask in _groups(split):
        lab = labels[mask]
        parts.append(pd.DataFrame({
            "split": name, "pathology": table.pathologies,
            "positive": (lab == 1).sum(axis=0), "negative": (lab == 0).sum(axis=0),
            "soft": ((lab > 0) & (lab < 1)).sum(axis=0), "unknown": np.isnan(lab).sum(axis=0),
            "uncertain": uncertain[mask].sum(axis=0),
        }))
    return pd.concat(parts, ignore_index=True)


def cooccurrence(labels: np.ndarray, pathologies: list[str]) -> pd.DataFrame:
    """(K, K) images positive for both; the diagonal is each pathology's positives."""
    pos = (labels == 1).astype(np.int64)  # (N, K)
    return pd.DataFrame(pos.T @ pos, index=pathologies, columns=pathologies)


def demographics(table: LabelTable, split: np.ndarray) -> pd.DataFrame:
    """Long table split, variable (age / sex / view), value, count; missing values as 'unknown'."""
    age = pd.to_numeric(table.frame["age"], errors="coerce")
    values = {
        "age": pd.cut(age, AGE_BINS, right=False, labels=AGE_LABELS).astype(object).fillna("unknown"),
        "sex": table.frame["sex"].astype(object).fillna("unknown").astype(str),
        "view": table.frame["view"].astype(object).fillna("unknown").astype(str),
    }
    parts = []
    for variable, series in values.items():
        counts = pd.crosstab(series.to_numpy(), split)  # (values, splits)
        counts["all"] = counts.sum(axis=1)
        long = counts.reset_index(names="value").melt(id_vars="value", var_name="split", value_name="count")
        parts.append(long.assign(variable=variable))
    out = pd.concat(parts, ignore_index=True)
    order = {s: i for i, (s, _) in enumerate(_groups(split))}
    out = out[out["split"].isin(order)]
    out = out.sort_values(["variable", "split", "value"], key=lambda c: c.map(order) if c.name == "split" else c)
    return out[["split", "variable", "value", "count"]].reset_index(drop=True)


def patient_overlap(table: LabelTable, split: np.ndarray) -> pd.DataFrame:
    """Patients shared by each pair of splits (0 everywhere for a valid split)."""
    patients = table.frame["patient_id"].astype(str).to_numpy()
    sets = {s: set(patients[split == s]) for s, _ in _groups(split) if s != "all"}
    names = list(sets)
    rows = [{"split_a": a, "split_b": b, "shared_patients": len(sets[a] & sets[b])}
            for i, a in enumerate(names) for b in names[i + 1:]]
    return pd.DataFrame(rows, columns=["split_a", "split_b", "shared_patients"])


def query(table: LabelTable, split: np.ndarray, name: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """Cases positive for `name`, and the pathologies co-occurring with it, most frequent first."""
    pathology = table.pathologies[find_pathology(name, table.pathologies, "query",
                                                 " (data.findings=all for every CheXpert observation)")]
    k = table.pathologies.index(pathology)
    pos = table.labels == 1  # (N, K)
    cases = pos[:, k]
    others = [j for j in range(len(table.pathologies)) if j != k]
    with_other = pos[cases][:, others].sum(axis=0)  # (K-1,)
    n = int(cases.sum())
    table_out = pd.DataFrame({
        "pathology": [table.pathologies[j] for j in others], "cases": with_other,
        "fraction_of_query_cases": with_other / n if n else np.nan,
    }).sort_values(["cases", "pathology"], ascending=[False, True], kind="stable").reset_index(drop=True)
    summary = {
        "pathology": pathology, "cases": n,
        "patients": int(table.frame.loc[cases, "patient_id"].nunique()),
        "alone": int((cases & (pos[:, others].sum(axis=1) == 0)).sum()),
        "cases_per_split": {s: int((cases & m).sum()) for s, m in _groups(split) if s != "all"},
    }
    return summary, table_out


def explore(table: LabelTable, split: np.ndarray, out_dir: str | Path, query_name: str | None = None,
            figures: bool = True) -> dict[str, Any]:
    """Compute every table, write them (and the figures) to `out_dir`; returns the tables."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "overview": overview(table, split), "label_counts": label_counts(table, split),
        "demographics": demographics(table, split), "patient_overlap": patient_overlap(table, split),
    }
    co = [cooccurrence(table.labels[m], table.pathologies).rename_axis("pathology").reset_index().assign(split=s)
          for s, m in _groups(split)]
    result["cooccurrence"] = pd.concat(co, ignore_index=True)[["split", "pathology", *table.pathologies]]
    for key in ("overview", "label_counts", "demographics", "patient_overlap", "cooccurrence"):
        result[key].to_csv(out_dir / f"{key}.csv", index=False, float_format="%.4g")
    save_split(out_dir / SPLIT_FILE, table.frame, split)  # the same file a training run saves
    if query_name:
        summary, table_q = query(table, split, query_name)
        result["query"], result["query_table"] = summary, table_q
        table_q.to_csv(out_dir / f"query_{summary['pathology'].replace(' ', '_')}.csv", index=False,
                       float_format="%.4g")
    if figures:
        plot_cooccurrence(cooccurrence(table.labels, table.pathologies), out_dir / "cooccurrence.png",
                          f"Co-occurrence of positive labels ({len(table)} images)")
        plot_demographics(result["demographics"], out_dir / "demographics.png")
    return result


def format_report(result: dict[str, Any]) -> str:
    """What the command prints."""
    counts = result["label_counts"]
    wide = counts.pivot(index="pathology", columns="split", values="positive")
    order = list(dict.fromkeys(counts["pathology"]))
    wide = wide.loc[order, [c for c in result["overview"]["split"] if c in wide.columns]]
    totals = counts[counts["split"] == "all"].set_index("pathology").loc[order]
    wide = wide.add_prefix("pos_").join(totals[["negative", "uncertain", "unknown"]].add_suffix("_all"))
    lines = ["Images and patients per split:", result["overview"].to_string(index=False, float_format="%.2f"),
             "", "Positives per split (and negatives / uncertain / unknown over all splits):", wide.to_string(), ""]
    overlap = result["patient_overlap"]
    lines.append("Patient overlap between splits: " + ", ".join(
        f"{r.split_a}/{r.split_b} {r.shared_patients}" for r in overlap.itertuples()) +
        (" (OK: 0)" if int(overlap["shared_patients"].sum()) == 0 else " (NOT DISJOINT)"))
    if "query" in result:
        q = result["query"]
        lines += ["", f"query={q['pathology']}: {q['cases']} cases ({q['patients']} patients; per split "
                      f"{q['cases_per_split']}), {q['alone']} with no other positive label. Co-occurring:",
                  result["query_table"].to_string(index=False, float_format="%.3f")]
    return "\n".join(lines)


def plot_cooccurrence(matrix: pd.DataFrame, path: Path, title: str) -> Path:
    """Square (K, K) count matrix with counts printed in the cells."""
    from chestx.core.figures import plt, save_figure

    k = len(matrix)
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.5, 0.55 * k + 2))
    values = matrix.to_numpy(dtype=np.float64)
    ax.imshow(np.log1p(values), cmap="viridis")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=6, color="white")
    ax.set_xticks(range(k), matrix.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(k), matrix.index, fontsize=7)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def plot_demographics(demographics: pd.DataFrame, path: Path) -> Path:
    """Bar charts of age bins, sex and view per split from the long demographics table."""
    from chestx.core.figures import plt, save_figure

    variables = [v for v in ("age", "sex", "view") if v in set(demographics["variable"])]
    fig, axes = plt.subplots(1, max(1, len(variables)), figsize=(5 * max(1, len(variables)), 3.2), squeeze=False)
    for ax, var in zip(axes.ravel(), variables):
        part = demographics[demographics["variable"] == var]
        wide = part.pivot_table(index="value", columns="split", values="count", aggfunc="sum", sort=False).fillna(0)
        wide.plot.bar(ax=ax, width=0.8)
        ax.set_title(var, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("")
    return save_figure(fig, path)
