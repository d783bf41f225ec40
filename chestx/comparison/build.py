"""Build every report file from sweep / run folders (`chestx.report` and `chestx.benchmark` call this).

Files written to `out`: auroc_table.md / .csv / .tex, auroc_per_run.csv, costs.csv, pvalues.csv,
figures/{roc_curves,auroc_heatmap,auroc_vs_cost}.png and report.html (self-contained); with runs that wrote
subgroups.csv also subgroups_per_run.csv and figures/subgroup_gaps.png (`chestx.comparison.subgroups`); with runs
that have external/ folders also cross_dataset.csv and cross_dataset_per_run.csv, the train x test matrix
(`chestx.comparison.cross_dataset`).
"""
from __future__ import annotations

import html
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chestx.comparison import figures as report_figures, tables
from chestx.comparison.compare import Comparison, compare
from chestx.comparison.cross_dataset import CAPTION, cross_dataset_section
from chestx.comparison.html import operating_points_section, render_page
from chestx.comparison.subgroups import SubgroupSection, subgroup_section
from chestx.runs.discover import ReportError, Run, _select, fixed_settings, label_runs, load_runs

log = logging.getLogger(__name__)

SETTING_KEYS = (  # resolved config values stated in the report (from the first finished run)
    ("data._target_", "data"), ("data.split", "split"), ("data.ratios", "ratios"), ("data.folds", "k-fold folds"),
    ("data.image_size", "image px"), ("data.batch_size", "batch"), ("trainer.max_epochs", "max epochs"),
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
        if key == "data.ratios" and _select(run.config, "data.split") != "random":
            continue
        value = _select(run.config, key)
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
        first = comparison.runs[0]
        replicates = _replicates(comparison)
        if replicates:
            lines.append(replicates)
        settings = _settings(first)
        if settings:
            lines.append("Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".")
        ts = comparison.test_sets[0]
        lines.append(
            f"Cells: test AUROC with a {comparison.ci:.0%} percentile CI from a patient-level bootstrap "
            f"({comparison.n_resamples} resamples of the {len(set(ts.patient_ids))} test patients, "
            f"{len(ts.image_ids)} images; seed {comparison.seed}); with several replicates, mean ± sd over them. "
            f"Bold: best in the row. `*`: differs from the reference **{comparison.reference}** "
            f"(paired DeLong test, Holm-corrected over pathologies, p < {tables.ALPHA}).")
    return lines


def _markdown(title: str, lines: list[str], sections: list[tuple[str, tables.Table]], failures: list[Run],
              notes: dict[str, list[str]] | None = None) -> str:
    """notes: heading -> lines printed between that section's heading and its table."""
    out = [f"# {title}", "", *[line + "  " for line in lines], ""]
    for heading, table in sections:
        text = (notes or {}).get(heading, [])
        out += [f"## {heading}", "", *([line + "  " for line in text] + [""] if text else []),
                tables.to_markdown(table), ""]
    if failures:
        out += ["## Runs left out", ""]
        out += [f"- `{r.path}` ({r.model}): {r.status}: {r.reason}" for r in failures]
        out.append("")
    return "\n".join(out)


def build_report(folders: list[Path], out: Path | None = None, reference: str | None = None,
                 n_resamples: int = 1000, seed: int = 0, ci: float = 0.95,
                 title: str = "chestx benchmark: test AUROC per pathology", notes: list[str] | None = None) -> ReportResult:
    """Read runs under `folders`, compare the finished ones, write every file; never fails on a broken run.

    `reference`: the run the DeLong tests compare against (column label, model name or run folder;
    default the best mean AUROC). Raises ReportError when nothing can be built or an option is invalid.
    """
    if not folders:
        raise ReportError("runs=[] names no folder: pass runs=[<sweep or run folder>,...]")
    if n_resamples < 1:
        raise ReportError(f"resamples={n_resamples}: the bootstrap needs at least 1 resample (1000 recommended)")
    if not 0.0 < ci < 1.0:
        raise ReportError(f"ci={ci}: the confidence level must be in (0, 1), e.g. ci=0.95")
    started = time.perf_counter()
    folders = [Path(f) for f in folders]
    out = Path(out) if out else folders[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    if n_resamples < 1000:
        log.warning("resamples=%d: fewer than 1000 bootstrap resamples give unstable 95%% CI bounds", n_resamples)
    runs = load_runs(folders)
    swept = label_runs(runs)
    failures = [r for r in runs if r.status != "ok"]
    for run in failures:
        log.warning("Left out %s (%s): %s: %s", run.path, run.model, run.status, run.reason)
    comparison = compare(runs, reference, n_resamples, seed, ci) if len(failures) < len(runs) else None
    lines = [*(notes or []), *_describe(comparison, runs, swept)]
    files: dict[str, Path] = {}
    md_sections: list[tuple[str, tables.Table]] = []
    figures: dict[str, Path] = {}
    subgroups = SubgroupSection()
    if comparison is not None:
        main = tables.auroc_table(comparison)
        cost = tables.cost_table(comparison.runs)
        pvals = tables.pvalue_table(comparison)
        md_sections = [("Test AUROC", main), ("Cost per run", cost),
                       (f"DeLong vs {comparison.reference}: Holm-adjusted p (raw p)", pvals)]
        files["auroc_table.csv"] = out / "auroc_table.csv"
        tables.auroc_frame(comparison).to_csv(files["auroc_table.csv"], index=False, float_format="%.6f")
        files["auroc_per_run.csv"] = out / "auroc_per_run.csv"
        comparison.per_run.to_csv(files["auroc_per_run.csv"], index=False, float_format="%.6f")
        files["costs.csv"] = out / "costs.csv"
        tables.cost_frame(comparison.runs).to_csv(files["costs.csv"], index=False)
        files["pvalues.csv"] = out / "pvalues.csv"
        comparison.pvalues.to_csv(files["pvalues.csv"], index=False, float_format="%.6g")
        files["auroc_table.tex"] = out / "auroc_table.tex"
        caption = (f"Test AUROC ({comparison.ci:.0%} patient-bootstrap CI, {comparison.n_resamples} resamples); "
                   f"bold best per row; * differs from {comparison.reference} (DeLong, Holm, p<{tables.ALPHA}).")
        files["auroc_table.tex"].write_text(tables.to_latex(main, caption) + "\n" + tables.to_latex(
            cost, "Cost per run.", label="tab:cost"))
        figures = report_figures.all_figures(comparison, out / "figures")
        files.update({p.name: p for p in figures.values()})
        subgroups = subgroup_section(comparison.runs, out)
        files.update(subgroups.files)
    cross = cross_dataset_section(runs, out)  # also chestx.evaluate ckpt=... folders (no test split of their own)
    files.update(cross.files)
    if cross.table is not None:
        tex = files.setdefault("auroc_table.tex", out / "auroc_table.tex")
        before = tex.read_text() + "\n" if comparison is not None else ""  # this build's tables, else a new file
        tex.write_text(before + tables.to_latex(cross.table, CAPTION, label="tab:cross_dataset"))
    files["auroc_table.md"] = out / "auroc_table.md"
    files["auroc_table.md"].write_text(_markdown(title, lines, md_sections + subgroups.markdown + cross.markdown,
                                                 failures, {h: cross.notes for h, _ in cross.markdown}))
    html_lines = [html.escape(line).replace("**", "") for line in lines]
    html_lines.append(html.escape(f"Built {time.strftime('%Y-%m-%d %H:%M')} on {platform.node() or 'unknown host'} "
                                  f"({platform.machine()}, Python {platform.python_version()})."))
    page = render_page(title, html_lines, [(h, tables.to_html(t)) for h, t in md_sections], figures, failures,
                       (operating_points_section(comparison.runs) if comparison else "") + subgroups.html
                       + cross.html)
    files["report.html"] = out / "report.html"
    files["report.html"].write_text(page)
    seconds = time.perf_counter() - started
    log.info("Report written to %s (%d files, %.1f s)", out, len(files), seconds)
    return ReportResult(out, runs, comparison, files, seconds)
