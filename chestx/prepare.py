"""Build the resize cache of a dataset once, before training (`data.cache=true` then reads it).

    python -m chestx.prepare                                    # the embedded NIH sample at its size
    python -m chestx.prepare data=nih data.root=/data/ChestX-ray14 model=densenet121   # 224 px
    python -m chestx.prepare data=nih data.root=... data.image_size=512 data.cache_dir=/scratch/cache

It composes the same `data` / `model` config as `chestx.train`, so the cache it builds is exactly
the one a training run with the same overrides and `data.cache=true` finds and reuses (same files,
same size, same interpolation; see chestx.data.cache). Decoding runs on all cores with a progress
bar; an interrupted run resumes; unreadable images are listed with their paths. The cache goes to
`data.cache_dir`; the run folder (outputs/prepare/<date>/<time>, or `hydra.run.dir=<folder>`)
gets the log.
"""
from __future__ import annotations

import logging
import os

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from chestx._hydra import CONFIG_DIR
from chestx.data.cache import PIXELS, default_cache_dir
from chestx.data.datamodule import ChestXDataModule

log = logging.getLogger(__name__)


def prepare(datamodule: ChestXDataModule) -> str:
    """Build or validate the pixel cache of `datamodule` (made with cache=True); returns the cache folder."""
    datamodule.setup()  # resolves files, splits, then builds / reuses the one cache of every row
    cache = datamodule._pixel_cache
    size_mb = os.path.getsize(cache.folder / PIXELS) / 2**20
    log.info("Cache for %d images at %d px: %s (%.1f MB; default location %s)", len(cache), datamodule.image_size,
             cache.folder, size_mb, default_cache_dir())
    print(f"pixel cache: {cache.folder}  ({len(cache)} images, {datamodule.image_size} px, {size_mb:.1f} MB)")
    return str(cache.folder)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="prepare")
def main(cfg: DictConfig) -> None:
    prepare(instantiate(cfg.data, cache=True))


if __name__ == "__main__":
    main()
