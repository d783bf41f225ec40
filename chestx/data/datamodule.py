"""LightningDataModules for NIH ChestX-ray14 and CheXpert.

`ChestXDataModule` does everything that is not dataset specific: resolve image files (and stop,
or drop with a warning, when some are missing), undersample `No Finding` in the training split,
compute dataset normalisation, check that splits are patient-disjoint, save the split, and build
loaders. Subclasses only say how to read the label file and which rows go to which split.
"""
from __future__ import annotations

import logging
from abc import abstractmethod
from pathlib import Path
from typing import Sequence

import lightning.pytorch as L
import numpy as np
import pandas as pd
from torch.utils.data import DataLoader

from chestx.data.chexpert import read_chexpert, resolve_uncertainty
from chestx.data.dataset import FileSource, PixelSource, XrayDataset
from chestx.data.images import load_grayscale, resize_square
from chestx.data.labels import (
    CHEXPERT_COMPETITION_TASKS, CHEXPERT_PATHOLOGIES, NIH_PATHOLOGIES, DataError, LabelTable, evaluation_targets,
)
from chestx.data.nih import find_nih_images, read_list_labels, read_nih, with_list_labels
from chestx.data.splits import SPLITS, check_patient_disjoint, list_split, official_split, random_split, save_split
from chestx.data.transforms import build_transform, compute_mean_std

log = logging.getLogger(__name__)

MISSING_POLICIES = ("error", "drop")
# data.chexnet_labels: where data.split=chexnet takes its 14 labels from
CHEXNET_LABEL_SOURCES = ("lists", "csv")


def worker_init(worker_id: int) -> None:
    """Seed the worker as Lightning does, and keep each loader process to one decode/compute thread.

    Workers already run in parallel; OpenCV's and torch's own thread pools inside each of them
    only oversubscribe the cores (measured: several-fold slower training on 2 cores).
    """
    import cv2
    import torch
    from lightning.fabric.utilities.seed import pl_worker_init_function

    pl_worker_init_function(worker_id)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    # each worker continues the augmentation from its own seed, derived from the run's seed by torch
    info = torch.utils.data.get_worker_info()
    transform = getattr(getattr(info, "dataset", None), "transform", None)
    if hasattr(transform, "reseed"):
        transform.reseed(torch.initial_seed() % 2**32)


class ChestXDataModule(L.LightningDataModule):
    """Shared machinery: files, splits, normalisation, loaders."""

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        in_chans: int = 3,
        normalization: str = "imagenet",
        augment: dict | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        missing_images: str = "error",
        no_finding_fraction: float = 1.0,
        seed: int = 0,
        cache: bool = False,
        cache_dir: str | None = None,
        norm_sample: int = 512,
    ) -> None:
        super().__init__()
        if missing_images not in MISSING_POLICIES:
            raise DataError(f"data.missing_images={missing_images!r} is not one of {MISSING_POLICIES}")
        if not 0.0 < no_finding_fraction <= 1.0:
            raise DataError(f"data.no_finding_fraction={no_finding_fraction} must be in (0, 1]")
        self.root = Path(root).expanduser()
        self.image_size = image_size
        self.in_chans = in_chans
        self.normalization = normalization
        self.augment = dict(augment or {})
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.missing_images = missing_images
        self.no_finding_fraction = no_finding_fraction
        self.seed = seed
        self.cache = cache
        self.cache_dir = cache_dir
        self.norm_sample = norm_sample
        self.table: LabelTable | None = None
        self.split: np.ndarray | None = None  # (N,) "train"/"val"/"test"
        self.paths: list[Path] = []
        self.mean: tuple[float, ...] | None = None
        self.std: tuple[float, ...] | None = None
        self.datasets: dict[str, XrayDataset] = {}

    # ------------------------------------------------------------ subclass API
    @abstractmethod
    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        """Read labels and assign each row to a split."""

    @abstractmethod
    def resolve_paths(self, table: LabelTable) -> tuple[list[Path | None], list[str]]:
        """Image file of every row (None when missing), and the missing image ids."""

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

    def _drop_missing(self, table: LabelTable, split: np.ndarray) -> tuple[LabelTable, np.ndarray, list[Path]]:
        """Image file of every row; missing ones stop the run or are dropped (data.missing_images)."""
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
        return table, split, [Path(p) for p in paths]

    def _prepare_table(self) -> None:
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

    def _pixels(self, rows: np.ndarray) -> PixelSource:
        if self.cache:  # one cache for every row of the dataset, built once, shared by the three splits
            from chestx.data.cache import cached_pixels

            if getattr(self, "_pixel_cache", None) is None:
                self._pixel_cache = cached_pixels(self.paths, self.image_size, cache_dir=self.cache_dir, root=self.root)
            return self._pixel_cache.subset(rows)
        return FileSource([self.paths[i] for i in rows])

    def _normalisation_stats(self, train_rows: np.ndarray) -> None:
        if self.normalization != "dataset" or self.mean is not None:
            return
        rng = np.random.default_rng(self.seed)
        picked = rng.choice(train_rows, size=min(self.norm_sample, len(train_rows)), replace=False)
        images = (resize_square(load_grayscale(self.paths[i]), self.image_size) for i in picked)
        mean, std = compute_mean_std(images)
        self.mean, self.std = (mean,) * self.in_chans, (std,) * self.in_chans
        log.info("Dataset normalisation from %d training images: mean=%.4f std=%.4f", len(picked), mean, std)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._prepare_table()
        assert self.table is not None and self.split is not None
        self._normalisation_stats(np.flatnonzero(self.split == "train"))
        eval_targets = evaluation_targets(self.table.labels, self.table.uncertain)  # (N, K)
        for name in SPLITS:
            rows = np.flatnonzero(self.split == name)
            transform = build_transform(
                self.image_size, train=name == "train", in_chans=self.in_chans,
                normalization=self.normalization, mean=self.mean, std=self.std, seed=self.seed, **self.augment,
            )
            self.datasets[name] = XrayDataset(
                self._pixels(rows), self.table.labels[rows], eval_targets[rows], self.table.uncertain[rows], transform
            )

    def save_split(self, path: Path) -> None:
        self._prepare_table()
        assert self.table is not None and self.split is not None
        save_split(path, self.table.frame, self.split)

    def split_frame(self, name: str) -> pd.DataFrame:
        """image_id and patient_id of one split, in dataset row order."""
        assert self.table is not None and self.split is not None
        return self.table.frame.loc[self.split == name, ["image_id", "patient_id"]].reset_index(drop=True)

    def train_labels(self) -> np.ndarray:
        assert self.table is not None and self.split is not None
        return self.table.labels[self.split == "train"]  # (N_train, K)

    # -------------------------------------------------------------- loaders
    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(
            self.datasets[name],
            batch_size=self.batch_size if name == "train" else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=worker_init if self.num_workers > 0 else None,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def _first_existing(root: Path, names: Sequence[str], key: str) -> Path:
    for name in names:
        if (root / name).exists():
            return root / name
    raise DataError(f"none of {list(names)} found under data.root={str(root)!r}; set {key}=<path to the label file>")


class NIHDataModule(ChestXDataModule):
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
        chexnet_labels: str = "lists",
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


class CheXpertDataModule(ChestXDataModule):
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
