"""The one finding vocabulary (chestx.data.labels.table.FINDINGS) over every dataset, and its table in the docs."""
from __future__ import annotations

from pathlib import Path

import pytest

from chestx.data.datasets.vocabulary import DATASET_FINDINGS, markdown
from chestx.data.labels.table import NO_FINDING, NOT_MATCHED, canonical_finding, shared_pathologies


def test_docs_table_is_current(repo_root: Path) -> None:
    assert (repo_root / "docs" / "datasets" / "findings.md").read_text() == markdown(), (
        "regenerate: python -m chestx.data.datasets.vocabulary > docs/datasets/findings.md")


@pytest.mark.parametrize("dataset", list(DATASET_FINDINGS))
def test_no_dataset_labels_one_finding_twice(dataset: str) -> None:
    names = DATASET_FINDINGS[dataset]
    canonical = [canonical_finding(n) for n in names]
    assert len(set(canonical)) == len(names), (dataset, names)


@pytest.mark.parametrize(("model", "data", "expected"), [
    ("nih", "vindr_cxr", {"Effusion": "Effusion", "Pleural_Thickening": "Pleural_Thickening", "Fibrosis": "Fibrosis",
                          "Infiltration": "Infiltration", "Pneumothorax": "Pneumothorax"}),
    ("chexpert", "nih_expert", {"Lung Opacity": "Airspace opacity", "Pneumothorax": "Pneumothorax",
                                "Fracture": "Fracture"}),
    ("vindr_cxr", "nih_expert", {"Nodule/Mass": "Nodule or mass", "Lung Opacity": "Airspace opacity",
                                 "Pneumothorax": "Pneumothorax"}),
    ("nih", "siim", {"Pneumothorax": "Pneumothorax"}),
    ("chexpert", "rsna_pneumonia", {"Pneumonia": "Pneumonia", "Lung Opacity": "Lung Opacity"}),
])
def test_pairs_follow_the_vocabulary(model: str, data: str, expected: dict[str, str]) -> None:
    m, d = DATASET_FINDINGS[model], DATASET_FINDINGS[data]
    pairs = {m[k]: d[j] for k, j in shared_pathologies(m, d)}
    assert {k: v for k, v in pairs.items() if k in expected} == expected
    assert NO_FINDING not in pairs, "No Finding is never shared"


def test_alike_findings_are_not_matched() -> None:
    for a, b, _ in NOT_MATCHED:
        assert shared_pathologies([a], [b]) == [] and shared_pathologies([b], [a]) == [], (a, b)
    every = sorted({n for names in DATASET_FINDINGS.values() for n in names})
    assert shared_pathologies([NO_FINDING], every) == []  # never shared, although 5 datasets have the name
