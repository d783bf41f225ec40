"""Build every report file from sweep / run folders (`chestx.report` and `chestx.benchmark` call this).

The report is a list of sections (`chestx.comparison.tables.Section`): test AUROC, cost, DeLong significance,
operating points (`chestx.comparison.sections`), subgroups (`.subgroups`), figures and the cross-dataset matrix
(`.cross_dataset`). Each writes the CSV its table is rendered from (auroc_table.csv, auroc_per_run.csv, costs.csv,
pvalues.csv, operating_points.csv, subgroup_gaps.csv + subgroups_per_run.csv, cross_dataset.csv +
cross_dataset_per_run.csv) and figures/*.png; then auroc_table.md, auroc_table.tex and report.html (self-contained)
show the same sections (`chestx.comparison.pages`). A section with nothing to show says why on the page.
"""
from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chestx.comparison import figures as report_figures
from chestx.comparison.cards import model_cards_section
from chestx.comparison.compare import Comparison, compare
from chestx.comparison.cross_dataset import cross_dataset_section
from chestx.comparison.gains import costs_section as gain_costs_section, gains_section
from chestx.comparison.label_efficiency import label_efficiency_section
from chestx.comparison.metric_sections import metric_sections
from chestx.comparison.pages import html_page, latex_document, markdown_page
from chestx.comparison.published import published_section
from chestx.comparison.sections import (
    auroc_section, cost_section, operating_points_section, significance_section,
)
from chestx.comparison.subgroups import subgroup_section
from chestx.comparison.tables import ALPHA, Section
from chestx.core.run_folder import select
from chestx.metrics.ranking import metric_names
from chestx.runs.discover import ReportError, Run, fixed_settings, label_runs, load_runs

log = logging.getLogger(__name__)

MARKDOWN_FILE = "auroc_table.md"
LATEX_FILE = "auroc_table.tex"
HTML_FILE = "report.html"

SETTING_KEYS = (  # resolved config values stated in the report (those all columns share; the others named)
    ("data._target_", "data"), ("data.split", "split"), ("data.ratios", "ratios"), ("data.folds", "k-fold folds"),
    ("data.image_size", "image px"), ("data.batch_size", "batch"), ("loader.batch_size", "batch"),
    ("trainer.max_epochs", "max epochs"),
    ("trainer.limit_train_batches", "train batches/epoch"), ("optimizer._target_", "optimizer"),
    ("optimizer.lr", "lr"), ("loss._target_", "loss"), ("model.pretrained", "pretrained"),
)


@dataclass
class ReportResult:
    out: Path
    runs: list[Run]
    comparison: Comparison | None
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def n_ok(self) -> int:
        return sum(r.status == "ok" for r in self.runs)


def _settings(run: Run) -> dict[str, Any]:
    out = {}
    for key, name in SETTING_KEYS:
        if "trainer" not in run.config and not key.startswith(("data._target_", "data.split", "data.ratios")):
            continue  # chestx.evaluate runs: no training settings
        if key == "data.ratios" and select(run.config, "data.split") != "random":
            continue
        value = select(run.config, key)
        if value is not None:
            out[name] = str(value).rsplit(".", 1)[-1] if key.endswith("_target_") else value
    return out


def _span(values: list[int]) -> str:
    """[0, 1, 2] -> '0..2'; [0, 2] -> '0, 2'."""
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values))


def _replicates(comparison: Comparison) -> str | None:
    """What a column's mean ± sd is taken over (seeds, k-fold folds, or both); None when every column is one run."""
    runs = [run for group in comparison.groups.values() if len(group) > 1 for run in group]
    if not runs:
        return None
    seeds = sorted({str(run.seed) for run in runs}, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else s))
    folds = sorted({run.fold for run in runs if run.fold is not None})
    ks = sorted({run.folds for run in runs if run.folds is not None})
    parts = [f"seeds {', '.join(seeds)}"] if len(seeds) > 1 else []
    if folds:
        parts.append(f"folds {_span(folds)}" + (f" of data.folds={ks[0]}" if len(ks) == 1 else ""))
    sizes = sorted({len(group) for group in comparison.groups.values() if len(group) > 1})
    text = (f"Replicates: {' × '.join(parts) or 'repeated runs of the same settings'} "
            f"(n = {_span(sizes)} per column): each run is one replicate; a column shows their mean ± sd.")
    if folds:
        text += (" The folds split the train+validation pool by patient (each fold validates once, the others "
                 "train); every fold is tested on the same test split"
                 + (", and DeLong tests pair runs of the same fold." if len(comparison.groups) > 1 else "."))
    return text


