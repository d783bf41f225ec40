"""The report's cross-dataset matrix over real run folders: the tiny NIH run (`clinical_run_dir`) scored on
CheXpert's real valid.csv (small real X-ray JPEGs at its paths) and on the embedded NIH sample, copied into a
sweep: two seeds of one configuration (the second seed's probabilities re-drawn around the model's), a second
configuration whose checkpoint a real `chestx.evaluate ckpt=... data=chexpert` folder scored, and a third without
external/. Every cell is recomputed here with pandas + sklearn from the predictions files."""
from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from chestx.comparison import build_report
from chestx.comparison.cross_dataset import HEADING, HOW_TO, MATRIX_FILE

SEED1_NOISE = 0.15  # sd of the noise that makes the second seed's probabilities differ from the first's


def _redraw(probs: np.ndarray, seed: int) -> np.ndarray:
    return np.clip(probs + np.random.default_rng(seed).normal(0, SEED1_NOISE, probs.shape), 0, 1)


def _copy_run(source: Path, dest: Path, overrides: list[str], seed: int) -> Path:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("checkpoints", "cams", "external"))
    (dest / ".hydra").mkdir(exist_ok=True)
    (dest / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}"]))
    metrics = json.loads((dest / "metrics.json").read_text())
    (dest / "metrics.json").write_text(json.dumps(metrics | {"seed": seed}))
    return dest


def _redraw_internal(run: Path, seed: int) -> None:
    """predictions.csv and auroc.csv of the run with re-drawn probabilities (another replicate's numbers)."""
    from chestx.core.run_folder import predictions_frame, read_predictions, write_auroc, write_predictions

    ids, probs, labels, names = read_predictions(run / "predictions.csv")
    probs = _redraw(probs, seed)
    write_predictions(run / "predictions.csv", predictions_frame(ids, probs, labels, names))
    write_auroc(run / "auroc.csv", probs, labels, names)


@pytest.fixture(scope="module")
def sweep(clinical_run_dir: Path, chexpert_tree: Path, sample_root: Path, tmp_path_factory,
          monkeypatch_module) -> Path:
    from chestx.data.datasets.chexpert import CheXpertData
    from chestx.data.datasets.nih import NIHData
    from chestx.evaluate import main as evaluate_main
    from chestx.inference.external import score_external
    from chestx.inference.predictor import load_for_inference
    from chestx.runs.external import thresholds_for, write_external

    root = tmp_path_factory.mktemp("cross_dataset_report")
    runs = root / "sweep"
    predictor = load_for_inference(clinical_run_dir / "checkpoints" / "best.ckpt")
    chexpert = score_external(predictor, CheXpertData(root=str(chexpert_tree), findings="all"), batch_size=64)
    nih = score_external(predictor, NIHData(root=str(sample_root), csv=str(sample_root / "Data_Entry_sample.csv"),
                                            split="random"), batch_size=64)
    for seed in (0, 1):  # one configuration, two seeds, scored on CheXpert (7 shared findings) and NIH (all 14)
        run = _copy_run(clinical_run_dir, runs / str(seed), ["model=resnet18"], seed)
        if seed == 1:
            _redraw_internal(run, seed)
        for name, scores in (("chexpert", chexpert), ("nih_sample", nih)):
            scores = replace(scores, probs=_redraw(scores.probs, seed)) if seed == 1 else scores
            write_external(run / "external" / name, scores, thresholds_for(predictor, scores.pathologies))
    other = _copy_run(clinical_run_dir, runs / "2", ["model=resnet18", "optimizer.lr=0.01"], 0)
    _redraw_internal(other, 2)
    (other / "checkpoints").symlink_to(clinical_run_dir / "checkpoints")  # its checkpoint, scored by chestx.evaluate
    monkeypatch_module.setattr(sys, "argv", [
        "chestx.evaluate", f"ckpt={other / 'checkpoints' / 'best.ckpt'}", "data=chexpert",
        f"data.root={chexpert_tree}", "data.findings=all", "subgroups=none", f"hydra.run.dir={root / 'evaluate'}"])
    evaluate_main()
    _copy_run(clinical_run_dir, runs / "3", ["model=resnet18", "optimizer.lr=0.1"], 0)  # no external/
    build_report([runs, root / "evaluate"], root / "report", n_resamples=50)
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _auroc(folder: Path) -> pd.Series:
    """Independent reading of a predictions.csv: sklearn AUROC per pathology, NaN with one class."""
    frame = pd.read_csv(folder / "predictions.csv")
    out = {}
    for column in [c for c in frame.columns if c.startswith("prob_")]:
        name = column[len("prob_"):]
        known = frame["label_" + name].notna()
        y = frame.loc[known, "label_" + name].to_numpy()
        out[name] = roc_auc_score(y, frame.loc[known, column]) if len(np.unique(y)) == 2 else np.nan
    return pd.Series(out)


