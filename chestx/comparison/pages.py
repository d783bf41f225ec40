"""The report's three documents from one list of `Section`s: auroc_table.md, auroc_table.tex and report.html.

report.html is one self-contained page (inline CSS, figures as PNG data URIs, no scripts, no links out). Every
document shows the same sections in the same order; a section without a table shows its notes, which say why.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from chestx.comparison.tables import Section, tex_escape, to_html, to_latex, to_markdown
from chestx.runs.discover import Run

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1400px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
td.best { background: #e6f4e6; } sup.sig { color: #b00; }
.scroll { overflow-x: auto; } img { max-width: 100%; border: 1px solid #eee; }
.note { color: #555; font-size: 0.9em; } code { background: #f5f5f5; padding: 0 3px; }
ul.failed li { color: #a00; }
"""


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _inline_html(text: str) -> str:
    """A Markdown-flavoured note line as HTML: escaped, `code` and **bold** kept."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _left_out(failures: list[Run]) -> list[str]:
    return [f"`{r.path}` ({r.model}): {r.status}: {r.reason}" for r in failures]


def markdown_page(title: str, intro: list[str], sections: list[Section], failures: list[Run]) -> str:
    out = [f"# {title}", "", *[line + "  " for line in intro], ""]
    for section in sections:
        out += [f"## {section.heading}", ""]
        if section.notes:
            out += [*[line + "  " for line in section.notes], ""]
        if section.table is not None:
            out += [to_markdown(section.table), ""]
        if section.figures:
            out += [f"![{caption}](figures/{path.name})" for caption, path in section.figures.items()] + [""]
    if failures:
        out += ["## Runs left out", "", *[f"- {line}" for line in _left_out(failures)], ""]
    return "\n".join(out)


def latex_document(sections: list[Section]) -> str:
    """Every section's table as a LaTeX `table` float, its heading as the caption; notes of table-less sections as
    comments, so the file lists every section."""
    parts = []
    for section in sections:
        if section.table is not None:
            parts.append(to_latex(section.table, section.heading, section.latex_label or "tab:report"))
        elif section.notes:
            parts.append("\n".join(f"% {section.heading}: {tex_escape(line)}" for line in section.notes) + "\n")
    return "\n".join(parts)


def html_page(title: str, intro: list[str], sections: list[Section], failures: list[Run]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
           f"<h1>{html.escape(title)}</h1>"]
    out += [f"<p class=note>{_inline_html(line)}</p>" for line in intro]
    if failures:
        out.append("<h2>Runs left out</h2>\n<ul class=failed>")
        out += [f"<li>{_inline_html(line)}</li>" for line in _left_out(failures)]
        out.append("</ul>")
    for section in sections:
        out.append(f"<h2>{html.escape(section.heading)}</h2>")
        out += [f"<p class=note>{_inline_html(line)}</p>" for line in section.notes]
        if section.table is not None:
            out.append(f"<div class=scroll>{to_html(section.table)}</div>")
        for caption, path in section.figures.items():
            out.append(f'<figure><img src="{data_uri(path)}" alt="{html.escape(caption)}">'
                       f"<figcaption class=note>{html.escape(caption)}</figcaption></figure>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
