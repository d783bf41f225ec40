"""The report's cross-dataset section: a train x test matrix of mean AUROC on the findings two datasets share.

Rows: the compared configurations (the report's run labels; replicates, seeds or folds, averaged: mean ± sd)
with the dataset each was trained on. Columns: test datasets: a run's own test split (internal) and every
`external/<name>/` it has (`chestx.runs.external`, written by `chestx.train ... test_data=[chexpert]` or by
`chestx.evaluate ckpt=... data=...`; the latter is put in the row of the run that trained the checkpoint when
that run is in the report).

A cell is the mean AUROC over the shared findings (the vocabulary `chestx.data.labels.table.FINDINGS`, listed in the
external folder's mapping.csv) that have an AUROC on both test splits; the internal cell is restricted to the
same findings, so an external number and the internal number it is compared with (Δ = external − internal)
average the same findings. Pairwise, never a mixture: a run scored on several external datasets that share
different findings gets one internal value per external dataset. A `data=merge` run's sources are its own test
splits: their external/<source>/ folders are its internal cells. Files: cross_dataset.csv (one row per cell) and
cross_dataset_per_run.csv (one row per run and cell).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from chestx.comparison.tables import Cell, Section, Table
from chestx.core.run_folder import (
    AUROC_FILE, EXTERNAL_DIR, MAPPING_FILE, METRICS_FILE, PREDICTIONS_FILE, dataset_name, read_metrics,
    read_predictions, read_run_config, run_dir_of_checkpoint, select,
)
from chestx.metrics.auroc import masked_auroc
from chestx.runs.discover import Run

log = logging.getLogger(__name__)

HEADING = "Cross-dataset: mean test AUROC on the shared findings (train × test)"
MATRIX_FILE = "cross_dataset.csv"
PER_RUN_FILE = "cross_dataset_per_run.csv"
HOW_TO = ("No run has an external/ folder. Score a run on another dataset's test split with "
          "`python -m chestx.train ... test_data=[chexpert] test_data.chexpert.root=/data/chexpert`, or an existing "
          "checkpoint with `python -m chestx.evaluate ckpt=<run>/checkpoints/best.ckpt data=chexpert "
          "data.root=/data/chexpert data.findings=all`.")
UNKNOWN = "unknown"


@dataclass
class Pair:
    """One run on one external dataset, and its own test split on the same findings."""

    external: str                       # external/<name>
    findings: list[str]                 # the model's names of the findings averaged
    mapping: dict[str, str]             # every shared finding: model name -> the external dataset's name
    external_auroc: float
    internal_auroc: float               # NaN without the run's own test predictions


@dataclass
class Scored:
    """A run (or a checkpoint scored by chestx.evaluate) with its external folders."""

    run: Run
    label: str
    trained_on: str                     # dataset name, e.g. "nih_sample" (chestx.core.run_folder.dataset_name)
    pairs: list[Pair] = field(default_factory=list)


def training_data(folder: Path) -> str | None:
    """The dataset a run folder's model was trained (or scored) on, by name: metrics.json `dataset` (the data config
    name, e.g. `nih_sample`), else the name of its data class (metrics.json `data` or config.yaml `data._target_`)."""
    path = Path(folder)
    metrics: dict = {}
    if (path / METRICS_FILE).is_file():
        try:
            metrics = read_metrics(path / METRICS_FILE)
        except ValueError:
            metrics = {}
    if metrics.get("dataset"):
        return str(metrics["dataset"])
    source = metrics.get("data") or select(read_run_config(path), "data._target_")
    return dataset_name(str(source)) if source else None


def checkpoint_run(run: Run) -> Path | None:
    """For a `chestx.evaluate ckpt=...` folder, the run folder that trained the checkpoint; None otherwise."""
    ckpt = run.metrics.get("ckpt") or select(run.config, "ckpt")
    return run_dir_of_checkpoint(str(ckpt)).resolve() if ckpt else None


def read_auroc(folder: Path) -> pd.Series | None:
    """pathology -> test AUROC (NaN: one class) from auroc.csv, else from predictions.csv; None without either."""
    folder = Path(folder)
    try:
        if (folder / AUROC_FILE).is_file():
            table = pd.read_csv(folder / AUROC_FILE)
        elif (folder / PREDICTIONS_FILE).is_file():
            _, probs, labels, names = read_predictions(folder / PREDICTIONS_FILE)
            table = masked_auroc(probs, labels, names)
        else:
            return None
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as error:
        log.warning("%s unreadable (%s): left out of the cross-dataset section", folder, error)
        return None
    table = table[table["pathology"] != "mean"]
    return pd.Series(table["auroc"].to_numpy(dtype=float), index=table["pathology"].astype(str))


def pair(folder: Path, internal: pd.Series | None) -> Pair | None:
    """One external/<name>/ folder against the run's own per-pathology AUROC (`internal`, None: no own split)."""
    external = read_auroc(folder)
    if external is None:
        return None
    mapping = dict(zip(external.index, external.index))
    if (folder / MAPPING_FILE).is_file():
        frame = pd.read_csv(folder / MAPPING_FILE, dtype=str)
        mapping.update(zip(frame["pathology"], frame["dataset_name"]))
    usable = external.notna()
    if internal is not None:
        usable &= internal.reindex(external.index).notna()
    findings = list(external.index[usable])
    left_out = [p for p in external.index if p not in findings]
    if left_out:
        log.info("%s: %s left out (one class on a test split: no AUROC), internal and external alike", folder,
                 ", ".join(left_out))
    return Pair(folder.name, findings, mapping, _mean_of(external, findings),
                _mean_of(internal, findings) if internal is not None else float("nan"))