def _describe(comparison: Comparison | None, runs: list[Run], swept: list[str]) -> list[str]:
    lines = [f"{len(runs)} run folders: {sum(r.status == 'ok' for r in runs)} finished, "
             f"{sum(r.status == 'failed' for r in runs)} failed, {sum(r.status == 'incomplete' for r in runs)} incomplete."]
    if swept:
        lines.append("Columns vary: " + ", ".join(swept) + ".")
    fixed = fixed_settings(runs)
    if fixed:
        lines.append("Common overrides: " + ", ".join(f"{k}={v}" for k, v in fixed.items()) + ".")
    if comparison is not None:
        replicates = _replicates(comparison)
        if replicates:
            lines.append(replicates)
        # those the columns share; the others named. An ensemble has no config of its own (its members' settings
        # are theirs): it is left out of this line rather than counted as differing in every setting.
        every = [s for s in (_settings(run) for run in comparison.runs) if s]
        settings = {k: v for k, v in (every[0] if every else {}).items() if all(s.get(k) == v for s in every)}
        varying = sorted({k for s in every for k in s} - set(settings))
        if settings:
            lines.append("Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items())
                         + ("; differing between columns: " + ", ".join(varying) if varying else "") + ".")
        elif varying:
            lines.append("Settings differing between columns: " + ", ".join(varying) + ".")
        ts = comparison.test_sets[0]
        lines.append(
            f"Cells: test AUROC with a {comparison.ci:.0%} percentile CI from a patient-level bootstrap "
            f"({comparison.n_resamples} resamples of the {len(set(ts.patient_ids))} test patients, "
            f"{len(ts.image_ids)} images; seed {comparison.seed}); with several replicates, mean ± sd over them. "
            f"Bold: best in the row. `*`: differs from the reference **{comparison.reference}** "
            f"(paired DeLong test, Holm-corrected over pathologies, p < {ALPHA}).")
    return lines


def _check_options(folders: list[Path], n_resamples: int, ci: float) -> None:
    if not folders:
        raise ReportError("runs=[] names no folder: pass runs=[<sweep or run folder>,...]")
    if n_resamples < 1:
        raise ReportError(f"resamples={n_resamples}: the bootstrap needs at least 1 resample (1000 recommended)")
    if not 0.0 < ci < 1.0:
        raise ReportError(f"ci={ci}: the confidence level must be in (0, 1), e.g. ci=0.95")
    if n_resamples < 1000:
        log.warning("resamples=%d: fewer than 1000 bootstrap resamples give unstable 95%% CI bounds", n_resamples)


def comparison_sections(comparison: Comparison | None, runs: list[Run], out: Path) -> list[Section]:
    """AUROC, cost, significance, operating points, subgroups and figures of the finished runs; cross-dataset of all."""
    if comparison is None:
        sections = [Section("Test AUROC", ["No run finished: nothing to compare (see Runs left out)."])]
    else:
        figures = report_figures.all_figures(comparison, out / "figures")
        sections = [auroc_section(comparison, out), *metric_sections(comparison, out),
                    cost_section(comparison.runs, out), gains_section(comparison.runs, out),
                    gain_costs_section(comparison.runs, out),
                    significance_section(comparison, out), operating_points_section(comparison.runs, out),
                    subgroup_section(comparison.runs, out),
                    Section("Figures", figures=figures, files={p.name: p for p in figures.values()})]
    sections.insert(1, published_section(comparison, out))  # beside the AUROC table (chestx.comparison.published)
    if comparison is not None:  # only when the runs differ in data.train_fraction
        efficiency = label_efficiency_section(comparison.runs, out, comparison.n_resamples, comparison.ci,
                                              comparison.seed)
        sections += [efficiency] if efficiency is not None else []
    return [*sections, cross_dataset_section(runs, out),  # also chestx.evaluate ckpt=... folders
            model_cards_section(runs, out)]


def write_documents(out: Path, title: str, intro: list[str], sections: list[Section],
                    failures: list[Run]) -> dict[str, Path]:
    """auroc_table.md, auroc_table.tex and report.html from the same sections."""
    built = (f"Built {time.strftime('%Y-%m-%d %H:%M')} on {platform.node() or 'unknown host'} "
             f"({platform.machine()}, Python {platform.python_version()}).")
    documents = {MARKDOWN_FILE: markdown_page(title, intro, sections, failures), LATEX_FILE: latex_document(sections),
                 HTML_FILE: html_page(title, [*intro, built], sections, failures)}
    for name, text in documents.items():
        (out / name).write_text(text)
    return {name: out / name for name in documents}


def build_report(folders: list[Path], out: Path | None = None, reference: str | None = None,
                 n_resamples: int = 1000, seed: int = 0, ci: float = 0.95,
                 title: str = "chestx benchmark: test AUROC per pathology", notes: list[str] | None = None,
                 metrics: list[str] | tuple[str, ...] = ("auroc",)) -> ReportResult:
    """Read runs under `folders`, compare the finished ones, write every file; never fails on a broken run.

    `reference`: the run the DeLong tests compare against (column label, model name or run folder;
    default the best mean AUROC). `metrics`: names in `chestx.metrics.ranking.METRICS`, a section each (AUROC
    always). Raises ReportError when nothing can be built or an option is invalid.
    """
    _check_options(folders, n_resamples, ci)
    try:
        metrics = metric_names(list(metrics))
    except ValueError as error:
        raise ReportError(str(error)) from error
    started = time.perf_counter()
    folders = [Path(f) for f in folders]
    out = Path(out) if out else folders[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(folders)
    swept = label_runs(runs)
    failures = [r for r in runs if r.status != "ok"]
    for run in failures:
        log.warning("Left out %s (%s): %s: %s", run.path, run.model, run.status, run.reason)
    comparison = compare(runs, reference, n_resamples, seed, ci, tuple(metrics)) if len(failures) < len(runs) else None
    sections = comparison_sections(comparison, runs, out)
    files = {name: path for section in sections for name, path in section.files.items()}
    files |= write_documents(out, title, [*(notes or []), *_describe(comparison, runs, swept)], sections, failures)
    seconds = time.perf_counter() - started
    log.info("Report written to %s (%d files, %.1f s)", out, len(files), seconds)
    return ReportResult(out, runs, comparison, files, seconds)
