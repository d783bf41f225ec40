"""Statistics of a comparison: patient bootstrap CIs per run, replicate aggregation, paired DeLong vs a reference.

Runs that differ only in a replicate key (`seed`, k-fold's `data.fold`; `runs.discover.REPLICATE_KEYS`)
share a label and form one group: mean ± sd over its runs, each run one replicate. A run's test-time-augmentation
pass (predictions_tta.csv; `runs.discover.tta_pass`) is compared like a run of its own: its group `<label> tta=<mode>`
follows its plain group, it is bootstrapped with the same patient draws and DeLong-tested against the reference; it
is never the default reference (the best plain group is), but `reference=` may name it.

Glue over `chestx.metrics` (bootstrap_auroc, paired_tests, holm); no statistics are re-implemented
here. Runs are compared only on identical test sets: runs whose predictions cover the same image ids
with the same labels and pathologies form one *test set*, and each test set is bootstrapped in one
vectorised call with the same patient draws for every run in it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from chestx.metrics.bootstrap import bootstrap_metric
from chestx.metrics.delong import paired_tests
from chestx.metrics.ranking import METRICS
from chestx.runs.discover import ReportError, Run, tta_pass

log = logging.getLogger(__name__)

MEAN = "mean"
# pvalues.csv: one row per (tested run, pathology); `run_path` identifies the run (the table's column key): its
# folder, or a TTA pass's predictions_tta.csv
PVALUE_COLUMNS = ("label", "run", "seed", "fold", "replicate", "reference", "reference_run", "run_path", "pathology",
                  "auc", "auc_reference", "diff", "se", "z", "p_value", "p_holm")


@dataclass
class TestSet:
    """Runs scored on the same images. probs (R, N, K), labels (N, K), patient_ids (N,)."""

    runs: list[Run]
    pathologies: list[str]
    image_ids: np.ndarray
    patient_ids: np.ndarray
    labels: np.ndarray
    probs: np.ndarray


@dataclass
class Comparison:
    """Everything the tables and figures need."""

    runs: list[Run]                     # ok runs, in sweep order (plain passes only)
    groups: dict[str, list[Run]]        # label -> its runs (replicates: seeds, folds), in first-seen order; a TTA
                                        # pass's group right after its plain group
    pathologies: list[str]              # table rows (without the mean)
    per_run: pd.DataFrame               # label, run, seed, fold, pathology, auroc, lower, upper (pathology "mean" too)
    summary: pd.DataFrame               # label, pathology, auroc, lower, upper, sd, n_replicates
    pvalues: pd.DataFrame               # PVALUE_COLUMNS: one row per (tested run, pathology)
    reference: str
    n_resamples: int
    seed: int
    ci: float
    bootstrap_seconds: float
    test_sets: list[TestSet] = field(default_factory=list)
    # metrics beyond AUROC (report option metrics=[...]): name -> (per_run, summary), their value column named `name`
    other_metrics: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = field(default_factory=dict)
    passes: list[Run] = field(default_factory=list)  # the runs' TTA passes (in groups and test_sets, not in runs)


def _aligned(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by image id: ids (N,), patients (N,), probs (N, K), labels (N, K)."""
    assert run.ids is not None and run.probs is not None and run.labels is not None
    ids = run.ids["image_id"].to_numpy(dtype=str)
    order = np.argsort(ids, kind="stable")
    return ids[order], run.ids["patient_id"].to_numpy(dtype=str)[order], run.probs[order], run.labels[order]


def group_test_sets(runs: list[Run]) -> list[TestSet]:
    """Partition ok runs by (image ids, pathologies, labels)."""
    sets: list[TestSet] = []
    for run in runs:
        ids, patients, probs, labels = _aligned(run)
        for ts in sets:
            if (ts.pathologies == run.pathologies and ts.image_ids.shape == ids.shape
                    and np.array_equal(ts.image_ids, ids) and np.array_equal(ts.labels, labels, equal_nan=True)):
                ts.runs.append(run)
                ts.probs = np.concatenate([ts.probs, probs[None]])
                break
        else:
            if len(np.unique(ids)) != len(ids):
                raise ReportError(f"{run.path / run.predictions_file} lists an image id twice: one row per test image")
            sets.append(TestSet([run], list(run.pathologies), ids, patients, labels, probs[None]))
    if len(sets) > 1:
        log.warning("Runs were scored on %d different test sets (image ids / labels / pathologies differ): "
                    "DeLong tests only pair runs on the reference's test set", len(sets))
    return sets


def _bootstrap(test_sets: list[TestSet], n_resamples: int, seed: int, ci: float,
               metric: str = "auroc") -> tuple[pd.DataFrame, float]:
    """Per run and pathology (and the mean): the metric's point value in column `metric`, lower, upper."""
    rows = []
    started = time.perf_counter()
    for ts in test_sets:
        t0 = time.perf_counter()
        out = bootstrap_metric(ts.probs, ts.labels, ts.patient_ids, METRICS[metric].fn, n_resamples=n_resamples,
                               seed=seed, ci=ci, warn_invalid=metric == "auroc")
        log.info("Bootstrap %s: %d runs x %d images (%d patients) x %d pathologies, %d resamples: %.2f s", metric,
                 len(ts.runs), len(ts.image_ids), out["n_patients"], len(ts.pathologies), n_resamples,
                 time.perf_counter() - t0)
        for r, run in enumerate(ts.runs):
            for k, name in enumerate(ts.pathologies):
                observed = ~np.isnan(ts.labels[:, k])
                rows.append({"label": run.label, "run": run.path.name, "path": run.key, "seed": run.seed,
                             "fold": run.fold, "pathology": name, metric: out["value"][r, k],
                             "lower": out["lower"][r, k], "upper": out["upper"][r, k], "n_pos": int((ts.labels[observed, k] == 1).sum()),
                             "n_neg": int((ts.labels[observed, k] == 0).sum())})
            rows.append({"label": run.label, "run": run.path.name, "path": run.key, "seed": run.seed,
                         "fold": run.fold, "pathology": MEAN, metric: out["mean"][r], "lower": out["mean_lower"][r],
                         "upper": out["mean_upper"][r], "n_pos": np.nan, "n_neg": np.nan})
    return pd.DataFrame(rows), time.perf_counter() - started


