"""The report's tables: AUROC (pathologies x runs), cost (one row per run), p-values; as Markdown, LaTeX, HTML, CSV.

A table is built once as rows of `Cell`s (text, bold = best in row, mark = significance) and then
rendered; the CSV files hold the numbers unrounded.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chestx.comparison.compare import MEAN, Comparison
from chestx.runs.discover import Run

ALPHA = 0.05
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


@dataclass
class Cell:
    text: str
    bold: bool = False
    mark: str = ""


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _significance(comparison: Comparison) -> dict[tuple[str, str], float]:
    """(label, pathology) -> Holm-adjusted p-value vs the reference, for single-seed groups."""
    out: dict[tuple[str, str], float] = {}
    p = comparison.pvalues
    for label, runs in comparison.groups.items():
        if len(runs) != 1:
            continue
        for row in p[p["label"] == label].itertuples():
            out[(label, row.pathology)] = float(row.p_holm)
    return out


def auroc_table(comparison: Comparison) -> Table:
    """Rows: pathologies + mean; columns: run groups; best per row bold; `*` = differs from reference."""
    labels = list(comparison.groups)
    summary = comparison.summary.set_index(["label", "pathology"])
    sig = _significance(comparison)
    columns = ["pathology"] + [f"{lab} (ref)" if lab == comparison.reference else lab for lab in labels]
    rows: list[list[Cell]] = []
    for pathology in [*comparison.pathologies, MEAN]:
        values = [summary["auroc"].get((lab, pathology), np.nan) for lab in labels]
        finite = [v for v in values if not math.isnan(v)]
        best = max(finite) if finite else None
        row = [Cell(pathology, bold=pathology == MEAN)]
        for lab, value in zip(labels, values):
            if (lab, pathology) not in summary.index:
                row.append(Cell("—"))
                continue
            entry = summary.loc[(lab, pathology)]
            if entry["n_replicates"] > 1:
                text = f"{_fmt(value)} ± {_fmt(entry['sd'])}"
            else:
                text = f"{_fmt(value)} [{_fmt(entry['lower'])}, {_fmt(entry['upper'])}]"
            p = sig.get((lab, pathology), float("nan"))
            row.append(Cell(text, bold=best is not None and value == best, mark="*" if p < ALPHA else ""))
        rows.append(row)
    return Table(columns, rows)


def auroc_frame(comparison: Comparison) -> pd.DataFrame:
    """Wide CSV: pathology, then per group `<label>`, `<label> lower`, `<label> upper`, `<label> sd`,
    `<label> n_replicates`."""
    summary = comparison.summary
    frame = pd.DataFrame({"pathology": [*comparison.pathologies, MEAN]})
    for label in comparison.groups:
        block = summary[summary["label"] == label].set_index("pathology")
        for column, suffix in (("auroc", ""), ("lower", " lower"), ("upper", " upper"), ("sd", " sd"),
                               ("n_replicates", " n_replicates")):
            frame[label + suffix] = frame["pathology"].map(block[column])
    return frame


def cost_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run: label, seed, fold (k-fold runs), folder, then the raw cost numbers from metrics.json."""
    rows = []
    for run in runs:
        row = {"label": run.label, "seed": run.seed, "fold": run.fold, "run": str(run.path)}
        row.update({key: run.metrics.get(key) for key, _, _ in COST_COLUMNS})
        rows.append(row)
    return pd.DataFrame(rows)


def cost_table(runs: list[Run]) -> Table:
    kfold = any(run.fold is not None for run in runs)
    columns = ["run", "seed", *(["fold"] if kfold else [])] + [header for _, header, _ in COST_COLUMNS]
    rows = []
    for run in runs:
        row = [Cell(run.label), Cell(str(run.seed)), *([Cell(str(run.fold))] if kfold else [])]
        for key, _, fmt in COST_COLUMNS:
            value = run.metrics.get(key)
            row.append(Cell("n/a" if value is None else fmt(value)))
        rows.append(row)
    return Table(columns, rows)


def pvalue_table(comparison: Comparison) -> Table:
    """Rows: pathologies; columns: runs tested against the reference; cells: Holm p (raw p)."""
    p = comparison.pvalues
    seed, fold = p["seed"].astype(str), p["fold"].astype(str)  # fold: "None" without k-fold
    keys = list(dict.fromkeys(zip(p["label"], seed, fold)))
    multi = {lab for lab, runs in comparison.groups.items() if len(runs) > 1}
    columns = ["pathology"] + [f"{lab} (seed {s}{'' if f == 'None' else f' fold {f}'})" if lab in multi else lab
                               for lab, s, f in keys]
    rows = []
    for pathology in comparison.pathologies:
        row = [Cell(pathology)]
        for lab, s, f in keys:
            hit = p[(p["label"] == lab) & (seed == s) & (fold == f) & (p["pathology"] == pathology)]
            if hit.empty:
                row.append(Cell("—"))
                continue
            holm_p, raw = float(hit["p_holm"].iloc[0]), float(hit["p_value"].iloc[0])
            row.append(Cell(f"{_p(holm_p)} ({_p(raw)})", mark="*" if holm_p < ALPHA else ""))
        rows.append(row)
    return Table(columns, rows)


def _p(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return "<0.001" if value < 1e-3 else f"{value:.3f}"


# ------------------------------------------------------------------ renderers
def to_markdown(table: Table) -> str:
    def cell(c: Cell) -> str:
        text = (c.text + c.mark).replace("|", "\\|")
        return f"**{text}**" if c.bold else text

    lines = ["| " + " | ".join(col.replace("|", "\\|") for col in table.columns) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(table.columns) - 1)) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    text = "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)
    return text.replace("±", r"$\pm$").replace("—", "--").replace("Δ", r"$\Delta$")


def to_latex(table: Table, caption: str = "", label: str = "tab:auroc") -> str:
    """A `table` float with a plain `tabular` (no packages beyond LaTeX itself)."""
    def cell(c: Cell) -> str:
        text = _tex(c.text) + (r"$^{*}$" if c.mark else "")
        return r"\textbf{" + text + "}" if c.bold else text

    spec = "l" + "r" * (len(table.columns) - 1)
    lines = [r"\begin{table}[ht]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\hline",
             " & ".join(_tex(c) for c in table.columns) + r" \\", r"\hline"]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\hline", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{_tex(caption)}}}")
    lines += [rf"\label{{{label}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_html(table: Table, css_class: str = "") -> str:
    def cell(c: Cell, tag: str = "td") -> str:
        text = html.escape(c.text) + (f'<sup class="sig">{html.escape(c.mark)}</sup>' if c.mark else "")
        return f'<{tag}{" class=best" if c.bold else ""}>{f"<b>{text}</b>" if c.bold else text}</{tag}>'

    head = "".join(f"<th>{html.escape(col)}</th>" for col in table.columns)
    body = "\n".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in table.rows)
    return f'<table class="{css_class}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'
