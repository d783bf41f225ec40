"""Split balance benchmark: stratified against random patient splits on real label files (prevalence deviation).

    python -m chestx.throughput.split_balance [SHARED_DATA]   (default ../shared/data)

Reads PadChest's and CheXpert's label files with chestx's own readers (``read_padchest`` all 28 findings, all
views; ``read_chexpert`` train.csv, uncertain -> NaN, blank -> 0), splits their patients 70/10/20 with
``chestx.data.stratify.stratified_split`` and ``random_patient_split`` and prints, per split, the largest prevalence
deviation (percentage points) of any finding with >= 50 positive images: stratified (seed 0), random (seed 0) and
random averaged over ``random_seeds`` seeds, and how many findings have no positive in the split. The measured table
is in docs/encoders.md ("Stratified splits").
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chestx.data.datasets.chexpert import read_chexpert
from chestx.data.datasets.padchest import read_padchest
from chestx.data.labels.table import LabelTable
from chestx.data.stratify import (
    SPLIT_NAMES,
    finding_deviation,
    prevalence_deviation,
    random_patient_split,
    stratified_split,
)

PADCHEST_FILE = "padchest/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
CHEXPERT_FILE = "chexpert/train.csv"
MIN_POSITIVES = 50


def read_label_tables(shared_data: str | Path) -> dict[str, LabelTable]:
    """The two real label files of ../shared/data, read by chestx's readers."""
    root = Path(shared_data)
    return {"PadChest": read_padchest(root / PADCHEST_FILE), "CheXpert": read_chexpert(root / CHEXPERT_FILE)}


def balance_table(table: LabelTable, ratios: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0,
                  random_seeds: int = 10, min_positives: int = MIN_POSITIVES) -> pd.DataFrame:
    """One row per split: the largest prevalence deviation (pp) of a finding with >= ``min_positives`` positives,
    stratified (``seed``) vs random (``seed``) vs random (mean over seeds 0..random_seeds-1), and findings missing."""
    ids = table.frame["patient_id"].to_numpy()
    common = (np.nan_to_num(table.labels, nan=0.0) >= 0.5).sum(0) >= min_positives
    strat = prevalence_deviation(table.labels, stratified_split(ids, table.labels, ratios, seed), table.pathologies,
                                 min_positives)
    rand = prevalence_deviation(table.labels, random_patient_split(ids, ratios, seed), table.pathologies,
                                min_positives)
    rand_max = np.stack([finding_deviation(table.labels, random_patient_split(ids, ratios, s))[:, common].max(1)
                         for s in range(random_seeds)])  # (seeds, 3)
    out = pd.DataFrame({
        "split": strat["split"], "images": strat["images"],
        "stratified_max_pp": strat["max_dev_pp"].round(3), "stratified_worst": strat["worst_finding"],
        "random_max_pp": rand["max_dev_pp"].round(3), "random_worst": rand["worst_finding"],
        f"random_mean{random_seeds}_max_pp": [round(float(rand_max[:, SPLIT_NAMES.index(s)].mean()), 3)
                                              for s in strat["split"]],
        "stratified_missing": strat["findings_missing"], "random_missing": rand["findings_missing"],
    })
    out.attrs["findings_ge_min"] = int(common.sum())
    return out


def markdown(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "|".join(["---"] * frame.shape[1]) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)])


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[3] / "shared" / "data"
    for name, table in read_label_tables(root).items():
        result = balance_table(table)
        print(f"\n{name}: {len(table)} images, {table.frame['patient_id'].nunique()} patients, "
              f"{result.attrs['findings_ge_min']} findings with >= {MIN_POSITIVES} positives; 70/10/20 by patient")
        print(markdown(result))


if __name__ == "__main__":
    main()
