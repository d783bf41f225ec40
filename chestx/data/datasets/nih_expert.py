"""NIH ChestX-ray14 with Google's adjudicated expert labels (4,376 images), beside NIH's original NLP labels.

Sources: Majkowska et al. 2020, "Chest radiograph interpretation with deep learning models: assessment with
radiologist-adjudicated reference standards and population-adjusted evaluation", Radiology 294(2)
(doi:10.1148/radiol.2019191293): four findings (Pneumothorax, Nodule or mass, Airspace opacity, Fracture), each
image read by three radiologists and adjudicated, on a validation (2,414 images) and a test set (1,962 images;
all in NIH's official test list, patients disjoint from the validation set). torchxrayvision `datasets.py`,
`NIH_Google_Dataset`, and its `google2019_nih-chest-xray-labels.csv.gz` (both sets in one file, `Set Id`
val / test, with NIH's own columns `Image Index`, `Finding Labels`, `Patient ID`, ... in front).

Label sets (`label_source`):
- `expert`: Google's YES / NO -> 1 / 0.
- `original`: NIH's `Finding Labels` of the same images, in Google's definitions: Pneumothorax = NIH
  Pneumothorax; Nodule or mass = NIH Nodule or Mass; Airspace opacity and Fracture have no NIH label of that
  definition and are unknown (NaN), nothing is mapped by guesswork.
Score a model on both and the AUROC difference is what the NLP labels' noise costs it.

Findings (`findings`) are named so that an NIH model's outputs meet them by name (`chestx.evaluate`,
`test_data`, `labels.shared_pathologies`): `nih` = Pneumothorax, Nodule, Mass, where Nodule and Mass both
hold the one label "Nodule or mass" (each NIH output scored against the union finding); `google` = the four
as Google names them; or a list of names from `FINDING_SOURCES`.

Metadata (sex, age, view, patient) and the original labels come from NIH's label file in use
(`Data_Entry_2017_v2020.csv` in `data.root`, or `data.csv`), as with `data=nih`; the NIH columns the expert
file repeats are not read (they hold the 2017 ages, e.g. 155). Split `google`: Google's val / test sets as
they are, no training images (evaluation, or `data.folds=K` for folds of the validation set); `random`: a
patient-level random split.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from chestx.data.labels.table import NIH_PATHOLOGIES, DataError, LabelTable, read_label_csv
from chestx.data.datasets.nih import NIH_LABEL_FILE, NIHData, read_nih
from chestx.data.datasets.base import ChestXData, LabelFile
from chestx.data.datasets.registry import NIH_CXR14, register_dataset
from chestx.data.labels.splits import SPLITS, check_patient_disjoint

log = logging.getLogger(__name__)

EXPERT_FINDINGS: tuple[str, ...] = ("Fracture", "Pneumothorax", "Airspace opacity", "Nodule or mass")  # file order
# finding name (as `findings` lists it) -> (Google's column, the NIH labels of the same definition or None)
FINDING_SOURCES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "Pneumothorax": ("Pneumothorax", ("Pneumothorax",)),
    "Nodule": ("Nodule or mass", ("Nodule", "Mass")),
    "Mass": ("Nodule or mass", ("Nodule", "Mass")),
    "Nodule or mass": ("Nodule or mass", ("Nodule", "Mass")),
    "Airspace opacity": ("Airspace opacity", None),
    "Fracture": ("Fracture", None),
}
FINDING_SETS: dict[str, tuple[str, ...]] = {"nih": ("Pneumothorax", "Nodule", "Mass"), "google": EXPERT_FINDINGS}
EXPERT_FILES: tuple[str, ...] = ("google2019_nih-chest-xray-labels.csv.gz", "google2019_nih-chest-xray-labels.csv")
LABEL_SETS = ("expert", "original")
SPLIT_RULES = ("google", "random")
SET_IDS = {"val": "val", "test": "test"}  # the expert file's `Set Id` -> chestx split
YES_NO = {"YES": 1.0, "NO": 0.0}


def resolve_findings(findings: str | Sequence[str]) -> list[str]:
    """`nih` | `google` | a list of names of FINDING_SOURCES -> the list; DataError naming the valid ones."""
    if isinstance(findings, str):
        if findings not in FINDING_SETS:
            raise DataError(f"data.findings={findings!r}: use one of {list(FINDING_SETS)} or a list of "
                            f"{list(FINDING_SOURCES)}")
        return list(FINDING_SETS[findings])
    names = list(findings)
    unknown = [f for f in names if f not in FINDING_SOURCES]
    if unknown or not names or len(set(names)) < len(names):
        raise DataError(f"data.findings={names}: list each at most once, from {list(FINDING_SOURCES)} "
                        f"(unknown: {unknown})")
    return names


def read_expert(csv_path: str | Path | Mapping[str, str | Path]) -> pd.DataFrame:
    """Google's labels: image_id, set (val / test) and the four findings as 1.0 / 0.0, one row per image (file order).

    `csv_path` is torchxrayvision's combined file (with `Set Id`), or {val: path, test: path} of one file per set.
    A value other than YES / NO, an unknown `Set Id` or a duplicated image -> DataError naming file and rows.
    """
    if isinstance(csv_path, Mapping):
        wrong = sorted(set(csv_path) - set(SET_IDS))
        if wrong:
            raise DataError(f"data.expert_csv keys {wrong}: use {{val: <file>, test: <file>}}")
        parts = []
        for set_id, path in csv_path.items():
            part = read_label_csv(path, ["Image Index", *EXPERT_FINDINGS], "Google NIH expert", dtype=str)
            parts.append(part.assign(**{"Set Id": set_id, "_file": str(path)}))
        raw = pd.concat(parts, ignore_index=True)
    else:
        raw = read_label_csv(csv_path, ["Image Index", *EXPERT_FINDINGS, "Set Id"], "Google NIH expert", dtype=str)
        raw["_file"] = str(csv_path)
    ids = raw["Image Index"].str.strip()
    out = pd.DataFrame({"image_id": ids})
    set_id = raw["Set Id"].str.strip()
    bad = ~set_id.isin(list(SET_IDS)).to_numpy()
    if bad.any():
        raise DataError(f"{raw['_file'][bad].iloc[0]!r}: 'Set Id' must be {list(SET_IDS)}; found "
                        f"{sorted(set_id[bad].fillna('<blank>').unique())[:5]} (e.g. {ids[bad].head(3).tolist()})")
    out["set"] = set_id.map(SET_IDS)
    for name in EXPERT_FINDINGS:
        values = raw[name].str.strip().str.upper()
        bad = ~values.isin(list(YES_NO)).to_numpy()
        if bad.any():
            raise DataError(f"{raw['_file'][bad].iloc[0]!r}: column {name!r} must be YES or NO; found "
                            f"{sorted(raw[name][bad].fillna('<blank>').unique())[:5]} in {int(bad.sum())} rows "
                            f"(e.g. {ids[bad].head(3).tolist()})")
        out[name] = values.map(YES_NO).astype(np.float32)
    twice = ids.duplicated()
    if twice.any():
        raise DataError(f"Google NIH expert labels: images {ids[twice].head(3).tolist()} appear twice; one row each")
    return out


def _left_out() -> str:
    no_nih_label = ", ".join(f"`{name}`" for name in EXPERT_FINDINGS if FINDING_SOURCES[name][1] is None)
    shared_column = [name for name in FINDING_SETS["nih"] if FINDING_SOURCES[name][0] != name]
    return (f"with data.label_source=original, {no_nih_label}: NIH has no label of Google's definition, so they are "
            f"unknown (NaN), not guessed. With data.findings=nih, {', '.join(f'`{n}`' for n in shared_column)} both "
            f"hold Google's one `{FINDING_SOURCES[shared_column[0]][0]}` label.")


@register_dataset("nih_expert", findings=EXPERT_FINDINGS, left_out=_left_out,
                  image_pool=NIH_CXR14)  # Google's expert labels of NIH images, NIH's `Patient ID`
class NIHExpertData(ChestXData):
    """NIH images that Google's radiologists re-labelled; labels `expert` or `original` (see module docstring)."""

    # an NIH model's predictions.csv covers more images than these 4,376: chestx.evaluate scores the ones here
    unknown_prediction_ids = "ignore"
    # NIH's label file (data.csv) for the metadata and the original labels, Google's (data.expert_csv: a file, or
    # {val: file, test: file}) for the expert labels
    label_files = {"labels": NIH_LABEL_FILE, "expert": LabelFile(EXPERT_FILES, key="expert_csv")}
    images = NIHData.images

    def __init__(
        self,
        root: str,
        expert_csv: str | Mapping[str, str] | None = None,
        csv: str | None = None,
        label_source: str = "expert",
        findings: str | Sequence[str] = "nih",
        split: str = "google",
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if label_source not in LABEL_SETS:
            raise DataError(f"data.label_source={label_source!r} is not one of {list(LABEL_SETS)}: 'expert' = "
                            "Google's adjudicated "
                            "labels, 'original' = NIH's NLP labels of the same images")
        if split not in SPLIT_RULES:
            raise DataError(f"data.split={split!r} is not one of {list(SPLIT_RULES)}: 'google' = Google's val / test "
                            "sets, 'random' = a patient-level random split of the 4,376 images")
        self.expert_csv = dict(expert_csv) if isinstance(expert_csv, Mapping) else expert_csv
        self.csv = csv
        self.label_source = label_source
        self.findings = resolve_findings(findings)
        self.split_name = split

    def _expert_files(self) -> Path | dict[str, Path]:
        """Google's label file, or {val: file, test: file} (data.expert_csv as a mapping)."""
        if isinstance(self.expert_csv, Mapping):
            return {set_id: self.under_root(path) for set_id, path in self.expert_csv.items()}
        path = self.label_file("expert")
        assert path is not None
        return path

    def label_paths(self) -> dict[str, Path]:
        """As ChestXData.label_paths; data.expert_csv as a mapping gives one role per set (expert_val, ...)."""
        if not isinstance(self.expert_csv, Mapping):
            return super().label_paths()
        return {"labels": self.label_file("labels"), **{f"expert_{s}": p for s, p in self._expert_files().items()}}

    def _nih_table(self, expert: pd.DataFrame) -> LabelTable:
        """NIH's labels and metadata of the expert images, in the expert file's order."""
        nih_csv = self.label_file("labels")
        table = read_nih(nih_csv, NIH_PATHOLOGIES)
        position = pd.Series(np.arange(len(table.frame)), index=table.frame["image_id"].to_numpy())
        absent = ~expert["image_id"].isin(position.index)
        if absent.any():
            raise DataError(f"{int(absent.sum())} images of the expert labels are not in the NIH label file "
                            f"{str(nih_csv)!r} (first: {expert['image_id'][absent].head(3).tolist()}); use NIH's "
                            "Data_Entry_2017*.csv unchanged")
        return table.subset(position.loc[expert["image_id"]].to_numpy())

    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        expert = read_expert(self._expert_files())
        nih = self._nih_table(expert)  # rows aligned with `expert`
        labels = np.empty((len(expert), len(self.findings)), dtype=np.float32)  # (N, K)
        for k, name in enumerate(self.findings):
            column, nih_names = FINDING_SOURCES[name]
            if self.label_source == "expert":
                labels[:, k] = expert[column].to_numpy(dtype=np.float32)
            elif nih_names is None:
                labels[:, k] = np.nan
            else:
                cols = [nih.pathologies.index(n) for n in nih_names]
                labels[:, k] = nih.labels[:, cols].max(axis=1)
        unknown = [name for name in self.findings if FINDING_SOURCES[name][1] is None]
        if self.label_source == "original" and unknown:
            log.warning("data.label_source=original: NIH has no label for %s: unknown (not scored)", unknown)
        frame = nih.frame.assign(expert_set=expert["set"].to_numpy())
        table = LabelTable(frame=frame, labels=labels, uncertain=np.zeros(labels.shape, dtype=bool),
                           pathologies=list(self.findings))
        if self.split_name == "google":
            split = expert["set"].to_numpy().astype("<U5")
            check_patient_disjoint(frame["patient_id"].to_numpy(), split)
        else:
            split = self.make_split(table)
        log.info("NIH expert labels (%s) of %d images for %s: split %s", self.label_source, len(frame), self.findings,
                 {s: int((split == s).sum()) for s in SPLITS})
        return table, split

    def _evaluation_only(self) -> bool:
        return self.split_name == "google" and self.folds is None

    def prepare(self) -> None:
        """As `ChestXData.prepare`, except that split=google has no training images (evaluation only)."""
        if not self._evaluation_only():
            super().prepare()
            return
        if self.table is not None and self.paths:
            return
        table, split = self.labels_only(find_images=True)
        for name in ("val", "test"):
            if not (split == name).any():
                raise DataError(f"the {name} split of the NIH expert labels has no images: check data.expert_csv")
        log.info("NIH expert split=google (evaluation only, no training images): %s",
                 {s: int((split == s).sum()) for s in SPLITS})

    def train_labels(self) -> np.ndarray:
        if self._evaluation_only():
            raise DataError(
                "data=nih_expert with data.split=google has no training images (Google's labels are a validation and "
                "a test set): score a model with chestx.evaluate or test_data=[nih_expert], or train on them with "
                "data.folds=K (folds of the validation set) or data.split=random")
        return super().train_labels()

