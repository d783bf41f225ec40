"""Every table of the report, in all three documents (auroc_table.md, report.html, auroc_table.tex), checked cell by cell
against the CSV file written beside it — built from real runs.

Runs (real `chestx.train` on the embedded NIH sample, one module fixture): resnet18 seed 0, and mobilenetv2 seeds 0 and
1 on the same split (`data.seed=0`: seed replicates of one configuration), both scored on CheXpert's real valid.csv
labels too (`test_data=[chexpert]`), so the report has every section: AUROC, cost, DeLong significance (a single run
and a replicated group: the case whose cells were all `—` under pandas 3), operating points, subgroups and the
cross-dataset matrix.

The expected cells are written here from each CSV with the report's documented formats (3 decimals, p as `<0.001` or
3 decimals, `n/a` for a missing value, `—` only where the CSV has no row); the parsers read what a reader sees.
"""
from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

DASH = "—"
TINY = ("data.image_size=32", "loader.num_workers=0", "loader.batch_size=8", "loader.eval_batch_size=64",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.accelerator=cpu", "logger=none",
        "clinical.cams=0", "data.seed=0")


# ------------------------------------------------------------------ the runs and the report
@pytest.fixture(scope="module")
def report(compose, chexpert_tree: Path, tmp_path_factory) -> Path:
    from chestx.comparison import build_report
    from chestx.train import train

    root = tmp_path_factory.mktemp("cells")
    external = ["test_data=[chexpert]", f"test_data.chexpert.root={chexpert_tree}"]
    for name, model, seed, extra in (("a", "resnet18", 0, []), ("b", "mobilenetv2", 0, external),
                                     ("c", "mobilenetv2", 1, external)):
        metrics = train(compose([*TINY, f"model={model}", f"seed={seed}", *extra], root / "runs" / name))
        assert metrics["status"] == "ok"
    out = root / "report"
    build_report([root / "runs"], out, reference="resnet18", n_resamples=200)
    return out


# ------------------------------------------------------------------ reading the three documents
def _clean(text: str) -> str:
    text = text.strip()
    if text.startswith("**") and text.endswith("**"):
        text = text[2:-2]
    return text.replace("\\|", "|")


def markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """heading -> rows of cell texts (header row first), bold markers removed."""
    out: dict[str, list[list[str]]] = {}
    heading = None
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif line.startswith("|") and heading is not None and not re.match(r"^\|[:\-|]+\|$", line):
            cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
            out.setdefault(heading, []).append([_clean(c) for c in cells])
    return out


class _HTMLTables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.heading: str | None = None
        self._in_h2 = self._in_cell = False
        self._text = ""
        self._row: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self._in_h2, self._text = True, ""
        elif tag in ("td", "th"):
            self._in_cell, self._text = True, ""
        elif tag == "tr":
            self._row = []

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2, self.heading = False, self._text.strip()
        elif tag in ("td", "th"):
            self._in_cell = False
            self._row.append(self._text.strip())
        elif tag == "tr" and self.heading is not None:
            self.tables.setdefault(self.heading, []).append(self._row)

    def handle_data(self, data):
        if self._in_h2 or self._in_cell:
            self._text += data


def html_tables(text: str) -> dict[str, list[list[str]]]:
    parser = _HTMLTables()
    parser.feed(text)
    return parser.tables


_TEX = [(r"$\pm$", "±"), ("--", "—"), (r"$\Delta$", "Δ"), (r"$\times$", "×"), (r"\_", "_"), (r"\&", "&"),
        (r"\%", "%"), (r"\textless{}", "<"), (r"\textgreater{}", ">"), (r"\#", "#"), (r"\$", "$")]


def _untex(cell: str) -> str:
    cell = cell.strip().replace(r"$^{*}$", "*")
    match = re.fullmatch(r"\\textbf\{(.*)\}", cell)
    cell = match.group(1) if match else cell
    for tex, plain in _TEX:
        cell = cell.replace(tex, plain)
    return cell


def latex_tables(text: str) -> dict[str, list[list[str]]]:
    """caption (= section heading) -> rows of cell texts."""
    out = {}
    for block in re.findall(r"\\begin\{table\}.*?\\end\{table\}", text, flags=re.S):
        caption = _untex(re.search(r"\\caption\{(.*)\}", block).group(1))
        body = re.search(r"\\begin\{tabular\}\{[lr]+\}(.*)\\end\{tabular\}", block, flags=re.S).group(1)
        rows = [line.strip()[:-2] for line in body.splitlines() if line.strip().endswith(r"\\")]
        out[caption] = [[_untex(c) for c in row.split(" & ")] for row in rows]
    return out


