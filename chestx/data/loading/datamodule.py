"""The Lightning side of the data: a `ChestXData` (labels, split, files) -> datasets and loaders.

`ChestXDataModule` decodes (or reads from the resize cache) the images of each split, applies the
transforms (augmentation in training only), computes dataset normalisation when asked, and builds
the DataLoaders with seeded, single-threaded workers. With `loader.normalize_on_device` (default)
the workers hand over uint8 (B, 1, S, S) batches (12x fewer bytes to the GPU than float32 x 3
channels) and `on_after_batch_transfer` finishes them on the device; the training loader is a `ResumableDataLoader` (resumes in the middle of an epoch).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from chestx.data.loading.dataset import FileSource, PixelSource, XrayDataset
from chestx.data.images.read import load_grayscale, resize_square
from chestx.data.labels.table import evaluation_targets
from chestx.data.loading.sampling import EpochSampler, ResumableDataLoader
from chestx.data.datasets.base import ChestXData
from chestx.data.labels.splits import SPLITS
from chestx.data.loading.transforms import InputNormalizer, build_input_normalizer, build_transform, compute_mean_std

log = logging.getLogger(__name__)



def worker_init(worker_id: int) -> None:
    """Seed the worker as Lightning does, and keep each loader process to one decode/compute thread.

    Workers already run in parallel; OpenCV's and torch's own thread pools inside each of them
    only oversubscribe the cores (measured: several-fold slower training on 2 cores).
    """
    import cv2
    import torch
    from lightning.fabric.utilities.seed import pl_worker_init_function

    pl_worker_init_function(worker_id)  # (augmentation is seeded per image: chestx.data.loading.sampling)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# OpenCV's thread count before each fork of this process (a DataLoader worker), restored after it
_cv2_threads_at_fork: list[int] = []


def _stop_opencv_threads_before_fork() -> None:
    """Join OpenCV's pool threads before this process forks, so that the child inherits no pool.

    OpenCV (pthreads backend) parks its pool threads in pthread_cond_wait. A forked child gets the
    pool's bookkeeping but none of its threads; when the child resizes the pool (`cv2.setNumThreads`
    in `worker_init`), OpenCV destroys a condition variable that still counts the parent's parked
    thread as a waiter, and glibc's pthread_cond_destroy waits for that waiter forever: the loader
    worker hangs in a futex and training stalls without an error. It happens whenever the forking
    process ran OpenCV in parallel itself before: augmentation in the main process (num_workers=0
    runs earlier in the same pytest worker) or a large cv2.resize (Grad-CAM at 512 px, then the next
    job of a multirun); a fresh `python -m chestx.train` leaves all image work to its workers.
    Stopping the threads here, in the parent where they exist, is safe; `after_in_parent` gives the
    parent its thread count back (OpenCV restarts its threads at its next parallel call).
    """
    cv2 = sys.modules.get("cv2")
    if cv2 is None:  # OpenCV not loaded: no pool to leave behind
        return
    _cv2_threads_at_fork.append(cv2.getNumThreads())
    cv2.setNumThreads(1)  # OpenCV stops and joins its pool threads now


def _restore_opencv_threads_after_fork(in_parent: bool) -> None:
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and _cv2_threads_at_fork:
        threads = _cv2_threads_at_fork.pop()
        if in_parent:
            cv2.setNumThreads(threads)


os.register_at_fork(
    before=_stop_opencv_threads_before_fork,
    after_in_parent=lambda: _restore_opencv_threads_after_fork(True),
    after_in_child=lambda: _restore_opencv_threads_after_fork(False),  # the worker keeps one thread
)


@dataclass(frozen=True)
class LoaderOptions:
    """The `loader` config group (conf/loader/default.yaml): how the datamodule batches and feeds the data.

    `num_workers` / `pin_memory` None: chestx.train fills them from the hardware (`chestx.core.hardware`) before
    this is built; the datamodule takes resolved values. `eval_batch_size` None: `batch_size`.
    `persistent_workers` None: True when there are workers; `prefetch_factor` None: PyTorch's default (2)."""

    batch_size: int = 16
    eval_batch_size: int | None = None
    num_workers: int | None = 0
    pin_memory: bool | None = False
    normalize_on_device: bool = True  # workers hand over uint8 (B, 1, S, S); the module normalises on the device
    persistent_workers: bool | None = None
    prefetch_factor: int | None = None

    def __post_init__(self) -> None:
        for key in ("batch_size", "eval_batch_size", "prefetch_factor"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"loader.{key}={value!r} must be a positive integer" +
                                 ("" if key == "batch_size" else ", or null"))

    @property
    def eval_batch(self) -> int:
        """Images per validation / test batch (`eval_batch_size`, else `batch_size`)."""
        return self.eval_batch_size or self.batch_size


