"""`ChestXData`, the base of every dataset: a label file as configured -> labels, patient split, image files.

It does everything that is not dataset specific: find the label file(s) (`label_files`, `label_file`), the seeded
patient split (`make_split`, `carve_validation`), the view filter (`keep_views`, `view_mask`), patient-level k-fold
over the train+val pool (`folds`, `fold`), find the image files (`images`, `resolve_paths`; and stop, or drop with a
warning, when some are missing or unreadable), undersample normal images in the training split, check that splits
are patient-disjoint and save the split. A dataset (one module of `chestx.data.datasets` each) is its reader
(`load_table`: label file -> rows and split) and its declarations: `label_files` (role -> `LabelFile`) and `images`
(one of the finders of `chestx.data.datasets.image_finders`). No Lightning here: `chestx.data.loading.datamodule`
builds loaders.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from chestx.data.images.check import UnreadableImagesError, check_dicom_window, find_unreadable
from chestx.core.run_folder import UNREADABLE_FILE
from chestx.data.images.read import find_undecodable
from chestx.data.images.same_file import same_files
from chestx.data.datasets.image_finders import ImageFinder, UnderRoot
from chestx.data.errors import DataError, DataFileNotFoundError
from chestx.data.labels.splits import SPLITS, SplitError, check_patient_disjoint, kfold_split, random_split, save_split
from chestx.data.stratify import StratifyError, stratified_split, train_subset
from chestx.data.labels.table import LabelTable

log = logging.getLogger(__name__)

MISSING_POLICIES = ("error", "drop")
VERIFY_MODES = ("header", "decode")
WHOLE_LIST = (f"the whole list, each file with its reason, goes to {UNREADABLE_FILE} in the run folder (beside "
              f"split.csv; chestx.prepare: its own run folder)")
SPLIT_METHODS = ("random", "stratified")  # data.split_method (make_split)
UNUSED = "unused"  # split.csv value of the training rows left out by data.train_fraction (keep_train_fraction)


# keys a data config had before issue 24 -> where they went; conf/data_common.yaml keeps them null, so that an old
# command line (`data.tasks=all`) reaches this message instead of Hydra's "key not in struct"
RENAMED_KEYS: dict[str, str] = {
    "tasks": "data.findings", "pathologies": "data.findings",
    "labels": "data.findings (data=nih_expert: data.label_source)",
    "batch_size": "loader.batch_size", "eval_batch_size": "loader.eval_batch_size",
    "num_workers": "loader.num_workers", "pin_memory": "loader.pin_memory",
    "normalize_on_device": "loader.normalize_on_device",
}


def refuse_renamed(given: dict[str, object]) -> None:
    """Stop on a renamed key that is set (DataError naming the new key); an unknown key is a TypeError, as Python
    says of any unexpected argument."""
    unknown = sorted(set(given) - set(RENAMED_KEYS))
    if unknown:
        raise TypeError(f"unexpected data options {unknown}")
    used = {key: value for key, value in given.items() if value is not None}
    if used:
        raise DataError("; ".join(f"data.{key}={value!r} is now {RENAMED_KEYS[key]}: set that instead (e.g. "
                                  f"{RENAMED_KEYS[key].split(' ')[0]}={value!r})" for key, value in used.items()))


@dataclass(frozen=True)
class LabelFile:
    """One label file a dataset reads (`ChestXData.label_files` maps a role to it): unless `data.<key>` names it, the
    first of `names` found in data.root. `required=False`: read when present (e.g. RSNA's detailed classes)."""

    names: tuple[str, ...] = ()  # file names (or paths) relative to data.root, in order of preference
    key: str | None = "csv"      # the dataset option (data.<key>, an attribute of the dataset) that names the file
    required: bool = True


class ChestXData:
    """A dataset as configured: labels, patient split and image files (loader settings: `chestx.data.loading`).

    Plain Python (no Lightning): `chestx.explore`, `chestx.evaluate` and `chestx.prepare` use it
    as it is; `chestx.train` wraps it in `ChestXDataModule`. Subclasses read their label file(s) (`load_table`) and
    declare which files those are (`label_files`) and how their images are found (`images`).
    """

    # ------------------------------------------------------------ what a dataset declares
    # role -> LabelFile, the first role being the main label file (class attribute, or a property where the files
    # depend on an option: MIMIC's labeller, VinDr's layout, CheXpert's folder). `label_file(role)` finds one,
    # `label_paths()` all of them (what chestx.runs.card digests).
    label_files: Mapping[str, LabelFile] = {}
    root_hint: str = "the dataset folder"  # what data.root must hold, for messages
    # how resolve_paths finds the images: UnderRoot (frame.path under data.root), InFolders, ByIndex
    images: ImageFinder = UnderRoot()

    def __init__(
        self,
        root: str,
        image_size: int | None = None,
        normalization: str = "imagenet",
        augment: dict | None = None,
        missing_images: str = "error",
        no_finding_fraction: float = 1.0,
        seed: int = 0,
        cache: bool = False,
        cache_dir: str | None = None,
        norm_sample: int = 512,
        folds: int | None = None,
        fold: int | None = None,
        dicom_window: str = "voi",
        verify_images: str = "header",
        ratios: Sequence[float] = (0.7, 0.1, 0.2),
        val_fraction: float = 0.1,
        split_method: str = "random",
        train_fraction: float = 1.0,
        **renamed: object,
    ) -> None:
        refuse_renamed(renamed)
        if split_method not in SPLIT_METHODS:
            raise DataError(f"data.split_method={split_method!r} is not one of {list(SPLIT_METHODS)}: use "
                            "data.split_method=random (patients shuffled) or stratified (prevalence kept per split)")
        if not 0.0 < float(train_fraction) <= 1.0:
            raise DataError(f"data.train_fraction={train_fraction!r} must be in (0, 1], e.g. 0.01, 0.1 or 1.0 "
                            "(the share of training patients kept)")
        _check_folds(folds, fold)
        check_dicom_window(dicom_window)
        if verify_images not in VERIFY_MODES:
            raise DataError(f"data.verify_images={verify_images!r} is not one of {VERIFY_MODES} (header: read every "
                            "image's header at set-up; decode: decode every image at set-up)")
        if missing_images not in MISSING_POLICIES:
            raise DataError(f"data.missing_images={missing_images!r} is not one of {MISSING_POLICIES}")
        if not 0.0 < no_finding_fraction <= 1.0:
            raise DataError(f"data.no_finding_fraction={no_finding_fraction} must be in (0, 1]")
        self.root = Path(root).expanduser()
        self.image_size = image_size  # None: the backbone's native size (chestx.train resolves it)
        self.normalization = normalization
        self.augment = dict(augment or {})
        self.missing_images = missing_images
        self.verify_images = verify_images  # header | decode: what the set-up check reads of every image
        self.no_finding_fraction = no_finding_fraction
        self.seed = seed
        self.cache = cache
        self.cache_dir = cache_dir
        self.norm_sample = norm_sample
        self.folds = folds  # None, or K: patient-level K-fold over the train+val pool, `fold` validates
        self.fold = fold
        self.ratios = tuple(float(r) for r in ratios)  # split(): train / val / test fractions of patients
        self.val_fraction = float(val_fraction)  # carve_validation(): validation's share of a training file
        self.split_method = split_method  # make_split(): random | stratified (chestx.data.stratify)
        self.train_fraction = float(train_fraction)  # keep_train_fraction(): share of training patients kept
        self.label_path: Path | None = None  # the main label file in use, once found (label_file)
        self._image_index: dict[str, Path] | None = None  # ByIndex finders: built once (image_index)
        self.dicom_window = dicom_window  # voi | minmax: how DICOM values become 0..255 (chestx.data.images.dicom)
        self.table: LabelTable | None = None
        self.split: np.ndarray | None = None  # (N,) "train"/"val"/"test"
        self.paths: list[Path] = []  # (N,) image files, once looked up
        self.dropped: list[tuple[str, str, str]] = []  # image_id, file, reason of every row missing_images=drop drops

    # ------------------------------------------------------------ the chores, done once for every dataset
    def label_file(self, role: str | None = None) -> Path | None:
        """The file of `label_files[role]` (default: the first role): `data.<key>` when set, relative to data.root
        when the file is there, else as written (absolute, or relative to the working folder; a file that is in
        neither place is named under data.root); unset: the first of its `names` in data.root. Not found ->
        DataFileNotFoundError naming the files looked for, data.root and the key; None for an optional file that is
        absent (or unset when it has no names). The main file is kept as `label_path` (for messages)."""
        if not self.label_files:
            raise NotImplementedError(f"{type(self).__name__} declares no label_files")
        role = next(iter(self.label_files)) if role is None else role
        spec = self.label_files[role]
        given = getattr(self, spec.key, None) if spec.key else None
        what = type(self).__name__.removesuffix("Data")
        if given:
            path = self.under_root(given)
        elif spec.names:
            try:
                path = first_existing(self.root, spec.names, f"data.{spec.key}" if spec.key else None,
                                      what, self.root_hint)
            except DataFileNotFoundError:
                if spec.required:
                    raise
                path = None
        elif spec.required:
            raise DataFileNotFoundError(f"{what}: set data.{spec.key}=<path to the {role} file>")
        else:
            path = None
        if role == next(iter(self.label_files)):
            self.label_path = path
        return path

    def label_paths(self) -> dict[str, Path]:
        """role -> file of every label file this dataset reads as configured (optional ones only when present), in
        declaration order: what a run used (`chestx.runs.card` digests them)."""
        paths = {role: self.label_file(role) for role in self.label_files}
        return {role: path for role, path in paths.items() if path is not None}

    def under_root(self, given: str | Path) -> Path:
        """A path the user gave: relative to data.root when the file is there, else as written when it is there,
        else under data.root (so that the message names data.root); absolute as written, `~` expanded."""
        path = Path(given).expanduser()
        if path.is_absolute() or (self.root / path).is_file() or not path.is_file():
            return self.root / path
        return path

    def make_split(self, table: LabelTable, ratios: Sequence[float] | None = None) -> np.ndarray:
        """THE split step of every dataset without an official split: seeded patient-level split (N,) of `table` by
        `ratios` (default data.ratios: train / val / test fractions of patients, seeded by data.seed).

        data.split_method: `random` (patients shuffled, `chestx.data.labels.splits.random_split`) or `stratified`
        (patients split by iterative stratification over their multi-label vector, `chestx.data.stratify`).
        Every dataset's random split, and the validation carved out of a training file (`carve_validation`), goes
        through here. A split that cannot be made (too few patients for a ratio) -> DataError naming the option."""
        ratios = tuple(float(r) for r in (self.ratios if ratios is None else ratios))
        try:
            if self.split_method == "stratified":
                return stratified_split(table.frame["patient_id"].to_numpy(), table.labels, ratios=ratios,
                                        seed=self.seed)
            return random_split(table.frame, ratios=ratios, seed=self.seed)
        except (SplitError, StratifyError) as error:
            where = f" of {str(self.label_path)!r}" if self.label_path is not None else ""
            raise DataError(f"data.ratios={list(ratios)} (data.split_method={self.split_method}, data.seed="
                            f"{self.seed}) on the {len(table)} rows{where}: {error}") from error

    def keep_train_fraction(self, table: LabelTable, split: np.ndarray) -> np.ndarray:
        """data.train_fraction < 1: the training rows outside the nested, stratified subset of training *patients*
        (`chestx.data.stratify.train_subset`, seeded by data.seed) become `UNUSED` ("unused"); validation and test
        are untouched. The rows stay in the table, so split.csv records which training patients were left out.
        Works on the final training split of every dataset (official, random, stratified or k-fold)."""
        if self.train_fraction >= 1.0:
            return split
        try:
            kept = train_subset(table.frame["patient_id"].to_numpy(), table.labels, split, self.train_fraction,
                                seed=self.seed)  # (N,) bool
        except StratifyError as error:
            raise DataError(f"data.train_fraction={self.train_fraction} (data.seed={self.seed}): {error}") from error
        train = split == "train"
        log.info("data.train_fraction=%s: keeping %d of %d training patients, %d of %d training images "
                 "(the rest marked %r in split.csv; val/test untouched)", self.train_fraction,
                 table.frame.loc[kept, "patient_id"].nunique(), table.frame.loc[train, "patient_id"].nunique(),
                 int(kept.sum()), int(train.sum()), UNUSED)
        return np.where(train & ~kept, UNUSED, split)  # (N,)

    def carve_validation(self, train: LabelTable, test: LabelTable) -> tuple[LabelTable, np.ndarray]:
        """A dataset whose test set is a file of its own: validation is data.val_fraction of the training file's
        patients (`make_split`), the test file stays apart and whole. Returns the stacked table (train rows, then test
        rows) and its split; no training row is ever marked test."""
        inner = self.make_split(train, ratios=(1.0 - self.val_fraction, self.val_fraction, 0.0))  # (N_train,)
        split = np.concatenate([np.where(inner == "val", "val", "train"), np.full(len(test), "test")]).astype("<U5")
        return LabelTable.concat([train, test]), split

    def keep_views(self, table: LabelTable, views: Sequence[str] | str | None, column: str = "view",
                   unknown: str = "leave_out", fix: str = "", what: str | None = None) -> LabelTable:
        """Rows of `table` whose `frame.view` is one of `views` (`view_mask`: the one blank-view rule, or
        `unknown="error"`); None keeps every row."""
        if views is None:
            return table
        keep = view_mask(table.frame["view"], views, what or type(self).__name__.removesuffix("Data"), column=column,
                         unknown=unknown, fix=fix)
        return table if keep.all() else table.subset(keep)

    def resolve_paths(self, table: LabelTable) -> tuple[list[Path | None], list[str]]:
        """Image file of every row (None when missing), and the missing rows' names: what `images` finds."""
        paths, missing = self.images.find(self, table)
        log.info("%s: found %d of %d image files under data.root=%s (%d missing)",
                 type(self).__name__.removesuffix("Data"), len(paths) - len(missing), len(paths), self.root,
                 len(missing))
        return paths, missing

    def image_index(self) -> dict[str, Path]:
        """image_id -> file, built once by a `ByIndex` finder's `build` (and kept for the dataset's life)."""
        if self._image_index is None:
            build = getattr(self.images, "build", None)
            if build is None:
                raise TypeError(f"{type(self).__name__}.images={self.images!r} builds no index (ByIndex does)")
            self._image_index = build(self)
        return self._image_index

    # ------------------------------------------------------------ subclass API
    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        """Read labels and assign each row to a split."""
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
        split = self.keep_train_fraction(table, split)
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
        DICOM pixel data and decoder; chestx.data.images.check) stop the run or are dropped (data.missing_images)."""
        self.dropped = []
        paths, missing = self.resolve_paths(table)
        if self.distinct_images:
            self._refuse_same_file(table, paths)
        if missing:
            shown = ", ".join(missing[:5])
            if self.missing_images == "error":
                raise DataError(
                    f"{len(missing)} of {len(paths)} images listed in the label file were not found under "
                    f"data.root={str(self.root)!r} (first: {shown}); fix data.root, or set "
                    "data.missing_images=drop to train on the images that are present"
                )
            keep = np.array([p is not None for p in paths])
            ids = table.frame["image_id"].astype(str).to_numpy()[~keep]
            texts = table.frame["path"].astype(str).to_numpy()[~keep] if "path" in table.frame else ids
            self.dropped += [(str(i), str(t), f"not found under data.root={str(self.root)!r}")
                             for i, t in zip(ids, texts)]
            log.warning("Dropping %d of %d rows whose image is missing (data.missing_images=drop; first: %s); %s",
                        len(missing), len(paths), shown, WHOLE_LIST)
            table, split, paths = table.subset(keep), split[keep], [p for p in paths if p is not None]
        paths = [Path(p) for p in paths]
        started = time.perf_counter()
        unreadable = find_unreadable(paths)  # header checks: no pixel is decoded here
        log.info("Checked the headers of %d image files in %.1f s", len(paths), time.perf_counter() - started)
        if self.verify_images == "decode":  # a valid header over corrupt pixel data: only a decode finds it
            started, bad = time.perf_counter(), {i for i, _ in unreadable}
            rest = [i for i in range(len(paths)) if i not in bad]
            failed = find_undecodable([paths[i] for i in rest], self.dicom_window)
            unreadable = sorted(unreadable + [(rest[k], reason) for k, reason in failed])
            log.info("Decoded %d image files in %.1f s (data.verify_images=decode): %d failed", len(rest),
                     time.perf_counter() - started, len(failed))
        if unreadable:
            shown = "\n  ".join(reason for _, reason in unreadable[:5]) + ("\n  ..." if len(unreadable) > 5 else "")
            if self.missing_images == "error":  # every file named: this is the list to fix
                everything = "\n  ".join(reason for _, reason in unreadable)
                raise UnreadableImagesError(
                    f"{len(unreadable)} of {len(paths)} image files cannot be read; fix or remove them, or set "
                    f"data.missing_images=drop to train on the readable ones:\n  {everything}"
                )
            ids = table.frame["image_id"].astype(str)
            self.dropped += [(str(ids.iloc[i]), str(paths[i]), reason) for i, reason in unreadable]
            log.warning("Dropping %d of %d rows whose image cannot be read (data.missing_images=drop):\n  %s\n%s",
                        len(unreadable), len(paths), shown, WHOLE_LIST)
            keep = np.ones(len(paths), dtype=bool)
            keep[[i for i, _ in unreadable]] = False
            table, split, paths = table.subset(keep), split[keep], [p for p, k in zip(paths, keep) if k]
        return table, split, paths

    # every row is its own X-ray (a file named twice is refused); chestx.throughput's BenchData repeats files on purpose
    distinct_images: bool = True

    def _refuse_same_file(self, table: LabelTable, paths: Sequence[Path | None]) -> None:
        """DataError when two rows' image files are one file (symlinks, `..`, absolute vs relative resolved): one
        X-ray must not count twice, nor land in train and in test. Every dataset, whatever builds its paths."""
        pairs = same_files(paths, self.root)
        if pairs:
            i, j, real = pairs[0]
            ids = table.frame["image_id"].astype(str)
            raise DataError(
                f"{type(self).__name__.removesuffix('Data')}: {len(pairs)} rows name an image file that an earlier "
                f"row already names, e.g. row {i} (image {ids.iloc[i]!r}, {str(paths[i])!r}) and row {j} (image "
                f"{ids.iloc[j]!r}, {str(paths[j])!r}) are both {real!r}; list each image once in the label file "
                f"under data.root={str(self.root)!r} (remove the duplicate row or the symlink)"
            )

    def drop_undecodable(self, failed: Sequence[tuple[int, str]], where: str) -> None:
        """Rows (of `self.paths`, after prepare) whose image failed to decode in `where` (e.g. the pixel cache), with
        their reasons: data.missing_images=error stops naming every one; drop drops them and lists them (dropped)."""
        assert self.table is not None and self.split is not None
        failed = sorted(failed)
        everything = "\n  ".join(reason for _, reason in failed)
        if self.missing_images == "error":
            raise UnreadableImagesError(
                f"{len(failed)} of {len(self.paths)} image files passed the header check but failed to decode "
                f"({where}); fix or remove them, or set data.missing_images=drop to train on the others:"
                f"\n  {everything}")
        ids = self.table.frame["image_id"].astype(str)
        self.dropped += [(str(ids.iloc[i]), str(self.paths[i]), reason) for i, reason in failed]
        keep = np.ones(len(self.paths), dtype=bool)
        keep[[i for i, _ in failed]] = False
        self.table, self.split = self.table.subset(keep), self.split[keep]
        self.paths = [p for p, k in zip(self.paths, keep) if k]
        shown = "\n  ".join(reason for _, reason in failed[:5]) + ("\n  ..." if len(failed) > 5 else "")
        log.warning("Dropping %d of %d rows whose image failed to decode (%s; data.missing_images=drop):\n  %s\n%s",
                    len(failed), len(keep), where, shown, WHOLE_LIST)
        check_patient_disjoint(self.table.frame["patient_id"].to_numpy(), self.split)

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
        """split.csv at `path`; beside it unreadable.csv when data.missing_images=drop dropped rows."""
        self.prepare()
        assert self.table is not None and self.split is not None
        save_split(path, self.table.frame, self.split)
        self.save_unreadable(Path(path).parent)

    def save_unreadable(self, folder: Path) -> Path | None:
        """<folder>/unreadable.csv (UNREADABLE_FILE): image_id, path, reason of every row that data.missing_images=drop
        dropped (missing or unreadable image), all of them; None (no file) when none was dropped."""
        if not self.dropped:
            return None
        out = Path(folder) / UNREADABLE_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(self.dropped, columns=["image_id", "path", "reason"]).to_csv(out, index=False)
        log.warning("The %d dropped rows (data.missing_images=drop), each with its reason: %s", len(self.dropped), out)
        return out

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


def first_existing(root: Path, names: Sequence[str], key: str | None, what: str = "",
                   root_hint: str = "the dataset folder") -> Path:
    """The first of `names` present in `root` (a file); DataFileNotFoundError naming them, the root and the key (the
    option that names the file instead; None: the file is found in data.root only)."""
    for name in names:
        if (Path(root) / name).is_file():
            return Path(root) / name
    fix = f" or set {key}=<path to the label file>" if key else ""
    raise DataFileNotFoundError(f"{what + ': ' if what else ''}none of the label files {list(names)} is in "
                                f"data.root={str(root)!r}; point data.root at {root_hint}{fix}")


VIEW_RULES = ("leave_out", "error")  # view_mask(unknown=...)


def view_mask(view: pd.Series, views: Sequence[str] | str, what: str, column: str = "view",
              unknown: str = "leave_out", fix: str = "", option: str | None = None) -> np.ndarray:
    """(N,) bool: rows whose view is one of `views`, compared stripped and upper-cased; THE view filter of every
    dataset (`ChestXData.keep_views`, and the readers' `views` arguments).

    The one rule for blank views (`unknown="leave_out"`): a row whose view is blank or missing is not known to be any
    view, so a view filter never keeps it; how many such rows were left out is logged (naming `column`, the file's
    view column). `unknown="error"` (RSNA / SIIM, whose views come from the images' DICOM headers): a blank view
    stops with a DataError (`fix` says how to give it), so the rows kept never depend on which files exist. Views
    asked for that no row has are logged; no row kept -> DataError naming `option` (default data.views=...) and the
    views present."""
    if unknown not in VIEW_RULES:
        raise ValueError(f"unknown={unknown!r} is not one of {VIEW_RULES}")
    wanted = [str(v).strip().upper() for v in ([views] if isinstance(views, str) else views)]
    option = option or f"data.views={wanted}"
    text = view.astype("string").str.strip().str.upper()
    blank = (text.isna() | (text == "")).to_numpy()
    if unknown == "error" and blank.any():
        raise DataError(f"{option} needs the view of every {what} image, but {int(blank.sum())} have no "
                        f"{column}{fix}, or set data.views=null")
    keep = text.isin(wanted).fillna(False).to_numpy(dtype=bool) & ~blank
    present = sorted(set(text[~blank]))
    absent = [v for v in wanted if v not in present]
    if absent:
        log.warning("%s: views %s occur in no row (views present: %s)", what, absent, present)
    if not keep.any():
        raise DataError(f"{option} keeps no row of {what}; views present: {present}")
    if blank.any():
        log.warning("%s view filter %s leaves out %d rows with a blank %s (their view is unknown, so it cannot "
                    "match)", what, wanted, int(blank.sum()), column)
    log.info("%s view filter %s keeps %d of %d rows", what, wanted, int(keep.sum()), len(keep))
    return keep