def _cell(internal: Path, external: Path) -> tuple[float, float, list[str]]:
    """(internal mean, external mean, findings): over the external folder's findings with an AUROC on both splits."""
    ext, own = _auroc(external), _auroc(internal)
    findings = [p for p in ext.index if np.isfinite(ext[p]) and np.isfinite(own.get(p, np.nan))]
    return float(own[findings].mean()), float(ext[findings].mean()), findings


def _matrix(md: str) -> list[list[str]]:
    section = md.split(f"## {HEADING}")[1].split("\n## ")[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]


def _fmt(values: list[float]) -> str:
    return f"{np.mean(values):.3f}" + (f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else "")


def test_matrix_equals_an_independent_computation(sweep: Path) -> None:
    runs = sweep / "sweep"
    rows = _matrix((sweep / "report" / "auroc_table.md").read_text())
    header, body = rows[0], {(r[0], r[1]): r for r in rows[2:]}
    assert header == ["configuration", "trained on", "nih", "chexpert", "nih_sample"]  # dataset names
    assert set(body) == {("resnet18 lr=0.001", "nih"), ("resnet18 lr=0.01", "nih")}
    seeds = {name: [_cell(runs / s, runs / s / "external" / name) for s in ("0", "1")]
             for name in ("chexpert", "nih_sample")}
    first = body[("resnet18 lr=0.001", "nih")]
    assert len(seeds["chexpert"][0][2]) >= 4  # most of the 7 shared findings have both classes on both splits
    internal = {name: _fmt([c[0] for c in cells]) for name, cells in seeds.items()}
    assert first[2] == (f"{internal['chexpert']} (internal, chexpert findings) / "
                        f"{internal['nih_sample']} (internal, nih_sample findings)")  # 7 vs 14 findings: one value each
    for name, column in (("chexpert", 3), ("nih_sample", 4)):
        deltas = [c[1] - c[0] for c in seeds[name]]
        expected = f"{_fmt([c[1] for c in seeds[name]])} (Δ {np.mean(deltas):+.3f})"
        assert first[column].strip("*") == expected, (name, first[column], expected)
    assert not first[4].startswith("**")  # the only number of its column: nothing to compare it with
    # the checkpoint of sweep/2 scored by chestx.evaluate lands in sweep/2's row, beside sweep/2's own test split
    own, ext, findings = _cell(runs / "2", sweep / "evaluate" / "external" / "chexpert")
    second = body[("resnet18 lr=0.01", "nih")]
    assert second[2:] == [f"{own:.3f} (internal)", second[3], "—"]
    assert second[3].strip("*") == f"{ext:.3f} (Δ {ext - own:+.3f})"
    best = max(np.mean([c[1] for c in seeds["chexpert"]]), ext)  # bold: best external number of the column
    assert (first if best != ext else second)[3].startswith("**")

    table = pd.read_csv(sweep / "report" / MATRIX_FILE)
    cell = table[(table["label"] == "resnet18 lr=0.01") & (table["test_data"] == "chexpert")].iloc[0]
    assert cell["auroc_mean"] == pytest.approx(ext, abs=2e-6) and cell["findings"] == ";".join(findings)
    assert cell["delta_mean"] == pytest.approx(ext - own, abs=4e-6) and cell["n_replicates"] == 1
    block = table[(table["label"] == "resnet18 lr=0.001") & (table["shared_with"] == "nih_sample")]
    assert block.set_index("test_data")["auroc_sd"].to_dict() == pytest.approx(
        {"nih": np.std([c[0] for c in seeds["nih_sample"]], ddof=1),
         "nih_sample": np.std([c[1] for c in seeds["nih_sample"]], ddof=1)}, abs=2e-6)