class ChestXDataModule(L.LightningDataModule):
    """Datasets and loaders of the three splits of `data`, at `image_size` with `in_chans` channels, batched as
    `loader` says (default: `LoaderOptions()`)."""

    def __init__(self, data: ChestXData, image_size: int, in_chans: int = 3,
                 loader: LoaderOptions | None = None) -> None:
        super().__init__()
        self.data = data
        self.image_size = int(image_size)
        self.in_chans = in_chans
        self.normalization = data.normalization
        self.loader = loader or LoaderOptions()
        self.batch_size = self.loader.batch_size
        self.eval_batch_size = self.loader.eval_batch
        self.num_workers = self.loader.num_workers
        self.pin_memory = self.loader.pin_memory
        self.normalize_on_device = self.loader.normalize_on_device
        self.mean: tuple[float, ...] | None = None
        self.std: tuple[float, ...] | None = None
        self.datasets: dict[str, XrayDataset] = {}
        self._pixel_cache = None
        self._normalizer: InputNormalizer | None = None  # built at the first uint8 batch, on its device

    def _pixels(self, rows: np.ndarray) -> PixelSource:
        paths = self.data.paths
        if self.data.cache:  # one cache for every row of the dataset, built once, shared by the three splits
            from chestx.data.images.cache import cached_pixels

            if self._pixel_cache is None:
                self._pixel_cache = cached_pixels(paths, self.image_size, cache_dir=self.data.cache_dir,
                                                  root=self.data.root, dicom_window=self.data.dicom_window)
            return self._pixel_cache.subset(rows)
        return FileSource([paths[i] for i in rows], dicom_window=self.data.dicom_window)

    def _build_cache(self) -> None:
        """The pixel cache of every row; files that fail to decode go to data.missing_images (drop: dropped, listed
        in `data.dropped` / unreadable.csv, and the cache is built of the rest; error: a DataError naming all)."""
        from chestx.data.images.cache import UndecodableImagesError, cached_pixels

        def build() -> None:
            self._pixel_cache = cached_pixels(self.data.paths, self.image_size, cache_dir=self.data.cache_dir,
                                              root=self.data.root, dicom_window=self.data.dicom_window)
        try:
            build()
        except UndecodableImagesError as error:
            self.data.drop_undecodable(error.failed, "building the pixel cache, data.cache=true")
            build()  # the rest: a cache of its own (its key is the file list), decoded afresh

    def _normalisation_stats(self, train_rows: np.ndarray) -> None:
        if self.normalization != "dataset" or self.mean is not None:
            return
        rng = np.random.default_rng(self.data.seed)
        picked = rng.choice(train_rows, size=min(self.data.norm_sample, len(train_rows)), replace=False)
        images = (resize_square(load_grayscale(self.data.paths[i], dicom_window=self.data.dicom_window),
                                self.image_size) for i in picked)
        mean, std = compute_mean_std(images)
        self.mean, self.std = (mean,) * self.in_chans, (std,) * self.in_chans
        log.info("Dataset normalisation from %d training images: mean=%.4f std=%.4f", len(picked), mean, std)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.data.prepare()
        if self.data.cache:  # before the splits' rows are taken: files failing to decode may be dropped here
            self._build_cache()
        table, split = self.data.table, self.data.split
        assert table is not None and split is not None
        self._normalisation_stats(np.flatnonzero(split == "train"))
        eval_targets = evaluation_targets(table.labels, table.uncertain)  # (N, K)
        for name in SPLITS:
            rows = np.flatnonzero(split == name)
            transform = build_transform(
                self.image_size, train=name == "train", in_chans=self.in_chans, normalization=self.normalization,
                mean=self.mean, std=self.std, seed=self.data.seed, normalize=not self.normalize_on_device,
                **self.data.augment,
            )
            self.datasets[name] = XrayDataset(
                self._pixels(rows), table.labels[rows], eval_targets[rows], table.uncertain[rows], transform,
                seed=self.data.seed,
            )

    def input_normalizer(self) -> InputNormalizer | None:
        """What turns this datamodule's uint8 batches into model input on the device (None: loaders normalise)."""
        if not self.normalize_on_device:
            return None
        self.setup()  # dataset normalisation statistics come from the training split
        return build_input_normalizer(self.in_chans, self.normalization, self.mean, self.std)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 (B, 1, S, S) pixels -> float32 (B, C, S, S) model input, on the device the batch was moved to."""
        if isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor) and batch["image"].dtype == torch.uint8:
            if self._normalizer is None:
                self._normalizer = build_input_normalizer(self.in_chans, self.normalization, self.mean, self.std)
            self._normalizer = self._normalizer.to(batch["image"].device)  # no-op once it is there
            batch = {**batch, "image": self._normalizer(batch["image"])}
        return batch

    # -------------------------------------------------------------- loaders
    def _loader_options(self) -> dict:
        if self.num_workers is None or self.pin_memory is None:
            raise ValueError(
                f"loader.num_workers={self.num_workers} / loader.pin_memory={self.pin_memory}: the datamodule takes "
                "resolved numbers; set them, or let chestx.train fill them from the hardware "
                "(chestx.core.hardware.resolve_device_defaults)")
        workers = int(self.num_workers)
        persistent = self.loader.persistent_workers
        options = {"num_workers": workers, "pin_memory": bool(self.pin_memory),
                   "persistent_workers": workers > 0 if persistent is None else bool(persistent) and workers > 0,
                   "worker_init_fn": worker_init if workers > 0 else None, "drop_last": False}
        if self.loader.prefetch_factor is not None and workers > 0:
            options["prefetch_factor"] = self.loader.prefetch_factor
        return options

    def train_dataloader(self) -> DataLoader:
        """Shuffled by (seed, epoch), this process's share under DDP, resumable mid-epoch (`EpochSampler`)."""
        self.setup()
        trainer = self.trainer
        sampler = EpochSampler(self.datasets["train"], seed=self.data.seed,
                               num_replicas=trainer.world_size if trainer else 1,
                               rank=trainer.global_rank if trainer else 0)
        if trainer is not None:
            sampler.set_epoch(trainer.current_epoch)

        def batches_done() -> int:  # batches of the current epoch the model has trained on (for checkpoints)
            return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed) if trainer else 0

        return ResumableDataLoader(self.datasets["train"], batch_size=self.batch_size, sampler=sampler,
                                   batches_done=batches_done, **self._loader_options())

    def _eval_loader(self, name: str) -> DataLoader:
        self.setup()
        return DataLoader(self.datasets[name], batch_size=self.eval_batch_size, shuffle=False,
                          **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
