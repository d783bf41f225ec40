"""Train one backbone, test its best checkpoint, and write the run's files.

    python -m chestx.train                                   # DenseNet121 on the embedded NIH sample
    python -m chestx.train model=resnet50 data=nih data.root=/data/ChestX-ray14
    python -m chestx.train -m model=densenet121,resnet50 seed=0,1,2

`train(cfg)` builds everything from the composed config (each object through its `_target_`),
fits, re-scores the best checkpoint on validation and test, and writes `predictions*.csv`,
`auroc.csv` and `metrics.json` (see `chestx.runs.files`). `main()` returns the optimised metric
so Hydra sweepers (Optuna) can use it.
"""
from __future__ import annotations

import functools
import logging
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from chestx._hydra import CONFIG_DIR, instantiate_net
from chestx.models.callbacks import CostMonitor, count_macs, count_parameters
from chestx.models.losses import MixedPolicyLoss, OutputLayout
from chestx.runs.files import (
    AUROC_FILE, METRICS_FILE, PREDICTIONS_FILE, VAL_PREDICTIONS_FILE, format_auroc_table, predictions_frame,
    write_auroc, write_metrics, write_predictions,
)

log = logging.getLogger(__name__)


def run_dir_of(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def _build_loss(cfg: DictConfig, datamodule: Any, layout: OutputLayout) -> torch.nn.Module:
    """The configured loss; under per-pathology `multiclass` it trains only the other pathologies."""
    binary = None
    if layout.binary_k:
        binary = instantiate(cfg.loss)
        if isinstance(binary, functools.partial):  # losses that need the training split (weighted_bce)
            binary = binary(labels=datamodule.train_labels()[:, layout.binary_k])
    if not layout.any_multiclass:
        log.info("Loss: %s", binary)
        return binary
    names = datamodule.pathologies
    log.info("data.uncertainty: 3-way output and MulticlassUncertaintyLoss for %s; loss %s for %s",
             [names[k] for k in layout.multiclass_k], binary, [names[k] for k in layout.binary_k])
    return MixedPolicyLoss(binary, layout)


def _resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    if ckpt_path in (None, "last"):
        if ckpt_path is None:
            return None
        last = run_dir / "checkpoints" / "last.ckpt"
        if not last.exists():
            raise FileNotFoundError(
                f"ckpt_path=last: no {last}; resume inside the old run folder with "
                "hydra.run.dir=<that run folder>, or pass ckpt_path=<path to a .ckpt>"
            )
        return str(last)
    if not Path(ckpt_path).exists():
        raise FileNotFoundError(f"ckpt_path={ckpt_path!r} does not exist")
    return ckpt_path


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test the best checkpoint, write the run folder; returns metrics.json's content."""
    started = time.perf_counter()
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "error.txt").unlink(missing_ok=True)  # from an earlier failed attempt in this folder
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)

    log.info("Instantiating datamodule <%s>", cfg.data._target_)
    datamodule = instantiate(cfg.data)
    datamodule.save_split(run_dir / "split.csv")
    pathologies = datamodule.pathologies
    layout = OutputLayout(datamodule.multiclass, len(pathologies))

    log.info("Instantiating backbone %s (%d outputs, in_chans=%d)", cfg.model.name, layout.num_outputs, cfg.model.in_chans)
    net = instantiate_net(cfg.model, layout.num_outputs)
    module = instantiate(
        cfg.module, _convert_="all", net=net, pathologies=pathologies, loss=_build_loss(cfg, datamodule, layout),
        optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        multiclass=layout.multiclass,
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    cost = next((c for c in callbacks if isinstance(c, CostMonitor)), None) or CostMonitor()
    if cost not in callbacks:
        callbacks.append(cost)
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    if not loggers and any(isinstance(c, L.callbacks.LearningRateMonitor) for c in callbacks):
        log.info("No logger configured: leaving out the LearningRateMonitor callback")
        callbacks = [c for c in callbacks if not isinstance(c, L.callbacks.LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log.info("Device: %s x%d, precision %s", trainer.accelerator.__class__.__name__, trainer.num_devices, trainer.precision)

    datamodule.setup("fit")
    module.run_info = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "pathologies": pathologies,
        "multiclass": layout.multiclass,
        "image_size": datamodule.image_size,
        "in_chans": datamodule.in_chans,
        "normalization": datamodule.normalization,
        "mean": datamodule.mean,
        "std": datamodule.std,
    }
    ckpt_path = _resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
    checkpoint = trainer.checkpoint_callback
    if cfg.get("fit", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        best = getattr(checkpoint, "best_model_path", "") or None
        if best is None:
            log.warning("No checkpoint was saved (fast_dev_run or no checkpoint callback): scoring the last weights")
        else:
            log.info("Best checkpoint: %s (%s=%s)", best, checkpoint.monitor, checkpoint.best_model_score)
    else:
        if ckpt_path is None:
            raise ValueError("fit=false scores an existing model: also pass ckpt_path=<path to a .ckpt>")
        best = ckpt_path
        log.info("fit=false: scoring %s on validation and test without training", best)
    metrics: dict[str, Any] = {}
    metrics.update({k: v for k, v in trainer.callback_metrics.items() if k.startswith("train/")})
    if cfg.get("test", True):
        trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        metrics.update({k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        metrics.update({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        if trainer.is_global_zero:
            _write_predictions(run_dir, datamodule, module, pathologies)
            if cfg.get("clinical") and cfg.clinical.get("_target_"):  # clinical=none leaves no _target_
                instantiate(cfg.clinical)(run_dir)
    metrics.update(_run_summary(cfg, trainer, module, cost, datamodule, best, started))
    if trainer.is_global_zero:
        write_metrics(run_dir / METRICS_FILE, metrics)
    return metrics


def _write_predictions(run_dir: Path, datamodule: Any, module: Any, pathologies: list[str]) -> None:
    for stage, filename in (("val", VAL_PREDICTIONS_FILE), ("test", PREDICTIONS_FILE)):
        out = module.outputs[stage]
        ids = datamodule.split_frame(stage).iloc[out.index].reset_index(drop=True)
        write_predictions(run_dir / filename, predictions_frame(ids, out.probs, out.targets, pathologies))
    out = module.outputs["test"]
    table = write_auroc(run_dir / AUROC_FILE, out.probs, out.targets, pathologies)
    log.info("Test AUROC per pathology (%d images, best checkpoint):\n%s", len(out.index), format_auroc_table(table))


def _run_summary(cfg, trainer, module, cost, datamodule, best, started) -> dict[str, Any]:
    checkpoint = trainer.checkpoint_callback
    best_epoch = None
    if best:
        best_epoch = torch.load(best, map_location="cpu", weights_only=False).get("epoch")
    summary = {
        "status": "ok",
        "error": None,
        "model": cfg.model.name,
        "data": cfg.data._target_.rsplit(".", 1)[-1],
        "seed": cfg.seed,
        "image_size": datamodule.image_size,
        "params": count_parameters(module.net),
        "macs": count_macs(module.net, datamodule.in_chans, datamodule.image_size),
        "epochs": trainer.current_epoch,
        "best_epoch": best_epoch,
        "best_checkpoint": best,
        "monitor": getattr(checkpoint, "monitor", None),
        "wall_time_s": time.perf_counter() - started,
        "n_train": len(datamodule.datasets["train"]),
        "n_val": len(datamodule.datasets["val"]),
        "n_test": len(datamodule.datasets["test"]),
    }
    summary.update(cost.summary(module))
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run one training job; on failure write metrics.json with status "failed" and re-raise."""
    try:
        metrics = train(cfg)
    except Exception as error:
        run_dir = run_dir_of(cfg)
        write_metrics(run_dir / METRICS_FILE, {
            "status": "failed", "error": f"{type(error).__name__}: {error}",
            "model": cfg.model.get("name"), "seed": cfg.get("seed"),
        })
        (run_dir / "error.txt").write_text(traceback.format_exc())
        log.error("Run failed: %s: %s (details in %s)", type(error).__name__, error, run_dir / "error.txt")
        raise
    value = metrics.get(cfg.get("optimized_metric") or "")
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
