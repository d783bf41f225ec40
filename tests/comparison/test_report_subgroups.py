"""The report's subgroup section over real chestx.evaluate run folders of the embedded NIH sample: two models with
subgroups.csv side by side (table numbers recomputed from their files, worst run in bold, the figure), and a
third run without one named in the section."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chestx.comparison import build_report
from chestx.comparison.subgroups import HEADING
from chestx.runs.subgroups import SubgroupAnalysis, read_subgroups


@pytest.fixture(scope="module")
def report(sample_root: Path, tmp_path_factory) -> Path:
    from chestx.data.datasets.nih import NIHData
    from chestx.runs.scoring import evaluate

    root = tmp_path_factory.mktemp("subgroup_report")
    table, split = NIHData(root=str(sample_root), csv=str(sample_root / "Data_Entry_sample.csv"),
                           split="random").labels_only()
    for seed, (name, strength) in enumerate([("weak", 0.7), ("strong", 2.0), ("old", 1.0)]):
        logits = np.random.default_rng(seed).normal(size=table.labels.shape) + strength * table.labels
        csv = root / f"{name}.csv"
        pd.DataFrame({"image_id": table.frame["image_id"]}
                     | {f"prob_{p}": 1 / (1 + np.exp(-logits[:, k])) for k, p in enumerate(table.pathologies)}
                     ).to_csv(csv, index=False)
        evaluate(csv, table, split, root / "runs" / name, name=name)
        if name != "old":  # a run folder from before subgroups existed
            SubgroupAnalysis(resamples=200)(root / "runs" / name)
    build_report([root / "runs"], root / "report", n_resamples=200)
    return root


def _cells(md: str) -> list[list[str]]:
    section = md.split(f"## {HEADING}")[1].split("\n## ")[0].splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in section if line.startswith("|")]


def test_gap_table_recomputed_from_the_runs_files(report: Path) -> None:
    rows = _cells((report / "report" / "auroc_table.md").read_text())
    header, body = rows[0], rows[2:]
    runs = {name: read_subgroups(report / "runs" / name / "subgroups.csv") for name in ("weak", "strong")}
    groups = runs["weak"][runs["weak"]["attribute"] != "all"].drop_duplicates(["attribute", "group"])
    assert [r[0] for r in body] == [f"{a}={g}" for a, g in zip(groups["attribute"], groups["group"])]
    assert "old" not in " ".join(header)
    for row in body:
        attribute, group = row[0].split("=")
        means = {}
        for name, table in runs.items():
            block = table[(table["attribute"] == attribute) & (table["group"] == group)]
            assert row[1] == str(block["n_images"].iloc[0])
            for column, header_name in (("auroc_gap", "ΔAUROC"), ("fnr_gap", "ΔFNR")):
                value = block[column].mean()  # NaN-skipping mean over pathologies
                cell = row[header.index(f"{name} {header_name}")]
                means[(name, column)] = value
                assert cell.strip("*") == ("n/a" if np.isnan(value) else f"{value:+.3f}"), (row[0], name, column)
        for column, worst in (("auroc_gap", min), ("fnr_gap", max)):
            values = {n: means[(n, column)] for n in runs if not np.isnan(means[(n, column)])}
            if len(values) == 2 and len(set(values.values())) == 2:
                bold = worst(values, key=values.get)
                header_name = "ΔAUROC" if column == "auroc_gap" else "ΔFNR"
                assert row[header.index(f"{bold} {header_name}")].startswith("**"), (row[0], column)


def test_section_figure_and_files(report: Path) -> None:
    out = report / "report"
    page = (out / "report.html").read_text()
    section = page.split(HEADING)[1]
    assert "<img src=\"data:image/png;base64," in section and "<code>old</code>" in section
    with Image.open(out / "figures" / "subgroup_gaps.png") as figure:
        assert figure.format == "PNG" and min(figure.size) >= 400
        figure.verify()
    per_run = pd.read_csv(out / "subgroups_per_run.csv")
    assert per_run.groupby("label").size().to_dict() == {
        name: len(read_subgroups(report / "runs" / name / "subgroups.csv")) for name in ("strong", "weak")}


@pytest.mark.slow
def test_section_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    """No console message, and every figure (the subgroup one included) decoded by the browser."""
    import re
    import shutil
    import subprocess

    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if browser is None:
        pytest.skip("Chromium not installed (Debian: apt-get install -y chromium)")
    probe = ('<script>window.addEventListener("load", () => { const imgs = [...document.images];'
             ' document.body.insertAdjacentHTML("beforeend", `<div id="probe">decoded=${imgs.filter(i => i.complete'
             ' && i.naturalWidth > 0).length}/${imgs.length}</div>`); });</script>')
    page = tmp_path / "probe.html"
    page.write_text((report / "report" / "report.html").read_text().replace("</body>", probe + "\n</body>"))
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []
    found = re.search(r"decoded=(\d+)/(\d+)", done.stdout)
    assert found and found.group(1) == found.group(2) == "4", done.stdout[-2000:]
    assert HEADING in done.stdout
