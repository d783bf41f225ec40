"""`chestx.perf parts=[scale]`: the full NIH workload simulated on the embedded sample, measured.

`build_nih_tree` lays out 112,120 files under the real NIH names in NIH's own archive layout
(`images_001/images/` ... `images_012/images/`, 4,999 / 10,000 x 10 / 7,121 files), each a hard
link to one of the 621 embedded sample images (256 px, so decoding is cheaper than from NIH's
1024 px originals: the `loader` part measures those), beside the real full label file and
official split lists. On it `measure_scale` times what a user waits for and what a GPU would be
fed:

- set-up: labels (112,120 rows), file search, patient split, split.csv, as `chestx.train` does
  it (`NIHData.prepare` + `save_split`), in a fresh process, with that process's peak memory;
- pixel cache build, images/s, over the first `cache_images` files (all with `cache_images=null`:
  112,120 x 224 x 224 bytes = 5.6 GB of disk);
- training loader from the cache at `size` px with augmentation, images/s per core (one process,
  one thread), with the normalisation in the loader (float32 x 3 channels, the old way) and on the
  device (uint8 x 1 channel handed over; `InputNormalizer` after the transfer), then through
  `workers` loader processes, with the peak memory of the measuring process.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chestx.core.run_folder import SPLIT_FILE
from chestx.data.datasets.nih import NIH_LABEL_FILES

log = logging.getLogger(__name__)

# files per NIH archive folder images_001 ... images_012, in file-name order (NIH's own split)
NIH_ARCHIVE_SIZES: tuple[int, ...] = (4999,) + (10000,) * 10 + (7121,)
NIH_LABEL_FILE = NIH_LABEL_FILES[0]  # the 2020 release the simulated tree copies
NIH_LISTS = ("train_val_list.txt", "test_list.txt")
TREE_DONE = ".chestx_tree_done"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _link(source: Path, target: Path) -> None:
    """A hard link (no bytes copied); a symbolic link where the tree is on another file system."""
    try:
        os.link(source, target)
    except OSError:
        os.symlink(source.resolve(), target)


def build_nih_tree(nih_dir: Path, sample_images: Path, out: Path) -> tuple[Path, float]:
    """The simulated full NIH folder under `out` (reused when complete); returns (root, seconds to build)."""
    root = Path(out)
    if (root / TREE_DONE).is_file():
        return root, 0.0
    started = time.perf_counter()
    names = pd.read_csv(nih_dir / NIH_LABEL_FILE, usecols=["Image Index"])["Image Index"].sort_values().tolist()
    if len(names) != sum(NIH_ARCHIVE_SIZES):
        raise ValueError(f"{nih_dir / NIH_LABEL_FILE} has {len(names)} rows, not NIH's {sum(NIH_ARCHIVE_SIZES)}: "
                         "pass the full NIH label file (scale_nih=<folder with it>)")
    sources = sorted(sample_images.glob("*.png"))
    if not sources:
        raise FileNotFoundError(f"no PNG images in {sample_images} to link the simulated NIH tree to")
    if root.exists():
        shutil.rmtree(root)  # an unfinished tree from an interrupted build
    root.mkdir(parents=True)
    for name in (NIH_LABEL_FILE, *NIH_LISTS):
        shutil.copy(nih_dir / name, root / name)
    start = 0
    for number, size in enumerate(NIH_ARCHIVE_SIZES, start=1):
        folder = root / f"images_{number:03d}" / "images"
        folder.mkdir(parents=True)
        for i in range(start, start + size):
            _link(sources[i % len(sources)], folder / names[i])
        start += size
    (root / TREE_DONE).write_text(f"{len(names)} files\n")
    return root, time.perf_counter() - started


def _setup(root: str, out: str) -> dict[str, float]:
    """In a fresh process: what `chestx.train` does before its first batch, timed; its peak memory."""
    from chestx.data.datasets.nih import NIHData

    started = time.perf_counter()
    data = NIHData(root=root, split="official", seed=0)
    data.prepare()
    data.save_split(Path(out) / SPLIT_FILE)
    seconds = time.perf_counter() - started
    assert data.split is not None
    counts = {name: int((data.split == name).sum()) for name in ("train", "val", "test")}
    return {"seconds": seconds, "peak_memory_mb": _peak_rss_mb(), **{f"n_{k}": v for k, v in counts.items()}}


def measure_setup(root: Path, out: Path) -> dict[str, float]:
    """`_setup` in a spawned process (a clean peak memory, nothing cached in this one)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_setup, (str(root), str(out)))


