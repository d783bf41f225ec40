"""A source's released predictions land in its row: jrzech/reproduce-chexnet's pretrained/preds.csv (22,433 test
images of the CheXNet lists), scored by `chestx.evaluate` on the real NIH label file, reproduces the 14 AUROCs of
the registry's `zech2022-retrained` entry, and the report puts them like for like, each inside the run's interval,
with the other NIH entries listed apart and their differences named (docs/published.md, "Reproduce a published
row").

The predictions file is the source's data, not chestx's: it is read from $CHESTX_ZECH_PREDS, else from
../shared/data/nih/reproduce-chexnet/preds.csv; the test skips, saying so, when neither exists.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from chestx.published.registry import load_registry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zech_preds(shared_data: Path) -> Path:
    path = Path(os.environ.get("CHESTX_ZECH_PREDS") or shared_data / "nih" / "reproduce-chexnet" / "preds.csv")
    if not path.is_file():
        pytest.skip(f"jrzech/reproduce-chexnet's pretrained/preds.csv not found at {path}: set CHESTX_ZECH_PREDS "
                    "to a copy of it (docs/published.md)")
    return path


def test_released_predictions_reproduce_their_row(zech_preds: Path, nih_dir: Path, repo_root: Path,
                                                  tmp_path: Path) -> None:
    from chestx.comparison import build_report

    run = tmp_path / "zech2022"
    done = subprocess.run([sys.executable, "-m", "chestx.evaluate", f"predictions={zech_preds}", "data=nih",
                           f"data.root={nih_dir}", "data.split=chexnet", "name=zech2022", f"hydra.run.dir={run}"],
                          cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    entry = next(e for e in load_registry() if e.id == "zech2022-retrained")
    auroc = pd.read_csv(run / "auroc.csv").set_index("pathology")["auroc"]
    for finding, published in entry.auroc.items():
        assert auroc[finding] == pytest.approx(published, abs=5e-6), finding  # auroc.csv keeps 6 decimals

    build_report([run], tmp_path / "report", n_resamples=200)
    like = pd.read_csv(tmp_path / "report" / "published.csv")
    assert set(like["entry"]) == {"zech2022-retrained"}
    assert like["pathology"].tolist() == entry.findings
    assert (like["inside"] == "yes").all()
    other = pd.read_csv(tmp_path / "report" / "published_other.csv").set_index("entry")
    assert "zech2022-retrained" not in other.index
    assert "protocol: tta" in other.loc["arnoweng-chexnet", "differs_by"]
    assert "label file: Data_Entry_2017.csv" in other.loc["zech2018-retrained", "differs_by"]
    assert other.loc["rajpurkar2017-chexnet", "differs_by"].startswith("split: the source's own split")
    md = (tmp_path / "report" / "auroc_table.md").read_text()
    assert "## Published results" in md and "| zech2022 | zech2022-retrained | Pneumonia |" in md

    from chestx.runs.card import render_card

    card = render_card(run)  # the card works on a chestx.evaluate folder too (no training recipe: says so)
    assert "`python -m chestx.evaluate predictions=" in card and "optimizer `not in config.yaml`" in card
    assert "Like for like: [jrzech/reproduce-chexnet, model retrained 2022]" in card