def _mean_of(auroc: pd.Series, findings: list[str]) -> float:
    return float(auroc[findings].mean()) if findings else float("nan")


def _external_folders(run: Run) -> list[Path]:
    root = run.path / EXTERNAL_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and ((p / AUROC_FILE).is_file()
                                                                or (p / PREDICTIONS_FILE).is_file()))


def collect(runs: list[Run]) -> tuple[list[Scored], list[Run]]:
    """Finished runs with their external folders, `chestx.evaluate ckpt=...` folders attached to the run that
    trained the checkpoint (or a row of their own); and the finished runs without any external folder."""
    scored: dict[Path, Scored] = {}
    for run in runs:
        if run.status == "ok":
            internal = read_auroc(run.path)
            trained = training_data(run.path) or UNKNOWN
            pairs = [p for f in _external_folders(run) if (p := pair(f, internal)) is not None]
            scored[run.path.resolve()] = Scored(run, run.label, trained, pairs)
    for run in runs:
        source = checkpoint_run(run)
        folders = _external_folders(run)
        if run.status == "failed" or source is None or not folders:
            continue
        owner = scored.get(source)
        if owner is None:
            labels = {s.label for s in scored.values()}
            label = run.label if run.label not in labels else f"{run.label} ({run.path.name})"
            owner = scored.setdefault(run.path.resolve(), Scored(run, label, training_data(source) or UNKNOWN))
        internal = read_auroc(owner.run.path) if owner.run.status == "ok" else None
        for folder in folders:
            if any(p.external == folder.name for p in owner.pairs):
                log.warning("%s: %s was already scored on %s; kept that one", folder, owner.run.path, folder.name)
            elif (p := pair(folder, internal)) is not None:
                owner.pairs.append(p)
    with_pairs = [s for s in scored.values() if s.pairs]
    without = [s.run for s in scored.values() if not s.pairs and s.run.status == "ok"]
    return with_pairs, without


def per_run_frame(scored: list[Scored]) -> pd.DataFrame:
    """One row per run and cell: the internal one paired with each external dataset, then the external one."""
    rows = []
    for s in scored:
        base = {"label": s.label, "run": str(s.run.path), "seed": s.run.seed, "fold": s.run.fold,
                "trained_on": s.trained_on}
        sources = set(s.run.metrics.get("sources") or [])  # data=merge: its sources' own test splits are internal
        for p in s.pairs:
            common = {"shared_with": p.external, "findings": ";".join(p.findings), "n_findings": len(p.findings)}
            if p.external in sources:
                rows.append(base | {"test_data": p.external, "internal": True, **common,
                                    "auroc_mean": p.external_auroc, "delta": np.nan})
                continue
            if s.run.status == "ok":  # has a test split of its own (not a chestx.evaluate ckpt=... folder alone)
                rows.append(base | {"test_data": s.trained_on, "internal": True, **common,
                                    "auroc_mean": p.internal_auroc, "delta": np.nan})
            rows.append(base | {"test_data": p.external, "internal": False, **common, "auroc_mean": p.external_auroc,
                                "delta": p.external_auroc - p.internal_auroc})
    return pd.DataFrame(rows)


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    """Replicates as the rest of the report: NaN-mean, sample sd (ddof 1) when two or more have a number."""
    finite = values[~np.isnan(values)]
    mean = float(finite.mean()) if finite.size else float("nan")
    return mean, float(finite.std(ddof=1)) if finite.size > 1 else float("nan")


