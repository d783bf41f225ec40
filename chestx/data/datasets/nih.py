"""NIH ChestX-ray14: read `Data_Entry_2017[_v2020].csv` into a `LabelTable` and find image files.

Source: Wang et al. 2017, https://nihcc.app.box.com/v/ChestXray-NIHCC. The label file has
`Image Index`, `Finding Labels` (`|`-joined, `No Finding` for none), `Patient ID`, `Patient Age`,
`Patient Gender`, `View Position`. Images ship in `images_001.tar.gz` ... `images_012.tar.gz`,
which unpack to `images_0NN/images/*.png` (Kaggle) or a single `images/` folder.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from chestx.data.labels.table import (
    NIH_PATHOLOGIES, NO_FINDING, DataError, LabelTable, optional_text, read_label_csv, refuse_blank_ids, required_text,
    select_pathologies,
)
from chestx.data.datasets.base import ChestXData, LabelFile, view_mask
from chestx.data.datasets.image_finders import InFolders, files_in_folders
from chestx.data.datasets.registry import NIH_CXR14, Regions, register_dataset
from chestx.data.labels.splits import SPLITS, list_split, official_split

log = logging.getLogger(__name__)

NIH_COLUMNS: tuple[str, ...] = (
    "Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender", "View Position",
)


def _parse_age(age: pd.Series) -> np.ndarray:
    """Ages as float years; the 2017 release wrote some as '058Y' (NaN when unparseable)."""
    if pd.api.types.is_numeric_dtype(age):
        return age.to_numpy(dtype=np.float64)  # a blank cell is NaN already
    digits = age.astype("string").str.extract(r"(\d+)", expand=False)  # missing stays missing -> NaN
    return pd.to_numeric(digits, errors="coerce").to_numpy(dtype=np.float64)


def _finding_matrix(findings: pd.Series, csv_path: Path, image_ids: pd.Series) -> dict[str, np.ndarray]:
    """Label string -> (N,) bool column, from `|`-joined `Finding Labels`; unknown strings -> DataError."""
    if findings.isna().any():
        bad = image_ids[findings.isna()].head(5).tolist()
        raise DataError(
            f"{str(csv_path)!r}: {int(findings.isna().sum())} rows have an empty 'Finding Labels' "
            f"(first: {bad}); every row needs labels or '{NO_FINDING}'"
        )
    cleaned = findings.astype(str).str.replace(r"\s*\|\s*", "|", regex=True).str.strip()
    tokens = cleaned.reset_index(drop=True).str.split("|").explode()  # one row per (image, label)
    codes, uniq = pd.factorize(tokens.to_numpy())
    hits = np.zeros((len(cleaned), len(uniq)), dtype=bool)  # (N, labels seen)
    hits[tokens.index.to_numpy(), codes] = True
    known = set(NIH_PATHOLOGIES) | {NO_FINDING}
    unknown = sorted(set(uniq) - known)
    if unknown:
        first = image_ids[hits[:, [list(uniq).index(u) for u in unknown]].any(axis=1)].head(3).tolist()
        raise DataError(
            f"{str(csv_path)!r}: unknown label strings {unknown} in 'Finding Labels' (e.g. rows {first}); "
            f"valid labels are {sorted(known)}. Fix the file or use NIH's Data_Entry_2017*.csv unchanged."
        )
    return {name: hits[:, j] for j, name in enumerate(uniq)}


def read_nih(
    csv_path: str | Path,
    pathologies: Sequence[str] = NIH_PATHOLOGIES,
    include_no_finding: bool = False,
    views: Sequence[str] | str | None = None,
) -> LabelTable:
    """Read NIH's label file into a LabelTable.

    `pathologies`: any subset of `NIH_PATHOLOGIES` (in the order given). `include_no_finding`
    appends `No Finding` as an extra class (1 where `Finding Labels` is exactly "No Finding", which
    is also `frame.no_finding`). `views`:
    keep only these `View Position` values, e.g. ["PA"] or ["PA", "AP"]; None keeps all.
    NIH labels are never uncertain, so `uncertain` is all False.
    """
    csv_path = Path(csv_path).expanduser()
    names = select_pathologies(pathologies, NIH_PATHOLOGIES, "NIH")
    raw = read_label_csv(csv_path, NIH_COLUMNS, "NIH")
    if views is not None:
        keep = view_mask(raw["View Position"], views, f"NIH label file {str(csv_path)!r}", column="'View Position'")
        raw = raw.loc[keep].reset_index(drop=True)

    image_ids = required_text(raw["Image Index"], "Image Index", csv_path, "NIH label")
    dummies = _finding_matrix(raw["Finding Labels"], csv_path, image_ids)
    columns = names + ([NO_FINDING] if include_no_finding else [])
    labels = np.zeros((len(raw), len(columns)), dtype=np.float32)  # (N, K)
    for k, name in enumerate(columns):
        if name in dummies:
            labels[:, k] = dummies[name]
    # normal = `Finding Labels` is exactly "No Finding" (the source's own rule), whatever classes are chosen
    normal = raw["Finding Labels"].astype(str).str.strip().eq(NO_FINDING).to_numpy()  # (N,)
    if include_no_finding:
        labels[:, -1] = normal

    frame = pd.DataFrame({
        "image_id": image_ids,
        "patient_id": required_text(raw["Patient ID"], "Patient ID", csv_path, "NIH label"),
        "path": image_ids,  # file name; NIHData.images (nih_image_dirs) finds its folder
        "view": optional_text(raw["View Position"]),  # missing: NaN (subgroups: unknown)
        "age": _parse_age(raw["Patient Age"]),
        "sex": optional_text(raw["Patient Gender"]),
        "finding_labels": raw["Finding Labels"].astype(str),
        "no_finding": normal,
    })
    if "Follow-up #" in raw.columns:
        frame["follow_up"] = raw["Follow-up #"].to_numpy()
    dupes = frame["image_id"].duplicated()
    if dupes.any():
        raise DataError(
            f"{str(csv_path)!r}: {int(dupes.sum())} duplicated 'Image Index' values "
            f"(first: {frame['image_id'][dupes].head(3).tolist()}); each image must appear once"
        )
    log.info("Read %d NIH images of %d patients from %s (%d classes)",
             len(frame), frame["patient_id"].nunique(), csv_path, len(columns))
    return LabelTable(frame=frame, labels=labels, uncertain=np.zeros(labels.shape, dtype=bool), pathologies=columns)


def read_list_labels(list_files: Iterable[str | Path]) -> pd.DataFrame:
    """Labels of CheXNet-style list files: each line an image name and 14 0/1 in `NIH_PATHOLOGIES` order.

    Returns a float32 frame indexed by image name with the 14 pathology columns. A line with another
    number of labels, or values other than 0/1, -> DataError naming the file and line.
    """
    parts = []
    for path in map(Path, list_files):
        if not path.is_file():
            raise DataError(f"CheXNet list file not found: {str(path)!r}; set data.split_dir to the folder "
                            "holding chexnet_split/, or data.chexnet_labels=csv to take labels from the label file")
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        bad = next((i for i, r in enumerate(rows) if len(r) != 1 + len(NIH_PATHOLOGIES)), None)
        if bad is not None:
            raise DataError(
                f"{str(path)!r} line {bad + 1} has {len(rows[bad]) - 1} labels, expected {len(NIH_PATHOLOGIES)} "
                f"(image name then 0/1 for {list(NIH_PATHOLOGIES)}); use data.chexnet_labels=csv for name-only lists"
            )
        values = np.asarray([r[1:] for r in rows], dtype=np.float32)  # (M, 14)
        if not np.isin(values, (0.0, 1.0)).all():
            raise DataError(f"{str(path)!r}: labels must be 0 or 1; found {sorted(set(np.unique(values)) - {0.0, 1.0})}")
        parts.append(pd.DataFrame(values, index=[r[0] for r in rows], columns=list(NIH_PATHOLOGIES)))
    out = pd.concat(parts)
    if out.index.duplicated().any():
        raise DataError(f"{int(out.index.duplicated().sum())} images are listed twice in {[str(p) for p in list_files]}")
    return out


def with_list_labels(table: LabelTable, list_labels: pd.DataFrame) -> LabelTable:
    """`table` with its NIH pathology columns taken from `read_list_labels` (rows matched by image id).

    `No Finding` (if a column) and `frame.no_finding` become "all 14 list labels are 0", so that the
    normal flag follows the labels in use. Rows absent from the lists -> DataError.
    """
    ids = table.frame["image_id"].astype(str)
    absent = ~ids.isin(list_labels.index)
    if absent.any():
        raise DataError(f"{int(absent.sum())} images are in no CheXNet list file (first: {ids[absent].head(3).tolist()}); "
                        "filter to the listed images or use data.chexnet_labels=csv")
    rows = list_labels.loc[ids]  # (N, 14) in table order
    labels = table.labels.copy()  # (N, K)
    for k, name in enumerate(table.pathologies):
        if name in rows.columns:
            labels[:, k] = rows[name].to_numpy(dtype=np.float32)
    normal = (rows.to_numpy() == 0).all(axis=1)  # (N,)
    if NO_FINDING in table.pathologies:
        labels[:, table.pathologies.index(NO_FINDING)] = normal
    changed = int((labels != table.labels).any(axis=1).sum())
    log.info("CheXNet list labels: %d of %d images have labels that differ from the label file", changed, len(ids))
    frame = table.frame.assign(no_finding=normal)
    return LabelTable(frame=frame, labels=labels, uncertain=table.uncertain.copy(), pathologies=list(table.pathologies))


def nih_image_dirs(root: Path) -> list[Path]:
    """Folders that may hold NIH images, in order: root/images, root/images_0NN/images, root/images_0NN, root."""
    dirs = [root / "images"]
    with os.scandir(root) as it:
        split_dirs = sorted(e.name for e in it if e.is_dir() and e.name.startswith("images_"))
    for name in split_dirs:
        dirs += [root / name / "images", root / name]
    dirs.append(root)
    return [d for d in dirs if d.is_dir()]


def find_nih_images(root: str | Path, image_ids: Iterable[str]) -> tuple[dict[str, Path], list[str]]:
    """Locate image files by name under `root`, as `NIHData` does (`nih_image_dirs`, one directory listing per
    folder, the first folder holding a name wins). Returns (found: image id -> Path, sorted missing ids)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"NIH image root {str(root)!r} is not a folder; point data.root at the dataset folder")
    ids = list(image_ids)
    paths = files_in_folders(ids, lambda _: nih_image_dirs(root))
    found = {i: p for i, p in zip(ids, paths) if p is not None}
    return found, sorted(set(ids) - found.keys())