def loader_rate(dataset: Any, batch_size: int, workers: int, min_seconds: float, seed: int = 0) -> float:
    """Training batches from `dataset` (EpochSampler keys: shuffled, augmented per image), images/s.

    workers=0: this process on one thread (the per-core figure); else that many loader processes.
    """
    import cv2
    import torch

    from chestx.data.loading.datamodule import worker_init
    from chestx.data.loading.sampling import EpochSampler, ResumableDataLoader

    threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        loader = ResumableDataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(dataset, seed),
                                     num_workers=workers, worker_init_fn=worker_init if workers else None,
                                     persistent_workers=workers > 0)
        batches = iter(loader)
        next(batches)  # warm: workers started, first pages mapped
        count, started = 0, time.perf_counter()
        for batch in batches:
            count += len(batch["index"])
            if time.perf_counter() - started >= min_seconds:
                break
        return count / (time.perf_counter() - started)
    finally:
        cv2.setNumThreads(threads[0])
        torch.set_num_threads(threads[1])


def measure_scale(nih_dir: Path, sample_images: Path, work: Path, size: int, cache_images: int | None,
                  workers: list[int], batch_size: int, min_seconds: float, cache_dir: Path) -> dict[str, Any]:
    """Every figure of the scale part (see the module docstring); `work` holds the tree (reused) and split.csv."""
    from chestx.data.images.cache import cached_pixels
    from chestx.data.loading.dataset import XrayDataset
    from chestx.data.datasets.nih import find_nih_images
    from chestx.data.loading.transforms import build_transform

    root, tree_seconds = build_nih_tree(nih_dir, sample_images, work / "nih_full")
    log.info("simulated NIH tree: %s (%.1f s to link)", root, tree_seconds)
    setup = measure_setup(root, work)
    log.info("set-up: %.1f s, peak %.0f MB", setup["seconds"], setup["peak_memory_mb"])

    names = pd.read_csv(work / SPLIT_FILE, dtype=str)["image_id"].tolist()  # split.csv rows: the label file order
    found, _ = find_nih_images(root, names)
    paths = [found[n] for n in names][: cache_images or None]
    started = time.perf_counter()
    cache = cached_pixels(paths, size, cache_dir=cache_dir, root=root)
    cache_seconds = time.perf_counter() - started
    cache_rate = len(paths) / cache_seconds
    log.info("cache: %d images at %d px in %.1f s (%.0f images/s)", len(paths), size, cache_seconds, cache_rate)

    n = len(cache)
    labels = np.zeros((n, 14), dtype=np.float32)  # (N, K): the loader's cost does not depend on the values
    rows: list[dict[str, Any]] = []
    for where, normalize in (("loader (float32 x 3)", True), ("device (uint8 x 1)", False)):
        dataset = XrayDataset(cache, labels, labels, labels.astype(bool),
                              build_transform(size, train=True, seed=0, normalize=normalize), seed=0)
        for w in [0, *workers]:
            rate = loader_rate(dataset, batch_size, w, min_seconds)
            rows.append({"normalisation": where, "workers": w, "images_per_s": rate})
            log.info("loader, normalisation in the %s, %d workers: %.0f images/s", where, w, rate)
    return {
        "images": sum(NIH_ARCHIVE_SIZES), "size": size, "tree_seconds": tree_seconds, "setup": setup,
        "cache": {"images": len(paths), "seconds": cache_seconds, "images_per_s": cache_rate,
                  "bytes": int(len(paths) * size * size)},
        "loader": rows, "loader_peak_memory_mb": _peak_rss_mb(),
    }


def format_scale(scale: dict[str, Any]) -> list[str]:
    """The SCALE section of the perf table."""
    setup, cache = scale["setup"], scale["cache"]
    lines = ["", f"SCALE  (simulated full NIH: {scale['images']:,} files hard-linked to the 256 px sample; {scale['size']} px)",
             f"set-up (labels, file search, split, split.csv)  {setup['seconds']:>8.1f} s   peak {setup['peak_memory_mb']:.0f} MB"
             f"   train/val/test {setup['n_train']:,}/{setup['n_val']:,}/{setup['n_test']:,}",
             f"cache build                                     {cache['images_per_s']:>8.0f} images/s"
             f"   ({cache['images']:,} images, {cache['seconds']:.1f} s, {cache['bytes'] / 2**30:.2f} GiB)",
             f"{'loader from the cache, augmented':<34}{'workers':>8}{'images/s':>12}"]
    lines += [f"  normalisation in the {r['normalisation']:<21}{r['workers']:>4}{r['images_per_s']:>12.0f}"
              for r in scale["loader"]]
    lines.append(f"peak memory of the measuring process: {scale['loader_peak_memory_mb']:.0f} MB")
    return lines
