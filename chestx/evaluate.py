"""Score any predictions CSV against a dataset's labels and split, writing the files of a run folder.

    python -m chestx.evaluate predictions=their_preds.csv data=nih data.root=/data/ChestX-ray14 prefix=prob_
    python -m chestx.evaluate predictions=p.csv name=chexnet_published prefix=""
    python -m chestx.evaluate ckpt=outputs/train/.../checkpoints/best.ckpt data=chexpert data.root=/data

With `ckpt=` (instead of `predictions=`) and `tta=hflip|tencrop`, a second pass with test-time augmentation goes
into predictions_tta.csv / auroc_tta.csv beside the plain pass (chestx.runs.tta). With `ckpt=` the checkpoint is
scored on the data's test split, on the
findings its training dataset and this one both define (cross-dataset: `chestx.inference.external`),
into `external/<dataset>/` of the run folder (predictions, auroc, subgroups at the checkpoint's
frozen thresholds, the name mapping), as `chestx.train ... test_data=[...]` does.

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
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from chestx._hydra import CONFIG_DIR, data_config_name, hydra_run_dir, instantiate_optional, write_config
from chestx.core.run_folder import METRICS_FILE, external_dir, failure_recorded, write_metrics
from chestx.runs.scoring import evaluate


def score_checkpoint(cfg: DictConfig, run_dir: Path, subgroups: Any) -> float:
    """ckpt= on cfg.data's test split, into run_dir/external/<dataset>/; metrics.json in run_dir."""
    from chestx.core.checkpoint_io import trust_setting
    from chestx.inference.external import checkpoint_device, score_external
    from chestx.inference.predictor import load_for_inference
    from chestx.runs.external import thresholds_for, write_external

    mode = str(cfg.get("tta") or "none")
    predictor = load_for_inference(Path(str(cfg.ckpt)).expanduser(), device=checkpoint_device(),
                                   trust=trust_setting(cfg.get("trust_checkpoint")), tta=mode)
    data = instantiate(cfg.data)
    loader = instantiate(cfg.loader)  # conf/loader: eval_batch_size images per pass, num_workers loader workers
    scores = score_external(predictor, data, batch_size=loader.eval_batch, num_workers=int(loader.num_workers or 0))
    out = external_dir(run_dir, data_config_name(cfg))
    metrics = write_external(out, scores, thresholds_for(predictor, scores.pathologies), subgroups)
    if mode != "none":  # the TTA pass, a predictions file of its own beside the plain pass
        from chestx.runs.tta import write_tta

        tta_scores = score_external(predictor, data, batch_size=int(cfg.loader.eval_batch_size),
                                    num_workers=int(cfg.loader.num_workers or 0), tta=True)
        metrics.update(write_tta(out, tta_scores, mode, stage=f"external_{out.name}_tta"))
    write_metrics(run_dir / METRICS_FILE, {"status": "ok", "error": None, "ckpt": str(cfg.ckpt),
                                          "model": predictor.model_name, "data": type(data).__name__, **metrics})
    return float(metrics[f"external_{out.name}/auroc_mean"])


def score_predictions(cfg: DictConfig, run_dir: Path, name: str, subgroups: Any) -> float:
    """predictions= scored on cfg.data's test split, as a run folder of its own."""
    data = instantiate(cfg.data)
    table, split = data.labels_only()
    metrics = evaluate(
        Path(cfg.predictions).expanduser(), table, split, run_dir, prefix=str(cfg.prefix or ""),
        id_column=cfg.id_column, name=name, allow_missing=bool(cfg.allow_missing),
        unknown_ids=getattr(data, "unknown_prediction_ids", "error"),  # nih_expert: a subset of NIH's images
        extra={"data": type(data).__name__, "dataset": data_config_name(cfg), "seed": cfg.seed},
    )
    if subgroups is not None:
        subgroups(run_dir)
    return float(metrics["test/auroc_mean"])


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> float:
    """Score cfg.predictions (or cfg.ckpt) on the test split; a failure is recorded in metrics.json and error.txt."""
    run_dir = hydra_run_dir()
    if (cfg.get("predictions") is None) == (cfg.get("ckpt") is None):
        raise ValueError("chestx.evaluate scores either predictions=<a CSV> or ckpt=<a .ckpt of chestx.train>: "
                         f"got predictions={cfg.get('predictions')}, ckpt={cfg.get('ckpt')}")
    name = cfg.get("name") or Path(str(cfg.predictions or cfg.ckpt)).stem
    with failure_recorded(run_dir, model=name, seed=cfg.get("seed")):
        if cfg.get("predictions") is not None and str(cfg.get("tta") or "none") != "none":
            raise ValueError(f"tta={cfg.tta} re-scores a checkpoint: it needs ckpt=<a .ckpt>, not predictions= (a "
                             "CSV holds one score per image already); drop tta= or pass ckpt=")
        write_config(run_dir, cfg)
        subgroups = instantiate_optional(cfg.get("subgroups"))
        if cfg.get("ckpt") is not None:
            return score_checkpoint(cfg, run_dir, subgroups)
        return score_predictions(cfg, run_dir, name, subgroups)


if __name__ == "__main__":
    main()
