"""`report.html`: one self-contained page (inline CSS, figures as PNG data URIs, no scripts, no links out)."""
from __future__ import annotations

import base64
import html
import logging
from pathlib import Path

import pandas as pd

from chestx.runs.discover import Run
from chestx.comparison.tables import Cell, Table, to_html

log = logging.getLogger(__name__)

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


def frame_table(frame: pd.DataFrame, digits: int = 3) -> Table:
    """A DataFrame as a `Table` (floats rounded)."""
    def text(v) -> str:
        if isinstance(v, float):
            return "n/a" if v != v else f"{v:.{digits}f}"
        return str(v)

    return Table([str(c) for c in frame.columns], [[Cell(text(v)) for v in row] for row in frame.itertuples(index=False)])


OPERATING_COLUMNS = ("method", "pathology", "threshold", "sensitivity", "specificity", "ppv", "npv", "f1")


def operating_points_section(runs: list[Run]) -> str:
    """A table per run from its operating_points.csv, when the run has one; '' when none has."""
    parts = []
    for run in runs:
        path = run.clinical_file("operating_points.csv")
        if path is None:
            continue
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as error:
            log.warning("%s unreadable (%s): left out of the report", path, error)
            continue
        frame = frame[[c for c in OPERATING_COLUMNS if c in frame.columns]]
        parts.append(f"<h3>{html.escape(run.label)} <span class=note>{html.escape(run.replicate)}, "
                     f"{html.escape(str(run.path))}</span></h3>\n<div class=scroll>{to_html(frame_table(frame))}</div>")
    if not parts:
        return ""
    return ("<h2>Operating points</h2>\n<p class=note>Test-split sensitivity, specificity, PPV and NPV at the "
            "thresholds each run chose on its validation split (operating_points.csv).</p>\n" + "\n".join(parts))


def render_page(title: str, intro: list[str], sections: list[tuple[str, str]], figures: dict[str, Path],
                failures: list[Run], extra: str = "") -> str:
    """sections: (heading, html fragment); figures: caption -> PNG path (embedded)."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
           f"<h1>{html.escape(title)}</h1>"]
    out += [f"<p class=note>{line}</p>" for line in intro]
    if failures:
        out.append("<h2>Runs left out</h2>\n<ul class=failed>")
        out += [f"<li><code>{html.escape(str(r.path))}</code> ({html.escape(r.model)}): <b>{r.status}</b>: "
                f"{html.escape(str(r.reason))}</li>" for r in failures]
        out.append("</ul>")
    for heading, fragment in sections:
        out.append(f"<h2>{html.escape(heading)}</h2>\n<div class=scroll>{fragment}</div>")
    if figures:
        out.append("<h2>Figures</h2>")
        for caption, path in figures.items():
            out.append(f'<figure><img src="{data_uri(path)}" alt="{html.escape(caption)}">'
                       f"<figcaption class=note>{html.escape(caption)}</figcaption></figure>")
    if extra:
        out.append(extra)
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
