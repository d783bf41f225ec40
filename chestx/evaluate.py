"""Score any predictions CSV against a dataset's labels and split, writing the files of a run folder.

    python -m chestx.evaluate predictions=their_preds.csv data=nih data.root=/data/ChestX-ray14 prefix=prob_
    python -m chestx.evaluate predictions=p.csv name=chexnet_published prefix=""

The CSV holds an image-id column and one probability column per pathology, named
`<prefix><pathology>` (e.g. `prob_Edema`, or `Edema` with `prefix=""`). The id column is the first of
`image_id` (chestx's predictions.csv), `Image Index` (NIH) and `Path` (CheXpert) that the CSV has,
unless `id_column=` names another. Rows of the test split are
scored (rows of other splits are ignored; rows of the validation split, when all are present, are
saved as predictions_val.csv). The run folder gets config.yaml, split.csv, predictions.csv,
auroc.csv, metrics.json and subgroups.csv (sex / age band / view from the label file; `subgroups=none`
skips it), so `chestx.report` puts the model beside trained ones.
"""
from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from chestx._hydra import CONFIG_DIR, hydra_run_dir, write_config
from chestx.runs.files import failure_recorded
from chestx.runs.scoring import evaluate


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> float:
    """Score cfg.predictions on the test split; a failure is recorded in metrics.json and error.txt."""
    run_dir = hydra_run_dir()
    name = cfg.get("name") or Path(str(cfg.predictions)).stem
    with failure_recorded(run_dir, model=name, seed=cfg.get("seed")):
        write_config(run_dir, cfg)
        subgroups = instantiate(cfg.subgroups) if cfg.get("subgroups") and cfg.subgroups.get("_target_") else None
        table, split = instantiate(cfg.data).labels_only()
        metrics = evaluate(
            Path(cfg.predictions).expanduser(), table, split, run_dir, prefix=str(cfg.prefix or ""),
            id_column=cfg.id_column, name=name, allow_missing=bool(cfg.allow_missing),
            extra={"data": str(cfg.data._target_).rsplit(".", 1)[-1], "seed": cfg.seed},
        )
        if subgroups is not None:
            subgroups(run_dir)
    return float(metrics["test/auroc_mean"])


if __name__ == "__main__":
    main()
