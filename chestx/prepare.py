"""Build the resize cache of a dataset once, before training (`data.cache=true` then reads it).

    python -m chestx.prepare                                    # the embedded NIH sample at its size
    python -m chestx.prepare data=nih data.root=/data/ChestX-ray14 backbone=inceptionv3   # 299 px
    python -m chestx.prepare data=nih data.root=... data.image_size=512 data.cache_dir=/scratch/cache

It composes the same `data` config as `chestx.train` (the size: `data.image_size`, else the native
size of `backbone`), so the cache it builds is exactly the one a training run with the same
overrides and `data.cache=true` finds and reuses (same files,
same size, same interpolation; see chestx.data.images.cache). Decoding runs on all cores with a progress
bar; an interrupted run resumes; unreadable images are listed with their paths. The cache goes to
`data.cache_dir`; the run folder (outputs/prepare/<date>/<time>, or `hydra.run.dir=<folder>`)
gets the log.
"""
from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from chestx._hydra import CONFIG_DIR
from chestx.data.images.cache import UndecodableImagesError, build_cache
from chestx.models.backbones import default_input_size


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="prepare")
def main(cfg: DictConfig) -> None:
    data = instantiate(cfg.data)
    data.prepare()
    size = data.image_size or default_input_size(cfg.backbone)
    try:
        folder = build_cache(data.paths, size, data.cache_dir, data.root, dicom_window=data.dicom_window)
    except UndecodableImagesError as error:  # valid headers, corrupt pixels: data.missing_images says what to do
        data.drop_undecodable(error.failed, "building the pixel cache, chestx.prepare")
        folder = build_cache(data.paths, size, data.cache_dir, data.root, dicom_window=data.dicom_window)
    data.save_unreadable(Path(HydraConfig.get().runtime.output_dir))  # rows missing_images=drop dropped, if any
    print(f"pixel cache: {folder}  ({len(data.paths)} images, {size} px)")


if __name__ == "__main__":
    main()