# ------------------------------------------------------------------ expected cells from the CSV files
def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def f3(v) -> str:
    return "n/a" if _missing(v) else f"{float(v):.3f}"


def fp(v) -> str:
    return "n/a" if _missing(v) else ("<0.001" if v < 1e-3 else f"{v:.3f}")


def expected_auroc(out: Path) -> list[list[str]]:
    table = pd.read_csv(out / "auroc_table.csv")
    p = pd.read_csv(out / "pvalues.csv")
    labels = [c for c in table.columns[1:] if not c.endswith((" lower", " upper", " sd", " n_replicates"))]
    single = {lab for lab in labels if (table[lab + " n_replicates"].dropna() == 1).all()}
    starred = {(r.label, r.pathology) for r in p.itertuples() if r.label in single and r.p_holm < 0.05}
    rows = [["pathology", *[lab + (" (ref)" if lab == "resnet18" else "") for lab in labels]]]
    for r in table.to_dict("records"):
        row = [r["pathology"]]
        for lab in labels:
            if _missing(r[lab + " n_replicates"]):
                row.append(DASH)
            elif r[lab + " n_replicates"] > 1:
                row.append(f"{f3(r[lab])} ± {f3(r[lab + ' sd'])}")
            else:
                row.append(f"{f3(r[lab])} [{f3(r[lab + ' lower'])}, {f3(r[lab + ' upper'])}]"
                           + ("*" if (lab, r["pathology"]) in starred else ""))
        rows.append(row)
    return rows


def expected_pvalues(out: Path) -> list[list[str]]:
    p = pd.read_csv(out / "pvalues.csv")
    counts = p.drop_duplicates("run_path")["label"].value_counts()
    keys = list(dict.fromkeys(p["run_path"]))
    first = p.drop_duplicates("run_path").set_index("run_path")
    header = [f"{first.loc[k, 'label']} ({first.loc[k, 'replicate']})" if counts[first.loc[k, "label"]] > 1
              else first.loc[k, "label"] for k in keys]
    pathologies = list(dict.fromkeys(pd.read_csv(out / "auroc_table.csv")["pathology"]))[:-1]  # without "mean"
    cell = {(r.run_path, r.pathology): f"{fp(r.p_holm)} ({fp(r.p_value)})" + ("*" if r.p_holm < 0.05 else "")
            for r in p.itertuples()}
    return [["pathology", *header]] + [[q, *[cell.get((k, q), DASH) for k in keys]] for q in pathologies]


def expected_costs(out: Path) -> list[list[str]]:
    c = pd.read_csv(out / "costs.csv")
    fmts = [("params", lambda v: f"{v / 1e6:.2f}"), ("macs", lambda v: f"{v / 1e9:.2f}"),
            ("image_size", lambda v: str(int(v))), ("train_images_per_s", lambda v: f"{v:.1f}"),
            ("infer_images_per_s", lambda v: f"{v:.1f}"), ("peak_memory_mb", lambda v: f"{v:.0f}"),
            ("wall_time_s", lambda v: f"{v:.0f}"), ("epochs", lambda v: str(int(v))), ("best_epoch", lambda v: str(int(v)))]
    header = ["run", "seed", "params (M)", "GMACs", "image px", "train img/s", "infer img/s", "peak mem (MB)",
              "wall (s)", "epochs", "best epoch"]
    return [header] + [[r["label"], str(int(r["seed"])), *["n/a" if _missing(r[k]) else f(r[k]) for k, f in fmts]]
                       for r in c.to_dict("records")]


def expected_operating_points(out: Path) -> list[list[str]]:
    o = pd.read_csv(out / "operating_points.csv")
    columns = ["threshold", "sensitivity", "specificity", "ppv", "npv", "f1"]
    several = o["label"].nunique() < o["run"].nunique()
    return [["run", "pathology", *columns]] + [
        [f"{r['label']} ({r['replicate']})" if several else r["label"], r["pathology"], *[f3(r[c]) for c in columns]]
        for r in o.to_dict("records")]


