"""NIH <-> CheXpert through the finding vocabulary: what cross-dataset evaluation scores (7 findings)."""
from __future__ import annotations

from chestx.data.labels.table import (
    CHEXPERT_COMPETITION_TASKS, CHEXPERT_PATHOLOGIES, NIH_PATHOLOGIES, shared_pathologies,
)


def test_nih_model_on_chexpert_labels() -> None:
    pairs = shared_pathologies(NIH_PATHOLOGIES, CHEXPERT_PATHOLOGIES)
    named = [(NIH_PATHOLOGIES[k], CHEXPERT_PATHOLOGIES[j]) for k, j in pairs]
    assert named == [("Atelectasis", "Atelectasis"), ("Cardiomegaly", "Cardiomegaly"),
                     ("Effusion", "Pleural Effusion"), ("Pneumonia", "Pneumonia"), ("Pneumothorax", "Pneumothorax"),
                     ("Consolidation", "Consolidation"), ("Edema", "Edema")]  # the model's order


def test_chexpert_model_on_nih_labels_and_the_competition_tasks() -> None:
    pairs = shared_pathologies(CHEXPERT_COMPETITION_TASKS, NIH_PATHOLOGIES)
    assert [(CHEXPERT_COMPETITION_TASKS[k], NIH_PATHOLOGIES[j]) for k, j in pairs] == [
        ("Atelectasis", "Atelectasis"), ("Cardiomegaly", "Cardiomegaly"), ("Consolidation", "Consolidation"),
        ("Edema", "Edema"), ("Pleural Effusion", "Effusion")]


def test_nothing_mapped_by_guesswork() -> None:
    assert len(shared_pathologies(NIH_PATHOLOGIES, CHEXPERT_PATHOLOGIES)) == 7
    unmatched_nih = {"Infiltration", "Mass", "Nodule", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"}
    matched = {NIH_PATHOLOGIES[k] for k, _ in shared_pathologies(NIH_PATHOLOGIES, CHEXPERT_PATHOLOGIES)}
    assert not matched & unmatched_nih
    assert shared_pathologies(["Mass", "Nodule", "Infiltration"], CHEXPERT_PATHOLOGIES) == []
    assert shared_pathologies(["Lung Lesion", "Lung Opacity", "No Finding", "Support Devices"], NIH_PATHOLOGIES) == []


def test_same_dataset_maps_every_name_forgiving_case_and_underscores() -> None:
    assert shared_pathologies(NIH_PATHOLOGIES, NIH_PATHOLOGIES) == [(k, k) for k in range(14)]
    assert shared_pathologies(["pleural_effusion"], ["Effusion", "Pleural Effusion"]) == [(0, 1)]  # the name wins
    assert shared_pathologies(["pleural_effusion"], ["Effusion"]) == [(0, 0)]
