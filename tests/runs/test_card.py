"""model_card.md of a real training run: written by chestx.train, every number found in the file it came from,
digests equal to the files' own, absent files named, `python -m chestx.card` regenerates it."""
from __future__ import annotations

import csv
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chestx.published.registry import REGISTRY_FILE
from chestx.runs import card as card_module
from chestx.runs.card import render_card

NUMBER = re.compile(r"(?<![\w.\-])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])")


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _table(card: str, header_start: str) -> list[list[str]]:
    """The rows of the Markdown table whose header begins with `header_start`, cells as text."""
    lines = card.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header_start}"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_training_writes_the_card_and_the_digests(clinical_run_dir: Path, sample_root: Path) -> None:
    card = (clinical_run_dir / "model_card.md").read_text()
    assert card.startswith("---\nlibrary_name: chestx\n")
    for heading in ("## Model Details", "## Uses", "## Training Details and Evaluation Data", "## Label policy",
                    "## Evaluation", "### Calibration and frozen thresholds", "### Subgroup gaps",
                    "## Environmental Impact", "## Comparable published results", "## Bias, Risks, and Limitations"):
        assert heading in card
    assert "**Not a medical device.**" in card and "text-mined from radiology reports" in card
    digests = {r["role"]: r for r in _csv(clinical_run_dir / "data_files.csv")}
    label_file = sample_root / "Data_Entry_sample.csv"
    assert digests["label_file"]["name"] == label_file.name
    assert digests["label_file"]["sha256"] == hashlib.sha256(label_file.read_bytes()).hexdigest()
    assert digests["split"]["sha256"] == hashlib.sha256((clinical_run_dir / "split.csv").read_bytes()).hexdigest()
    assert f"`{digests['split']['sha256']}`" in card and f"`{digests['label_file']['sha256']}`" in card


def test_every_number_in_the_card_equals_its_file(clinical_run_dir: Path) -> None:
    card = render_card(clinical_run_dir)
    auroc = {r["pathology"]: r for r in _csv(clinical_run_dir / "auroc.csv")}
    intervals = {r["pathology"]: r for r in _csv(clinical_run_dir / "subgroups.csv") if r["attribute"] == "all"}
    rows = _table(card, "finding | AUROC")
    assert [r[0] for r in rows] == list(auroc)
    for name, value, low, high, n_pos, n_neg in rows:
        assert [value, n_pos, n_neg] == [auroc[name]["auroc"], auroc[name]["n_pos"], auroc[name]["n_neg"]]
        if name in intervals:
            assert [low, high] == [intervals[name]["auroc_low"], intervals[name]["auroc_high"]]
    thresholds = {r["pathology"]: r for r in _csv(clinical_run_dir / "thresholds.csv")}
    calibration = {r["pathology"]: r for r in _csv(clinical_run_dir / "calibration.csv")}
    for name, threshold, method, ece, ece_t in _table(card, "finding | threshold"):
        assert [threshold, method] == [thresholds[name]["threshold"], thresholds[name]["method"]]
        assert [ece, ece_t] == [calibration[name]["ece"], calibration[name]["ece_temperature_scaled"]]
    subgroups = _csv(clinical_run_dir / "subgroups.csv")
    for attribute, finding, group, images, value, gap, fnr_gap in _table(card, "attribute | finding"):
        row = next(r for r in subgroups if (r["attribute"], r["pathology"], r["group"]) == (attribute, finding, group))
        assert [images, value, gap, fnr_gap] == [row["n_images"], row["auroc"], row["auroc_gap"], row["fnr_gap"]]
    # and every other number of the card (cost, counts, recipe) is written somewhere in the folder's files, the
    # registry, or is one of the card's own words (95 %, the papers' years)
    sources = "".join(p.read_text(errors="ignore") for p in clinical_run_dir.rglob("*")
                      if p.is_file() and p.suffix in (".csv", ".json", ".yaml"))
    sources += REGISTRY_FILE.read_text() + Path(card_module.__file__).read_text()
    known = set(NUMBER.findall(sources))
    text = re.sub(r"`[0-9a-f]{64}`", "", card)  # digests, checked above
    unknown = sorted(set(NUMBER.findall(text)) - known)
    assert not unknown, f"numbers in the card found in no file: {unknown}"


