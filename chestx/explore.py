"""Explore a dataset's label file: split sizes, label counts, co-occurrence, demographics, queries.

    python -m chestx.explore                                          # the embedded NIH sample
    python -m chestx.explore data=nih data.root=../shared/data/nih    # label file alone, no images needed
    python -m chestx.explore data=chexpert data.root=../shared/data/chexpert data.uncertainty=ones query=Edema

Reads labels and splits as training does (`labels_only()`: the same rows, policies and splits, no
image lookup unless `data.missing_images=drop`). Writes to the run folder (outputs/explore/<date>/<time>,
or `hydra.run.dir=<folder>`): overview.csv, label_counts.csv, cooccurrence.csv (+ .png),
demographics.csv (+ .png), patient_overlap.csv, query_<P>.csv and split.csv (equal to the `split.csv`
of a training run with the same data options). The statistics are `chestx.data.labels.stats`.
"""
from __future__ import annotations

import time

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from chestx._hydra import CONFIG_DIR, hydra_run_dir
from chestx.data.labels.stats import explore, format_report


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="explore")
def main(cfg: DictConfig) -> None:
    started = time.perf_counter()
    data = instantiate(cfg.data)
    # data.missing_images=drop: look for the images too, so the split is the one training saves
    table, split = data.labels_only(find_images=cfg.data.get("missing_images") == "drop")
    loaded = time.perf_counter() - started
    result = explore(table, split, hydra_run_dir(), query_name=cfg.query, figures=cfg.figures)
    print(format_report(result))
    print(f"\n{len(table)} images read in {loaded:.1f} s, explored in {time.perf_counter() - started:.1f} s; "
          f"tables and figures in {hydra_run_dir()}")


if __name__ == "__main__":
    main()