def test_section_text_files_and_html(sweep: Path) -> None:
    out = sweep / "report"
    md = (out / "auroc_table.md").read_text()
    text = md.split(f"## {HEADING}")[1].split("\n| ")[0]
    assert "restricted to the same findings" in text and "one internal value per external dataset" in text
    assert "Effusion = Pleural Effusion" in text and "nih model → chexpert (external/chexpert)" in text
    assert "`resnet18 lr=0.1` (seed 0)" in text  # the run without external/
    assert "cross-dataset section" in md.split("## Runs left out")[1]  # the chestx.evaluate folder, and why
    page = (out / "report.html").read_text()
    assert HEADING in page and page.split(HEADING)[1].split("<h2")[0].count("<tr>") == 3  # its own table only
    assert "tab:cross_dataset" in (out / "auroc_table.tex").read_text()
    per_run = pd.read_csv(out / "cross_dataset_per_run.csv")
    assert len(per_run) == 2 * (2 * 2 + 1)  # (internal, external) x (2 seeds x 2 datasets + 1 checkpoint)
    # every dataset sharing findings with the NIH model but not scored is named, with its shared count
    unscored = text.split("Not scored, though they share findings")[1].split("\n")[0]
    pairs = dict(re.findall(r"(\w+) \((\d+)\)", unscored.split(". Add")[0]))
    shared_with_chexpert = pd.read_csv(sweep / "sweep" / "0" / "external" / "chexpert" / "mapping.csv")
    assert pairs["mimic_cxr"] == str(len(shared_with_chexpert))  # CheXpert's labeller, so the same findings
    assert pairs["siim"] == "1" and pairs["rsna_pneumonia"] == "1"  # Pneumothorax; Pneumonia
    assert {"padchest", "vindr_cxr", "nih_expert"} <= set(pairs) and not {"chexpert", "nih", "nih_sample"} & set(pairs)
    assert f"test_data=[{','.join(sorted(pairs))}]" in unscored


def test_no_external_folder_no_section(sweep: Path, tmp_path: Path) -> None:
    result = build_report([sweep / "sweep" / "3"], tmp_path / "report", n_resamples=20)
    assert result.n_ok == 1 and MATRIX_FILE not in result.files and not (tmp_path / "report" / MATRIX_FILE).exists()
    assert HEADING not in (tmp_path / "report" / "auroc_table.md").read_text()
    page = (tmp_path / "report" / "report.html").read_text()
    assert HEADING not in page and "test_data=[chexpert] test_data.chexpert.root=" in page
    assert "test_data=[chexpert]" in HOW_TO


def test_checkpoint_folder_alone_gets_a_row_of_its_own(sweep: Path, tmp_path: Path) -> None:
    """chestx.evaluate ckpt=... without the training run: external column only, trained-on from the ckpt's run."""
    result = build_report([sweep / "evaluate"], tmp_path / "report", n_resamples=20)
    assert result.n_ok == 0 and result.comparison is None
    rows = _matrix((tmp_path / "report" / "auroc_table.md").read_text())
    external = _auroc(sweep / "evaluate" / "external" / "chexpert")
    assert rows[0] == ["configuration", "trained on", "chexpert"]
    assert rows[2] == ["resnet18", "nih", f"{external.mean():.3f}"]  # NaN-skipping, as the cell
    assert "tab:cross_dataset" in (tmp_path / "report" / "auroc_table.tex").read_text()