def _summarise(per_run: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """One row per (label, pathology): the run's value and CI, or mean +- sd over its replicates."""
    rows = []
    for (label, pathology), block in per_run.groupby(["label", "pathology"], sort=False):
        values = block[metric].to_numpy(dtype=float)
        single = len(block) == 1
        rows.append({
            "label": label, "pathology": pathology, "n_replicates": len(block),
            metric: float(values[0]) if single else float(np.nanmean(values)) if np.any(~np.isnan(values)) else np.nan,
            "lower": float(block["lower"].iloc[0]) if single else np.nan,
            "upper": float(block["upper"].iloc[0]) if single else np.nan,
            "sd": np.nan if single else float(np.nanstd(values, ddof=1)) if np.sum(~np.isnan(values)) > 1 else np.nan,
        })
    return pd.DataFrame(rows)


def choose_reference(summary: pd.DataFrame, groups: dict[str, list[Run]], name: str | None) -> str:
    """The named group (label, model name or run folder), else the best plain group by mean AUROC (a TTA pass is
    the reference only when named by its label)."""
    plain = {label: runs for label, runs in groups.items() if not runs[0].is_tta}
    if name is None:
        means = summary[summary["pathology"] == MEAN].set_index("label")["auroc"]
        means = means[means.index.isin(list(plain))].dropna()
        if means.empty:
            return next(iter(plain))
        return str(means.idxmax())
    if name in groups:
        return name
    for label, runs in plain.items():
        if any(name in (r.model, r.path.name, str(r.path)) for r in runs):
            return label
    raise ReportError(f"reference={name!r} matches no run; use one of: {', '.join(groups)}")


def _delong(test_sets: list[TestSet], groups: dict[str, list[Run]], reference: str) -> pd.DataFrame:
    frames = []
    ref_runs = groups[reference]
    for ts in test_sets:
        index = {id(run): r for r, run in enumerate(ts.runs)}
        refs = [run for run in ref_runs if id(run) in index]
        if not refs:
            others = [run.label for run in ts.runs]
            log.warning("No DeLong test for %s: not scored on the reference's test set", ", ".join(others))
            continue
        for run in ts.runs:
            if run.label == reference:
                continue
            # pair replicates (same seed, same fold) when both have them; every fold shares the test split
            ref = next((x for x in refs if (x.seed, x.fold) == (run.seed, run.fold)), refs[0])
            pair = ts.probs[[index[id(run)], index[id(ref)]]]  # (2, N, K)
            table = paired_tests(pair, ts.labels, reference=1, pathologies=ts.pathologies).drop(columns="run")
            for position, (column, value) in enumerate({
                    "label": run.label, "run": run.path.name, "seed": run.seed, "fold": run.fold,
                    "replicate": run.replicate, "reference": reference, "reference_run": ref.path.name,
                    "run_path": run.key}.items()):
                table.insert(position, column, value)
            frames.append(table)
    if not frames:
        return pd.DataFrame(columns=list(PVALUE_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(PVALUE_COLUMNS)]


def compare(runs: list[Run], reference: str | None = None, n_resamples: int = 1000, seed: int = 0,
            ci: float = 0.95, metrics: tuple[str, ...] = ("auroc",)) -> Comparison:
    """Bootstrap every ok run and its TTA pass, aggregate replicates, test every group against the reference.
    `metrics`: names in `chestx.metrics.ranking.METRICS`; those beyond AUROC go to `Comparison.other_metrics` (same
    patient draws)."""
    ok = [r for r in runs if r.status == "ok"]
    if not ok:
        raise ReportError("no finished runs to compare (every run failed or is incomplete)")
    plain: dict[str, list[Run]] = {}
    for run in ok:
        plain.setdefault(run.label, []).append(run)
    passes = [tta for run in ok if (tta := tta_pass(run)) is not None]
    groups: dict[str, list[Run]] = {}
    for label, members in plain.items():  # each TTA pass's group right after its plain group
        groups[label] = members
        for tta in passes:
            if any(tta.path == run.path for run in members):
                groups.setdefault(tta.label, []).append(tta)
    pathologies: list[str] = []
    for run in ok + passes:
        pathologies.extend(p for p in run.pathologies if p not in pathologies)
    test_sets = group_test_sets(ok + passes)
    per_run, seconds = _bootstrap(test_sets, n_resamples, seed, ci)
    summary = _summarise(per_run)
    ref = choose_reference(summary, groups, reference)
    log.info("Reference for DeLong tests: %s%s", ref, "" if reference else " (best mean AUROC)")
    others = {}
    for name in (m for m in metrics if m != "auroc"):
        other, more = _bootstrap(test_sets, n_resamples, seed, ci, name)
        others[name] = (other, _summarise(other, name))
        seconds += more
    return Comparison(ok, groups, pathologies, per_run, summary, _delong(test_sets, groups, ref), ref,
                      n_resamples, seed, ci, seconds, test_sets, others, passes)
