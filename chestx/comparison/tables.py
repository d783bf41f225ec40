"""The report's building blocks: `Cell`, `Table`, `Section`, number formats, and table renderers (Markdown, LaTeX, HTML).

Every table of the report is rendered from the one frame that is written beside it as CSV (`Section.csv`): the
section builders (`chestx.comparison.sections`, `.subgroups`, `.cross_dataset`) build the frame first, write it,
then turn its rows into cells, so a cell cannot disagree with the file. Cell texts: a number as formatted here,
`n/a` where the CSV holds a missing value (e.g. an AUROC of a split with one class), `—` where the CSV has no row for
that cell (e.g. a run that does not predict that pathology; the section's notes say why).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ALPHA = 0.05
NOT_AVAILABLE = "n/a"  # the CSV holds a missing value
NO_ROW = "—"  # the CSV has no row for this cell


@dataclass
class Cell:
    text: str
    bold: bool = False
    mark: str = ""


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]


@dataclass
class Section:
    """One part of the report: heading, text, a table rendered from the frame written as `csv`, figures.

    A section without a table is rendered as its notes alone: an empty part of the report always says why.
    """

    heading: str
    notes: list[str] = field(default_factory=list)  # Markdown-flavoured lines (`code`, **bold**)
    table: Table | None = None
    csv: str | None = None  # the file (beside the report) the table's cells come from
    figures: dict[str, Path] = field(default_factory=dict)  # caption -> PNG
    files: dict[str, Path] = field(default_factory=dict)  # every file the section wrote
    latex_label: str = ""


def is_missing(value: Any) -> bool:
    """None, NaN, pd.NA and NaT alike (pandas 3 keeps missing values missing through astype(str))."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT; pd.NA raises in bool()
    except TypeError:
        return True


def fmt(value: Any, digits: int = 3) -> str:
    """A number with `digits` decimals; `n/a` when missing."""
    return NOT_AVAILABLE if is_missing(value) else f"{float(value):.{digits}f}"


def fmt_p(value: Any) -> str:
    """A p-value: `<0.001` below 1e-3, else three decimals; `n/a` when missing."""
    if is_missing(value):
        return NOT_AVAILABLE
    return "<0.001" if float(value) < 1e-3 else f"{float(value):.3f}"


def significant(p_holm: Any) -> bool:
    return not is_missing(p_holm) and float(p_holm) < ALPHA


def integer_text(value: Any) -> str:
    """An integer-valued field (seed, fold, counts) as text; empty when missing ('0' stays '0')."""
    if is_missing(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


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
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
                ">": r"\textgreater{}"}


def tex_escape(text: str) -> str:
    text = "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)
    return (text.replace("±", r"$\pm$").replace("—", "--").replace("Δ", r"$\Delta$").replace("–", "--")
            .replace("×", r"$\times$").replace("−", "-").replace("→", r"$\rightarrow$"))


def to_latex(table: Table, caption: str = "", label: str = "tab:auroc") -> str:
    """A `table` float with a plain `tabular` (no packages beyond LaTeX itself)."""
    def cell(c: Cell) -> str:
        text = tex_escape(c.text) + (r"$^{*}$" if c.mark else "")
        return r"\textbf{" + text + "}" if c.bold else text

    spec = "l" + "r" * (len(table.columns) - 1)
    lines = [r"\begin{table}[ht]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\hline",
             " & ".join(tex_escape(c) for c in table.columns) + r" \\", r"\hline"]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\hline", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{tex_escape(caption)}}}")
    lines += [rf"\label{{{label}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_html(table: Table, css_class: str = "") -> str:
    def cell(c: Cell, tag: str = "td") -> str:
        text = html.escape(c.text) + (f'<sup class="sig">{html.escape(c.mark)}</sup>' if c.mark else "")
        return f'<{tag}{" class=best" if c.bold else ""}>{f"<b>{text}</b>" if c.bold else text}</{tag}>'

    head = "".join(f"<th>{html.escape(col)}</th>" for col in table.columns)
    body = "\n".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in table.rows)
    return f'<table class="{css_class}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def frame_cells(values: list[Any], digits: int = 3) -> list[Cell]:
    """Cells of one CSV row as written: floats with `digits` decimals, missing values `n/a`, the rest as text."""
    out = []
    for v in values:
        if is_missing(v):
            out.append(Cell(NOT_AVAILABLE))
        elif isinstance(v, (float, np.floating)):
            out.append(Cell(f"{float(v):.{digits}f}"))
        else:
            out.append(Cell(str(v)))
    return out