BBOX_LABEL_NAMES = {"Infiltrate": "Infiltration"}  # BBox_List_2017 spells one label differently
NIH_BOX_SIZE = 1024  # NIH boxes are in the coordinates of the 1024 px PNGs


def read_nih_boxes(path: str | Path) -> pd.DataFrame:
    """BBox_List_2017.csv -> image_id, pathology, x, y, w, h (1024 px coordinates), one row per box.

    A blank `Image Index` -> DataError naming the file and lines."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"bbox={str(path)!r} does not exist; pass bbox=<path to BBox_List_2017.csv>")
    raw = pd.read_csv(path)
    if "Image Index" not in raw.columns or "Finding Label" not in raw.columns or raw.shape[1] < 6:
        raise ValueError(f"bbox={str(path)!r} is not NIH's BBox_List_2017.csv (columns {list(raw.columns)[:6]})")
    refuse_blank_ids(path, "Image Index", "NIH box list")
    coords = raw.iloc[:, 2:6].astype(float).to_numpy()  # 'Bbox [x', 'y', 'w', 'h]'
    return pd.DataFrame({
        "image_id": raw["Image Index"].astype(str).str.strip(),
        "pathology": raw["Finding Label"].astype(str).replace(BBOX_LABEL_NAMES),
        "x": coords[:, 0], "y": coords[:, 1], "w": coords[:, 2], "h": coords[:, 3],
    })


# data.chexnet_labels: where data.split=chexnet takes its 14 labels from
CHEXNET_LABEL_SOURCES = ("lists", "csv")


NIH_LABEL_FILES: tuple[str, ...] = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")  # in data.root, first found
NIH_LABEL_FILE = LabelFile(NIH_LABEL_FILES, key="csv")


@register_dataset(
    "nih", findings=(*NIH_PATHOLOGIES, NO_FINDING), image_pool=NIH_CXR14,  # NIH's `Patient ID`
    left_out="nothing: the 14 labels of `Finding Labels`, and `No Finding` (data.include_no_finding).",
    regions=Regions("box", frozenset({"Image Index", "Finding Label"}), read_nih_boxes, float(NIH_BOX_SIZE),
                    "NIH BBox_List_2017.csv"),
)
class NIHData(ChestXData):
    """NIH ChestX-ray14 as NIH ships it (`Data_Entry_2017*.csv`, `images*/`)."""

    label_files = {"labels": NIH_LABEL_FILE}
    images = InFolders(lambda data, _: nih_image_dirs(data.root), sorted_names=True)

    def __init__(
        self,
        root: str,
        csv: str | None = None,
        split: str = "official",
        split_dir: str | None = None,
        include_no_finding: bool = False,
        views: Sequence[str] | None = None,
        chexnet_labels: str = "csv",
        findings: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if split not in ("official", "chexnet", "random"):
            raise DataError(f"data.split={split!r} is not one of ['official', 'chexnet', 'random']")
        if chexnet_labels not in CHEXNET_LABEL_SOURCES:
            raise DataError(
                f"data.chexnet_labels={chexnet_labels!r} is not one of {list(CHEXNET_LABEL_SOURCES)}: 'lists' takes "
                "the labels written in the CheXNet list files, 'csv' those of the label file"
            )
        self.chexnet_labels = chexnet_labels
        self.csv = csv
        self.split_name = split
        self.split_dir = split_dir
        self.include_no_finding = include_no_finding
        self.views = list(views) if views else None
        self.findings = select_pathologies(list(findings), NIH_PATHOLOGIES, "data.findings (NIH)") if findings else None

    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        table = read_nih(self.label_file(), self.findings or NIH_PATHOLOGIES,
                         include_no_finding=self.include_no_finding, views=self.views)
        split_dir = Path(self.split_dir) if self.split_dir else self.root
        if self.split_name == "official":
            split = official_split(
                table.frame, split_dir / "train_val_list.txt", split_dir / "test_list.txt",
                val_fraction=self.val_fraction, seed=self.seed,
            )
        elif self.split_name == "chexnet":
            lists = {name: split_dir / "chexnet_split" / f"{name}_list.txt" for name in SPLITS}
            if not lists["train"].exists():
                lists = {name: split_dir / f"{name}_list.txt" for name in SPLITS}
            split = list_split(table.frame, lists)
            if self.chexnet_labels == "lists":
                table = with_list_labels(table, read_list_labels(lists.values()))
        else:
            split = self.make_split(table)
        keep = split != ""
        if not keep.all():
            log.info("%d rows are in none of the split lists and are left out", int((~keep).sum()))
            table, split = table.subset(keep), split[keep]
        return table, split