def expected_subgroups(out: Path) -> list[list[str]]:
    g = pd.read_csv(out / "subgroup_gaps.csv", keep_default_na=False, na_values=[""])
    labels = list(dict.fromkeys(g["label"]))
    header = ["subgroup", "images", *[f"{lab} {h}" for lab in labels for h in ("ΔAUROC", "ΔFNR")]]
    rows = [header]
    for (attribute, group), block in g.groupby(["attribute", "group"], sort=False):
        block = block.set_index("label")
        sizes = sorted(set(block["n_images"].astype(int)))
        row = [f"{attribute}={group}", str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"]
        for lab in labels:
            for column in ("auroc_gap", "fnr_gap"):
                v = block[column].get(lab, "absent")
                row.append(DASH if v == "absent" else "n/a" if _missing(v) else f"{v:+.3f}")
        rows.append(row)
    return rows


def expected_cross_dataset(out: Path) -> list[list[str]]:
    m = pd.read_csv(out / "cross_dataset.csv")
    headers = list(dict.fromkeys([*m.loc[m["internal"], "test_data"], *m.loc[~m["internal"], "test_data"]]))
    rows = [["configuration", "trained on", *headers]]
    for (label, trained), block in m.groupby(["label", "trained_on"], sort=False):
        row = [label, trained]
        for h in headers:
            cells = block[block["test_data"] == h]
            if cells.empty:
                row.append(DASH)
                continue
            r = cells.iloc[0]
            value = f3(r["auroc_mean"]) + (f" ± {r['auroc_sd']:.3f}" if r["n_replicates"] > 1
                                           and not _missing(r["auroc_sd"]) else "")
            if r["internal"]:
                row.append(f"{value} (internal)")
            else:
                row.append(value + ("" if _missing(r["delta_mean"]) else f" (Δ {r['delta_mean']:+.3f})"))
        rows.append(row)
    return rows


SECTIONS = {  # heading prefix -> (CSV file, expected cells)
    "Test AUROC": ("auroc_table.csv", expected_auroc),
    "Cost per run": ("costs.csv", expected_costs),
    "DeLong vs": ("pvalues.csv", expected_pvalues),
    "Operating points": ("operating_points.csv", expected_operating_points),
    "Subgroups": ("subgroup_gaps.csv", expected_subgroups),
    "Cross-dataset": ("cross_dataset.csv", expected_cross_dataset),
}


def _find(tables: dict[str, list[list[str]]], prefix: str, document: str) -> list[list[str]]:
    hits = [rows for heading, rows in tables.items() if heading.startswith(prefix)]
    assert len(hits) == 1, f"{document}: {len(hits)} tables under a heading starting {prefix!r}: {list(tables)}"
    return hits[0]


def test_every_section_has_a_table_in_every_document(report: Path) -> None:
    documents = {"md": markdown_tables((report / "auroc_table.md").read_text()),
                 "html": html_tables((report / "report.html").read_text()),
                 "tex": latex_tables((report / "auroc_table.tex").read_text())}
    for prefix, (csv, _) in SECTIONS.items():
        assert (report / csv).is_file(), csv
        for name, tables in documents.items():
            assert _find(tables, prefix, name), (name, prefix)


@pytest.mark.parametrize("prefix", list(SECTIONS))
@pytest.mark.parametrize("document", ["auroc_table.md", "report.html", "auroc_table.tex"])
def test_rendered_cells_equal_the_csv_beside_them(report: Path, prefix: str, document: str) -> None:
    parse = {"auroc_table.md": markdown_tables, "report.html": html_tables, "auroc_table.tex": latex_tables}[document]
    rendered = _find(parse((report / document).read_text()), prefix, document)
    csv, expected_of = SECTIONS[prefix]
    expected = expected_of(report)
    assert len(rendered) == len(expected), (document, prefix, len(rendered), len(expected))
    for r, (got, want) in enumerate(zip(rendered, expected)):
        assert got == want, f"{document} / {prefix} row {r}: rendered {got} but {csv} gives {want}"
    # a dash only where the CSV has no row: every DeLong cell of this report has a number
    if prefix == "DeLong vs":
        assert all(cell != DASH for row in rendered[1:] for cell in row[1:]), rendered


def test_significance_table_has_every_run_and_replicate(report: Path) -> None:
    """The regression of issue 15: runs without k-fold (fold empty) and a replicated group (seed columns)."""
    p = pd.read_csv(report / "pvalues.csv")
    assert p["fold"].isna().all() and set(p["label"]) == {"mobilenetv2"} and p["run_path"].nunique() == 2
    header = _find(markdown_tables((report / "auroc_table.md").read_text()), "DeLong vs", "md")[0]
    assert header == ["pathology", "mobilenetv2 (seed 0)", "mobilenetv2 (seed 1)"]
