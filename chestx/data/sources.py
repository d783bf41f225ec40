"""Datasets as configured: NIH ChestX-ray14 and CheXpert label files -> labels, split, image files.

`ChestXData` does everything that is not dataset specific: patient-level k-fold over the train+val
pool (`folds`, `fold`), resolve image files (and stop, or drop with a warning, when some are missing),
undersample normal images in the training split, check that splits are patient-disjoint and save the
split. `NIHData` / `CheXpertData` say how to read the label file and which rows go to which split.
No Lightning here: `chestx.data.datamodule` builds loaders.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from chestx.data.chexpert import read_chexpert, resolve_uncertainty
from chestx.data.image_check import UnreadableImagesError, check_dicom_window, find_unreadable
from chestx.data.labels import (
    CHEXPERT_COMPETITION_TASKS, CHEXPERT_PATHOLOGIES, NIH_PATHOLOGIES, DataError, LabelTable,
)
from chestx.data.nih import find_nih_images, read_list_labels, read_nih, with_list_labels
from chestx.data.splits import (
    SPLITS, SplitError, check_patient_disjoint, kfold_split, list_split, official_split, random_split, save_split,
)

log = logging.getLogger(__name__)

MISSING_POLICIES = ("error", "drop")
# data.chexnet_labels: where data.split=chexnet takes its 14 labels from
CHEXNET_LABEL_SOURCES = ("lists", "csv")


class ChestXData:
    """A dataset as configured: labels, patient split, image files and loader settings.

    Plain Python (no Lightning): `chestx.explore`, `chestx.evaluate` and `chestx.prepare` use it
    as it is; `chestx.train` wraps it in `ChestXDataModule`. Subclasses only say how to read the
    label file (`load_table`) and where the images are (`resolve_paths`).
    """

    def __init__(
        self,
        root: str,
        image_size: int | None = None,
        normalization: str = "imagenet",
        augment: dict | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int | None = 0,
        pin_memory: bool | None = False,
        normalize_on_device: bool = True,
        missing_images: str = "error",
        no_finding_fraction: float = 1.0,
        seed: int = 0,
        cache: bool = False,
        cache_dir: str | None = None,
        norm_sample: int = 512,
        folds: int | None = None,
        fold: int | None = None,
        dicom_window: str = "voi",
    ) -> None:
        _check_folds(folds, fold)
        check_dicom_window(dicom_window)
        if missing_images not in MISSING_POLICIES:
            raise DataError(f"data.missing_images={missing_images!r} is not one of {MISSING_POLICIES}")
        if not 0.0 < no_finding_fraction <= 1.0:
            raise DataError(f"data.no_finding_fraction={no_finding_fraction} must be in (0, 1]")
        self.root = Path(root).expanduser()
        self.image_size = image_size  # None: the backbone's native size (chestx.train resolves it)
        self.normalization = normalization
        self.augment = dict(augment or {})
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.normalize_on_device = normalize_on_device
        self.missing_images = missing_images
        self.no_finding_fraction = no_finding_fraction
        self.seed = seed
        self.cache = cache
        self.cache_dir = cache_dir
        self.norm_sample = norm_sample
        self.folds = folds  # None, or K: patient-level K-fold over the train+val pool, `fold` validates
        self.fold = fold
        self.dicom_window = dicom_window  # voi | minmax: how DICOM values become 0..255 (chestx.data.dicom)
        self.table: LabelTable | None = None
        self.split: np.ndarray | None = None  # (N,) "train"/"val"/"test"
        self.paths: list[Path] = []  # (N,) image files, once looked up

    # ------------------------------------------------------------ subclass API
    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        """Read labels and assign each row to a split."""
        raise NotImplementedError

    def resolve_paths(self, table: LabelTable) -> tuple[list[Path | None], list[str]]:
        """Image file of every row (None when missing), and the missing image ids."""
        raise NotImplementedError

    @property
    def multiclass(self) -> list[bool]:
        """Per pathology: True where the model gets a 3-way (negative / positive / uncertain) output."""
        return [False] * len(self.pathologies)

    # --------------------------------------------------------------- set-up
    @property
    def pathologies(self) -> list[str]:
        if self.table is None:
            self.labels_only()
        assert self.table is not None
        return list(self.table.pathologies)

    def labels_only(self, find_images: bool = False) -> tuple[LabelTable, np.ndarray]:
        """Label table and split of every row, as training uses them.

        Without `find_images` no image file is looked for (`chestx.evaluate`, `chestx.explore` on a
        label file alone); the rows and split then equal a run's `split.csv` whenever its images are
        all present (`data.missing_images=error`, the default). With it, missing images are handled as
        in training (`data.missing_images`), so the result equals `split.csv` under `drop` too.
        """
        if self.table is not None and (self.paths or not find_images):
            assert self.split is not None
            return self.table, self.split
        self._check_root()
        table, split = self.load_table()
        table, split = self._apply_fold(table, split)
        table, split = self._undersample_no_finding(table, split)
        paths: list[Path] = []
        if find_images:
            table, split, paths = self._drop_missing(table, split)
        check_patient_disjoint(table.frame["patient_id"].to_numpy(), split)
        self.table, self.split, self.paths = table, split, paths
        return table, split

    def _check_root(self) -> None:
        if not self.root.exists():
            raise DataError(f"data.root={str(self.root)!r} does not exist: point data.root at the dataset folder")

    def _apply_fold(self, table: LabelTable, split: np.ndarray) -> tuple[LabelTable, np.ndarray]:
        """With data.folds: fold data.fold of the train+val pool validates, the rest trains; test untouched.

        Folds are drawn from the label-file rows (seeded by data.seed), before normal undersampling (which
        then thins the training folds only) and before any image lookup, so they do not depend on which
        images are present. The frame gains a `fold` column (-1 for test) that split.csv records.
        """
        if self.folds is None:
            return table, split
        assert self.fold is not None
        try:
            split, fold_of_row = kfold_split(split, table.frame["patient_id"].to_numpy(), self.folds, self.fold,
                                             seed=self.seed)
        except SplitError as error:
            raise DataError(f"data.folds={self.folds} data.fold={self.fold}: {error}") from error
        log.info("k-fold: fold %d of %d validates (data.fold / data.folds, seed %d); the other %d folds train, "
                 "the test split is untouched", self.fold, self.folds, self.seed, self.folds - 1)
        return replace(table, frame=table.frame.assign(fold=fold_of_row)), split

    def _drop_missing(self, table: LabelTable, split: np.ndarray) -> tuple[LabelTable, np.ndarray, list[Path]]:
        """Image file of every row; missing or unreadable ones (a header check: format, size limit, truncation,
        DICOM pixel data and decoder; chestx.data.image_check) stop the run or are dropped (data.missing_images)."""
        paths, missing = self.resolve_paths(table)
        if missing:
            shown = ", ".join(missing[:5])
            if self.missing_images == "error":
                raise DataError(
                    f"{len(missing)} of {len(paths)} images listed in the label file were not found under "
                    f"data.root={str(self.root)!r} (first: {shown}); fix data.root, or set "
                    "data.missing_images=drop to train on the images that are present"
                )
            log.warning("Dropping %d of %d rows whose image is missing (data.missing_images=drop; first: %s)",
                        len(missing), len(paths), shown)
            keep = np.array([p is not None for p in paths])
            table, split, paths = table.subset(keep), split[keep], [p for p in paths if p is not None]
        paths = [Path(p) for p in paths]
        started = time.perf_counter()
        unreadable = find_unreadable(paths)  # header checks only: no pixel is decoded here
        log.info("Checked the headers of %d image files in %.1f s", len(paths), time.perf_counter() - started)
        if unreadable:
            shown = "\n  ".join(reason for _, reason in unreadable[:5]) + ("\n  ..." if len(unreadable) > 5 else "")
            if self.missing_images == "error":
                raise UnreadableImagesError(
                    f"{len(unreadable)} of {len(paths)} image files cannot be read; fix or remove them, or set "
                    f"data.missing_images=drop to train on the readable ones:\n  {shown}"
                )
            log.warning("Dropping %d of %d rows whose image cannot be read (data.missing_images=drop):\n  %s",
                        len(unreadable), len(paths), shown)
            keep = np.ones(len(paths), dtype=bool)
            keep[[i for i, _ in unreadable]] = False
            table, split, paths = table.subset(keep), split[keep], [p for p, k in zip(paths, keep) if k]
        return table, split, paths

    def prepare(self) -> None:
        """Labels, split and image files of every row (missing images as data.missing_images says)."""
        if self.table is not None and self.paths:
            return
        table, split = self.labels_only(find_images=True)
        for name in SPLITS:
            n = int((split == name).sum())
            if n == 0:
                raise DataError(f"the {name} split has no images: check data.split and its list files / ratios")
        sizes = {name: int((split == name).sum()) for name in SPLITS}
        patients = {name: table.frame.loc[split == name, "patient_id"].nunique() for name in SPLITS}
        log.info("Split sizes (images): %s; patients: %s", sizes, patients)

    def _undersample_no_finding(self, table: LabelTable, split: np.ndarray) -> tuple[LabelTable, np.ndarray]:
        """Keep `no_finding_fraction` of the training split's normal images (`frame.no_finding`).

        One uniform draw per row of the whole table (seeded, in label-file order, before any image
        lookup), so the kept rows do not depend on which images are present.
        """
        if self.no_finding_fraction >= 1.0:
            return table, split
        normal = (split == "train") & table.frame["no_finding"].to_numpy(dtype=bool)  # (N,)
        drop = normal & (np.random.default_rng(self.seed).random(len(split)) >= self.no_finding_fraction)
        log.info(
            "Undersampling No Finding in train: the split has %d normal images of %d; keeping %d "
            "(data.no_finding_fraction=%s); validation and test untouched",
            int(normal.sum()), int((split == "train").sum()), int(normal.sum() - drop.sum()), self.no_finding_fraction,
        )
        if normal.sum() == 0:
            log.warning("data.no_finding_fraction=%s: the training split has no normal image, nothing to undersample",
                        self.no_finding_fraction)
        return table.subset(~drop), split[~drop]

    def save_split(self, path: Path) -> None:
        self.prepare()
        assert self.table is not None and self.split is not None
        save_split(path, self.table.frame, self.split)

    def split_frame(self, name: str) -> pd.DataFrame:
        """image_id and patient_id of one split, in dataset row order."""
        assert self.table is not None and self.split is not None
        return self.table.frame.loc[self.split == name, ["image_id", "patient_id"]].reset_index(drop=True)

    def image_paths(self, name: str) -> dict[str, Path]:
        """image_id -> image file of one split (after `prepare`)."""
        assert self.table is not None and self.split is not None and self.paths, "call prepare() first"
        rows = np.flatnonzero(self.split == name)
        return {str(self.table.frame["image_id"].iloc[i]): self.paths[i] for i in rows}

    def train_labels(self) -> np.ndarray:
        assert self.table is not None and self.split is not None
        return self.table.labels[self.split == "train"]  # (N_train, K)


def _check_folds(folds: int | None, fold: int | None) -> None:
    """data.folds / data.fold: both null, or K >= 2 and 0 <= fold < K."""
    if folds is None:
        if fold is not None:
            raise DataError(f"data.fold={fold} needs data.folds: set data.folds=K as well (e.g. data.folds=5 "
                            f"data.fold={fold}), or leave data.fold=null for the dataset's own train/val split")
        return
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise DataError(f"data.folds={folds!r} must be an integer >= 2 (e.g. data.folds=5), or null for no k-fold")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise DataError(f"data.fold={fold!r} must be an integer in 0..{folds - 1} with data.folds={folds}: e.g. "
                        f"data.fold=0, or sweep them all with -m data.fold={','.join(map(str, range(folds)))}")


def _first_existing(root: Path, names: Sequence[str], key: str) -> Path:
    for name in names:
        if (root / name).exists():
            return root / name
    raise DataError(f"none of {list(names)} found under data.root={str(root)!r}; set {key}=<path to the label file>")


class NIHData(ChestXData):
    """NIH ChestX-ray14 as NIH ships it (`Data_Entry_2017*.csv`, `images*/`)."""

    def __init__(
        self,
        root: str,
        csv: str | None = None,
        split: str = "official",
        split_dir: str | None = None,
        val_fraction: float = 0.1,
        ratios: Sequence[float] = (0.7, 0.1, 0.2),
        include_no_finding: bool = False,
        views: Sequence[str] | None = None,
        chexnet_labels: str = "csv",
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
        self.val_fraction = val_fraction
        self.ratios = tuple(ratios)
        self.include_no_finding = include_no_finding
        self.views = list(views) if views else None

    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        csv = Path(self.csv) if self.csv else _first_existing(
            self.root, ["Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv"], "data.csv"
        )
        table = read_nih(csv, NIH_PATHOLOGIES, include_no_finding=self.include_no_finding, views=self.views)
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
            split = random_split(table.frame, ratios=self.ratios, seed=self.seed)
        keep = split != ""
        if not keep.all():
            log.info("%d rows are in none of the split lists and are left out", int((~keep).sum()))
            table, split = table.subset(keep), split[keep]
        return table, split

    def resolve_paths(self, table: LabelTable) -> tuple[list[Path | None], list[str]]:
        ids = table.frame["image_id"].tolist()
        found, missing = find_nih_images(self.root, ids)
        return [found.get(i) for i in ids], missing


class CheXpertData(ChestXData):
    """CheXpert as Stanford ships it (`CheXpert-v1.0[-small]/train.csv`, `valid.csv`).

    `valid.csv` (radiologist consensus) is the test split; validation is carved out of
    `train.csv` by patient (`val_fraction`).
    """

    def __init__(
        self,
        root: str,
        uncertainty: str | dict = "ignore",
        blank: str = "zeros",
        frontal_only: bool = True,
        tasks: str | Sequence[str] = "competition",
        lsr_zeros: Sequence[float] = (0.0, 0.3),
        lsr_ones: Sequence[float] = (0.55, 0.85),
        val_fraction: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        self.uncertainty = uncertainty if isinstance(uncertainty, str) else dict(uncertainty)
        self.blank = blank
        self.frontal_only = frontal_only
        if isinstance(tasks, str):
            if tasks not in ("competition", "all"):
                raise DataError(f"data.tasks={tasks!r}: use 'competition', 'all' or a list of pathology names")
            tasks = CHEXPERT_COMPETITION_TASKS if tasks == "competition" else CHEXPERT_PATHOLOGIES
        self.tasks = list(tasks)
        self.lsr_zeros = tuple(lsr_zeros)
        self.lsr_ones = tuple(lsr_ones)
        self.val_fraction = val_fraction

    @property
    def uncertainty_policies(self) -> list[str]:
        """The uncertainty policy of each selected pathology (data.uncertainty resolved)."""
        return resolve_uncertainty(self.uncertainty, self.tasks)

    @property
    def multiclass(self) -> list[bool]:
        """True for the selected pathologies whose policy is `multiclass` (3-way output for those only)."""
        return [policy == "multiclass" for policy in self.uncertainty_policies]

    def _dataset_dir(self) -> Path:
        for name in ("CheXpert-v1.0-small", "CheXpert-v1.0", "."):
            if (self.root / name / "train.csv").exists():
                return (self.root / name).resolve()
        raise DataError(
            f"train.csv not found in data.root={str(self.root)!r} or its CheXpert-v1.0[-small]/ folder; "
            "point data.root at the folder that holds CheXpert-v1.0-small/"
        )

    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        folder = self._dataset_dir()
        options = dict(
            pathologies=self.tasks, uncertainty=self.uncertainty, blank=self.blank, frontal_only=self.frontal_only,
            lsr_zeros=self.lsr_zeros, lsr_ones=self.lsr_ones, seed=self.seed,
        )
        train = read_chexpert(folder / "train.csv", **options)
        test = read_chexpert(folder / "valid.csv", **options)
        inner = random_split(train.frame, ratios=(1.0 - self.val_fraction, self.val_fraction, 0.0), seed=self.seed)
        table = LabelTable.concat([train, test])
        split = np.concatenate([np.where(inner == "val", "val", "train"), np.full(len(test.frame), "test")])
        return table, split

    def resolve_paths(self, table: LabelTable) -> tuple[list[Path | None], list[str]]:
        folder = self._dataset_dir()
        paths: list[Path | None] = []
        missing: list[str] = []
        for rel in table.frame["path"]:
            parts = Path(rel).parts
            candidates = [folder.parent / rel, folder / Path(*parts[1:])] if len(parts) > 1 else [folder / rel]
            hit = next((c for c in candidates if c.exists()), None)
            paths.append(hit)
            if hit is None:
                missing.append(rel)
        return paths, missing