def test_absent_files_are_named_not_filled_in(clinical_run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(clinical_run_dir, run, ignore=shutil.ignore_patterns("checkpoints", "heatmaps"))
    for name in ("subgroups.csv", "thresholds.csv", "data_files.csv"):
        (run / name).unlink()
    card = render_card(run)
    assert "Not computed (subgroups.csv absent: subgroups=none)." in card
    assert "Not computed (thresholds.csv / calibration.csv absent: clinical=none)." in card
    assert "Digests: not recorded (data_files.csv is absent: the run predates it)." in card
    assert "(absent: no interval)" in card


@pytest.mark.slow
def test_chestx_card_regenerates_it(clinical_run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(clinical_run_dir, run, ignore=shutil.ignore_patterns("checkpoints", "heatmaps"))
    (run / "model_card.md").unlink()
    done = subprocess.run([sys.executable, "-m", "chestx.card", f"run={run}", f"hydra.run.dir={tmp_path / 'log'}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (run / "model_card.md").read_text() == render_card(run)
    bad = subprocess.run([sys.executable, "-m", "chestx.card", f"run={tmp_path}", f"hydra.run.dir={tmp_path / 'l2'}"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "pass a chestx.train run folder" in bad.stdout + bad.stderr


def test_label_files_of_each_dataset_class(shared_data: Path) -> None:
    """data_files.csv digests the file each dataset class reads (real shared label files)."""
    from chestx.data.datasets.chexpert import CheXpertData
    from chestx.data.datasets.padchest import PadChestData
    from chestx.data.datasets.rsna_pneumonia import RSNAPneumoniaData
    from chestx.data.datasets.siim import SIIMData
    from chestx.runs.card import label_files as found

    def label_files(data) -> list[Path]:  # resolved: ../shared may be a symlink (CheXpert's folder is resolved)
        return [p.resolve() for p in found(data)]

    shared_data = shared_data.resolve()
    assert label_files(RSNAPneumoniaData(root=shared_data / "rsna")) == [
        shared_data / "rsna" / "kaggle_stage_2_train_labels.csv.zip"]
    assert label_files(SIIMData(root=shared_data / "siim")) == [
        shared_data / "siim" / "siim-pneumothorax-train-rle.csv.gz"]
    assert label_files(PadChestData(root=shared_data / "padchest")) == [
        shared_data / "padchest" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"]
    assert label_files(CheXpertData(root=shared_data / "chexpert")) == [
        shared_data / "chexpert" / "train.csv", shared_data / "chexpert" / "valid.csv"]


def test_label_files_are_what_each_dataset_declares(shared_data: Path, tmp_path: Path) -> None:
    """The card asks the dataset (ChestXData.label_paths over its `label_files`): several files per dataset in their
    declared order, the option that names a file instead, optional files only when present."""
    from chestx.data.datasets.mimic_cxr import MIMIC_CXRData
    from chestx.data.datasets.nih import NIHData
    from chestx.data.datasets.nih_expert import NIHExpertData
    from chestx.data.datasets.openi import OpenIData
    from chestx.data.datasets.rsna_pneumonia import RSNAPneumoniaData
    from chestx.data.datasets.vindr_cxr import VinDrData
    from chestx.runs.card import label_files

    nih, shared = shared_data / "nih", shared_data
    assert label_files(NIHData(root=nih)) == [nih / "Data_Entry_2017_v2020.csv"]
    assert label_files(NIHData(root=nih, csv="sample256/Data_Entry_sample.csv")) == [
        nih / "sample256" / "Data_Entry_sample.csv"]  # data.csv relative to data.root
    assert label_files(NIHExpertData(root=nih)) == [nih / "Data_Entry_2017_v2020.csv",
                                                    nih / "google2019_nih-chest-xray-labels.csv.gz"]
    assert label_files(VinDrData(root=shared / "vindr")) == [shared / "vindr" / "vinbigdata-train.csv.gz"]
    assert label_files(OpenIData(root=shared / "openi")) == [shared / "openi" / "NLMCXR_reports.tgz",
                                                             shared / "openi" / "nlmcxr_dicom_metadata.csv.gz"]
    assert label_files(OpenIData(root=shared / "openi", metadata=None)) == [shared / "openi" / "NLMCXR_reports.tgz"]
    for name in ("mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-negbio.csv", "mimic-cxr-2.0.0-metadata.csv.gz",
                 "stage_2_train_labels.csv", "stage_2_detailed_class_info.csv"):
        (tmp_path / name).write_text("")
    assert label_files(MIMIC_CXRData(root=tmp_path, labeler="negbio")) == [
        tmp_path / "mimic-cxr-2.0.0-negbio.csv", tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz"]
    assert label_files(RSNAPneumoniaData(root=tmp_path)) == [tmp_path / "stage_2_train_labels.csv",
                                                             tmp_path / "stage_2_detailed_class_info.csv"]
