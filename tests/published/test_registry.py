"""The published-results registry (chestx/published/results.yaml): stated means, validation, matching a run."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chestx.published.registry import (
    REGISTRY_FILE, RegistryError, RunFacts, differences, load_registry,
)

NIH14 = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
         "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def _decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text else 0


def test_stated_means_are_the_mean_of_their_findings() -> None:
    """Where the source says its mean is the mean of its per-finding values, it is (to the source's rounding:
    half a unit of the mean's last digit plus half a unit of the findings' last digit)."""
    checked = 0
    for entry in load_registry():
        if not entry.mean_is_mean_of_findings:
            continue
        values = list(entry.auroc.values())
        mean = sum(values) / len(values)
        tolerance = 0.5 * 10 ** -_decimals(entry.mean) + 0.5 * 10 ** -max(_decimals(v) for v in values)
        assert abs(mean - entry.mean) <= tolerance, (entry.id, mean, entry.mean, tolerance)
        checked += 1
    assert checked >= 1


def test_a_stated_mean_that_is_not_their_mean_is_flagged_and_explained() -> None:
    """A mean kept as written but not the mean of the values (arnoweng's 0.847 vs 0.8481) carries a note, and
    the flag is not stale: the mean really differs beyond rounding."""
    flagged = [e for e in load_registry() if e.mean is not None and not e.mean_is_mean_of_findings]
    assert [e.id for e in flagged] == ["arnoweng-improved"]
    for entry in flagged:
        values = list(entry.auroc.values())
        assert abs(sum(values) / len(values) - entry.mean) > 0.0005 + 0.00005
        assert "mean_note" in entry.extra


def test_every_entry_names_where_it_was_read_and_the_findings_use_the_dataset_names() -> None:
    entries = load_registry()
    assert len({e.id for e in entries}) == len(entries)
    for entry in entries:
        assert entry.read_from and entry.table and entry.link.startswith("https://")
        if entry.dataset == "nih" and len(entry.auroc) == 14:
            assert sorted(entry.findings) == sorted(NIH14)  # "Pleural Thickening" -> the dataset's own name
    zech = next(e for e in entries if e.id == "zech2022-retrained")
    assert zech.auroc["Pneumonia"] == pytest.approx(0.7616870310044441, abs=0)


def _write(tmp_path: Path, change) -> Path:
    document = yaml.safe_load(REGISTRY_FILE.read_text())
    change(document["entries"])
    path = tmp_path / "results.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(("change", "message"), [
    (lambda es: es[0]["auroc"].update({"Unicorn": 0.9}), "'Unicorn' is not in nih's vocabulary"),
    (lambda es: es[0]["auroc"].update({"Pleural_Thickening": 0.8}), "listed twice"),
    (lambda es: es[0]["auroc"].update({"Edema": 88.78}), "outside [0, 1]"),
    (lambda es: es.append(dict(es[0])), "is used twice"),
    (lambda es: es[0].update({"split": "random"}), "split='random'"),
    (lambda es: es[0].update({"protocol": "bagging"}), "protocol='bagging'"),
    (lambda es: es[0].update({"dataset": "nih14"}), "dataset='nih14'"),
    (lambda es: es[0].update({"interval": {"Edema": [0.9, 0.95]}}), "does not hold its value"),
    (lambda es: es[0].pop("read_from"), "missing fields ['read_from']"),
    (lambda es: es[0].update({"pages": 3}), "unknown fields ['pages']"),
])
def test_bad_entries_are_refused_with_the_field_named(tmp_path: Path, change, message: str) -> None:
    with pytest.raises(RegistryError, match=None) as error:
        load_registry(_write(tmp_path, change))
    assert message in str(error.value)


def test_matching_names_every_difference() -> None:
    entries = {e.id: e for e in load_registry()}
    run = RunFacts("nih", "chexnet", NIH14, chexnet_labels="csv", label_file=None)
    assert differences(entries["zech2022-retrained"], run) == []
    assert differences(entries["zech2018-retrained"], run) == [
        "label file: Data_Entry_2017.csv vs the run's default (Data_Entry_2017_v2020.csv)"]
    arnoweng = differences(entries["arnoweng-chexnet"], run)
    assert arnoweng[0] == "labels: the source scored data.chexnet_labels=lists vs the run's csv"
    assert arnoweng[1].startswith("protocol: tta (ten-crop")
    assert differences(entries["arnoweng-chexnet"], RunFacts("nih", "chexnet", NIH14, "lists")) == [arnoweng[1]]
    assert "cross-dataset" in differences(entries["jfhealthcare-densenet121-on-nih"], run)[1]
    assert differences(entries["zech2022-retrained"], RunFacts("nih_sample", "random", NIH14)) is None
    assert differences(entries["zech2022-retrained"], RunFacts("nih", "chexnet", ["Edema"], "csv")) == [
        "findings: the run does not score " + ", ".join(f for f in NIH14 if f != "Edema")]
