"""report.html in a real headless Chromium: loads offline, no console messages, tables shown, every figure decoded.

Skips when Chromium is not installed (a user's machine); CI installs Debian's `chromium` first (.ci/run).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from chestx.comparison import build_report

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000"]
# Appended to a copy of the page only: after load, write what the browser actually rendered into the DOM.
PROBE = """<script>window.addEventListener("load", () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.insertAdjacentHTML("beforeend",
    `<div id="probe">images=${ok}/${imgs.length} tables=${document.querySelectorAll("table").length}` +
    ` rows=${document.querySelectorAll("tbody tr").length} width=${imgs.length ? imgs[0].naturalWidth : 0}</div>`);
});</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium not installed (Debian: apt-get install -y chromium): browser check of report.html skipped")


def _open(browser: str, page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def page(sample_root: Path, tmp_path_factory) -> Path:
    """A report over two real prediction sets on the embedded NIH sample (chestx.evaluate run folders)."""
    import numpy as np
    import pandas as pd

    from chestx.data.datasets.nih import NIHData
    from chestx.runs.scoring import evaluate

    root = tmp_path_factory.mktemp("html")
    table, split = NIHData(root=str(sample_root), split="random", csv=str(sample_root / "Data_Entry_sample.csv")).labels_only()
    rng = np.random.default_rng(0)
    for name, strength in (("weak", 0.5), ("strong", 2.0)):
        logits = rng.normal(size=table.labels.shape) + strength * np.nan_to_num(table.labels)
        frame = {"image_id": table.frame["image_id"]} | {
            f"prob_{p}": 1 / (1 + np.exp(-logits[:, k])) for k, p in enumerate(table.pathologies)}
        csv = root / f"{name}.csv"
        pd.DataFrame(frame).to_csv(csv, index=False)
        evaluate(csv, table, split, root / "runs" / name, name=name)
    result = build_report([root / "runs"], root / "report")
    return result.files["report.html"]


def test_page_is_self_contained(page: Path) -> None:
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", text), "the page must not load anything"
    assert text.count('src="data:image/png;base64,') == 3
    assert "<table" in text and "weak" in text and "strong (ref)" in text


@pytest.mark.slow
def test_page_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    browser = _chromium()
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(page.read_text().replace("</body>", PROBE + "\n</body>"))
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><html><body><script>console.error("control-message")</script></body></html>')
    seen = _open(browser, control, tmp_path / "p0", "--dump-dom")
    assert "control-message" in "".join(_console(seen.stderr)), "console capture does not work: " + seen.stderr[-2000:]

    plain = _open(browser, page, tmp_path / "p1", "--dump-dom")
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert _console(plain.stderr) == [], "console messages: " + "\n".join(_console(plain.stderr))
    assert "Test AUROC" in plain.stdout and "<table" in plain.stdout

    probed = _open(browser, probe_page, tmp_path / "p2", "--dump-dom")
    found = re.search(r"images=(\d+)/(\d+) tables=(\d+) rows=(\d+) width=(\d+)", probed.stdout)
    assert found, probed.stdout[-2000:]
    ok, total, tables, rows, width = map(int, found.groups())
    assert ok == total == 3, f"{ok} of {total} figures decoded"
    assert tables >= 3 and rows >= 15 and width > 300

    shot = tmp_path / "shot.png"
    _open(browser, page, tmp_path / "p3", f"--screenshot={shot}", "--window-size=1400,2400")
    assert shot.is_file() and shot.stat().st_size > 10_000