def summary_frame(per_run: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: label, trained_on, test_data, internal, shared_with, findings, n_replicates,
    auroc_mean, auroc_sd, delta_mean (over replicates)."""
    rows = []
    keys = ["label", "trained_on", "test_data", "internal", "shared_with"]
    for key, block in per_run.groupby(keys, sort=False):
        mean, sd = _mean_sd(block["auroc_mean"].to_numpy(dtype=float))
        findings = list(dict.fromkeys(f for text in block["findings"] for f in str(text).split(";") if f))
        rows.append(dict(zip(keys, key)) | {
            "findings": ";".join(findings), "n_replicates": len(block), "auroc_mean": mean, "auroc_sd": sd,
            "delta_mean": _mean_sd(block["delta"].to_numpy(dtype=float))[0]})
    return pd.DataFrame(rows)


def _value(row: pd.Series) -> str:
    if math.isnan(row["auroc_mean"]):
        return "n/a"
    text = f"{row['auroc_mean']:.3f}"
    return text + (f" ± {row['auroc_sd']:.3f}" if row["n_replicates"] > 1 and not math.isnan(row["auroc_sd"]) else "")


def _headers(summary: pd.DataFrame) -> list[str]:
    """The test datasets (column headers), training datasets first."""
    return list(dict.fromkeys([*summary.loc[summary["internal"], "test_data"],
                               *summary.loc[~summary["internal"], "test_data"]]))


def matrix_table(summary: pd.DataFrame) -> Table:
    """Rows: (configuration, trained on); columns: test datasets; bold: the best external number of a column."""
    headers = _headers(summary)
    external = summary[~summary["internal"]]
    compared = external.groupby("test_data")["auroc_mean"].agg(["max", "count"])
    best = compared.loc[compared["count"] > 1, "max"]  # a column with one number has nothing to compare
    rows = []
    for (label, trained), block in summary.groupby(["label", "trained_on"], sort=False):
        row = [Cell(label), Cell(trained)]
        for key in headers:
            cells = block[block["test_data"] == key]
            if cells.empty:
                row.append(Cell("—"))
                continue
            if cells["internal"].iloc[0]:
                distinct = cells.drop_duplicates("findings")
                if len(distinct) == 1:
                    row.append(Cell(f"{_value(distinct.iloc[0])} (internal)"))
                else:  # shared findings differ per external dataset: one internal value each
                    row.append(Cell(" / ".join(f"{_value(r)} (internal, {r['shared_with']} findings)"
                                               for _, r in distinct.iterrows())))
                continue
            r = cells.iloc[0]
            delta = "" if math.isnan(r["delta_mean"]) else f" (Δ {r['delta_mean']:+.3f})"
            row.append(Cell(_value(r) + delta, bold=key in best.index and r["auroc_mean"] == best[key]))
        rows.append(row)
    return Table(["configuration", "trained on", *headers], rows)


def _mappings(scored: list[Scored]) -> list[str]:
    """One line per (training dataset, external dataset): the shared findings in both datasets' names."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    averaged: dict[tuple[str, str], set[str]] = {}
    for s in scored:
        for p in s.pairs:
            found.setdefault((s.trained_on, p.external), {}).update(p.mapping)
            averaged.setdefault((s.trained_on, p.external), set()).update(p.findings)
    lines = []
    for (trained, external), mapping in found.items():
        pairs = ", ".join(m if m == d else f"{m} = {d}" for m, d in mapping.items())
        never = [m for m in mapping if m not in averaged[(trained, external)]]
        lines.append(f"Shared findings, {trained} model → {external} (external/{external}): "
                     f"{pairs} ({len(mapping)})."
                     + (f" Without an AUROC on a test split (one class), so left out of both cells: "
                        f"{', '.join(never)}." if never else ""))
    return lines


DATASET_ALIASES = {"nih_sample": "nih", "nih_expert_original": "nih_expert"}  # config name -> dataset it samples


def unscored_pairs(runs: list[Scored]) -> dict[str, dict[str, int]]:
    """trained-on dataset -> {dataset its models share findings with but were not scored on: shared count}.

    Over every dataset chestx reads (`chestx.data.datasets.vocabulary.DATASET_FINDINGS`); a model's findings are
    those of its own test AUROCs (auroc.csv), the vocabulary matching them (never a NOT_SHARED finding)."""
    from chestx.data.datasets.vocabulary import DATASET_FINDINGS
    from chestx.data.labels.table import NOT_SHARED, canonical_finding

    never = {canonical_finding(name) for name in NOT_SHARED}
    findings = {d: {canonical_finding(n) for n in names} - never for d, names in DATASET_FINDINGS.items()}
    missing: dict[str, dict[str, int]] = {}
    for trained in {s.trained_on for s in runs}:
        group = [s for s in runs if s.trained_on == trained]
        done = {DATASET_ALIASES.get(p.external, p.external) for s in group for p in s.pairs}
        done.add(DATASET_ALIASES.get(trained, trained))
        model: set[str] = set()
        for s in group:
            auroc = read_auroc(s.run.path)
            model |= {canonical_finding(n) for n in (auroc.index if auroc is not None else [])} - never
        gaps = {d: len(model & f) for d, f in findings.items() if d not in done and model & f}
        if gaps:
            missing[trained] = dict(sorted(gaps.items(), key=lambda item: (-item[1], item[0])))
    return dict(sorted(missing.items()))


def _unscored_note(runs: list[Scored]) -> list[str]:
    """One line naming the dataset pairs that share findings and have no cell, with how to add them."""
    missing = unscored_pairs(runs)
    if not missing:
        return []
    pairs = "; ".join(f"trained on {trained} -> " + ", ".join(f"{d} ({n})" for d, n in gaps.items())
                      for trained, gaps in missing.items())
    names = sorted({d for gaps in missing.values() for d in gaps})
    return [f"Not scored, though they share findings with the models (shared findings in brackets): {pairs}. Add "
            f"`test_data=[{','.join(names)}]` with each dataset's root (`test_data.<name>.root=...`), or "
            "`python -m chestx.evaluate ckpt=<run>/checkpoints/best.ckpt data=<name> data.root=...`."]


def _notes(scored: list[Scored], without: list[Run], several: bool) -> list[str]:
    lines = [
        "Rows: a configuration (replicates averaged: mean ± sd) and the dataset it was trained on; columns: the "
        "dataset it was tested on, its own test split marked (internal). A cell is the mean test AUROC over the "
        "findings both datasets label (chestx.data.labels.table.FINDINGS, docs/datasets/findings.md) that have an "
        "AUROC on both test "
        "splits; the internal cell is restricted to the same findings, so internal and external numbers average "
        "the same findings, and (Δ) is external − internal. Bold: the best external number of a column.",
        *_mappings(scored)]
    if several:
        lines.append("A run scored on several external datasets sharing different findings has one internal value "
                     "per external dataset (`<name> findings`: on the findings shared with it), never a mixture.")
    lines += _unscored_note(scored)
    lines.append(f"Per cell and per run: {MATRIX_FILE}, {PER_RUN_FILE}.")
    if without:
        lines.append("Without external/ (not scored on another dataset): "
                     + ", ".join(f"`{r.label}` ({r.replicate})" for r in without) + ".")
    return lines


def cross_dataset_section(runs: list[Run], out: Path) -> Section:
    """The matrix, its text and files; only the how-to note when no run has an external/ folder."""
    scored, without = collect(runs)
    if not scored:
        log.info("Cross-dataset section left out: %s", HOW_TO)
        return Section("Cross-dataset", [HOW_TO])
    per_run = per_run_frame(scored)
    summary = summary_frame(per_run)
    files = {MATRIX_FILE: out / MATRIX_FILE, PER_RUN_FILE: out / PER_RUN_FILE}
    summary.to_csv(files[MATRIX_FILE], index=False, float_format="%.6f")
    per_run.to_csv(files[PER_RUN_FILE], index=False, float_format="%.6f")
    table = matrix_table(summary)
    internal = summary[summary["internal"] & (summary["test_data"] == summary["trained_on"])]
    several = bool((internal.groupby(["label", "trained_on"])["findings"].nunique() > 1).any())
    notes = _notes(scored, without, several)
    log.info("Cross-dataset matrix: %d rows x %d test datasets -> %s", len(table.rows), len(table.columns) - 2,
             files[MATRIX_FILE])
    return Section(HEADING, notes, table, MATRIX_FILE, files=files, latex_label="tab:cross_dataset")
