"""Train one backbone, test its best checkpoint, and write the run's files.

    python -m chestx.train                                   # DenseNet121 on the embedded NIH sample
    python -m chestx.train model=resnet50 data=nih data.root=/data/ChestX-ray14
    python -m chestx.train -m model=densenet121,resnet50 seed=0,1,2

`train(cfg)` builds every object from the composed config (each through its `_target_`), fits,
re-scores the best checkpoint on validation and test, and writes `predictions*.csv`, `auroc.csv`
and `metrics.json` (see `chestx.runs.files`). `main()` returns the optimised metric so Hydra
sweepers (Optuna) can use it.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from chestx._hydra import CONFIG_DIR, hydra_run_dir, instantiate_all, write_config
from chestx.runs.files import METRICS_FILE, failure_recorded, with_metadata, write_metrics, write_run_predictions

if TYPE_CHECKING:  # torch and Lightning are imported when a run starts, so `--help` answers at once
    import lightning.pytorch as L

    from chestx.data.datamodule import ChestXDataModule
    from chestx.data.sources import ChestXData
    from chestx.models.losses import OutputLayout
    from chestx.models.module import ChestXModule

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[ChestXData, ChestXDataModule, ChestXModule, L.Trainer]:
    """Data (split saved), datamodule, module and trainer, each from its config group."""
    from chestx.data.datamodule import ChestXDataModule
    from chestx.models.backbones import check_pretrained_available, default_input_size
    from chestx.models.losses import OutputLayout, build_loss
    from chestx.runs.tracking import log_resolved_config

    # first, before the data work (label file, image search, resize cache): weights the model config asks for
    # and that cannot be had here (pretrained=true offline, a missing weights file) stop the run at once
    check_pretrained_available(cfg.model.name, cfg.model.get("pretrained", False), cfg.model.get("weights"))
    data: ChestXData = instantiate(cfg.data)
    data.save_split(run_dir_of(cfg) / "split.csv")
    image_size = data.image_size or default_input_size(cfg.model.name)
    datamodule = ChestXDataModule(data, image_size, in_chans=cfg.model.in_chans)
    datamodule.setup("fit")
    layout = OutputLayout(data.multiclass, len(data.pathologies))
    log.info("Instantiating backbone %s (%d outputs, in_chans=%d, %d px)", cfg.model.name, layout.num_outputs,
             cfg.model.in_chans, image_size)
    module = instantiate(
        cfg.module, _convert_="all", net=instantiate(cfg.model, num_outputs=layout.num_outputs),
        pathologies=data.pathologies, loss=build_loss(instantiate(cfg.loss), layout, data.train_labels()),
        optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        multiclass=layout.multiclass, checkpoint_info=checkpoint_info(cfg, datamodule, layout),
    )
    loggers = instantiate_all(cfg.get("logger"))
    log_resolved_config(loggers, OmegaConf.to_container(cfg, resolve=True))  # params: model.name, optimizer.lr, ...
    trainer = instantiate(cfg.trainer, callbacks=instantiate_all(cfg.get("callbacks")), logger=loggers or False)
    log.info("Device: %s x%d, precision %s", type(trainer.accelerator).__name__, trainer.num_devices, trainer.precision)
    return data, datamodule, module, trainer


def apply_device_defaults(cfg: DictConfig) -> dict[str, Any]:
    """Fill the settings left null (precision, channels_last, loader workers, pinned memory) from the hardware,
    in `cfg` itself, so config.yaml records what ran (chestx.runs.device_defaults); returns what was filled."""
    from chestx.runs.device_defaults import DEFAULT_KEYS, fill_defaults, resolve_device_defaults

    current = {key: OmegaConf.select(cfg, key, default="<absent>") for key in DEFAULT_KEYS}
    trainer = cfg.get("trainer") or {}
    filled = fill_defaults({k: v for k, v in current.items() if v != "<absent>"},
                           resolve_device_defaults(trainer.get("accelerator", "auto"), trainer.get("devices", 1)))
    for key, value in filled.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return filled


def checkpoint_info(cfg: DictConfig, datamodule: ChestXDataModule, layout: OutputLayout) -> dict[str, Any]:
    """Plain fields every checkpoint carries, enough to predict without the config (no `_target_`s)."""
    return {
        "model": {"name": cfg.model.name, "in_chans": cfg.model.in_chans, "drop_rate": cfg.model.get("drop_rate", 0.0)},
        "pathologies": list(datamodule.data.pathologies), "multiclass": layout.multiclass,
        "image_size": datamodule.image_size, "in_chans": datamodule.in_chans,
        "normalization": datamodule.normalization, "mean": datamodule.mean, "std": datamodule.std,
        "seed": cfg.seed, "data": type(datamodule.data).__name__,
    }


def fit(cfg: DictConfig, trainer: L.Trainer, module: ChestXModule, datamodule: ChestXDataModule) -> str | None:
    """Fit (resuming from `ckpt_path`, e.g. `last`) and return the best checkpoint; with fit=false, `ckpt_path`."""
    if not cfg.get("fit", True):
        if not cfg.get("ckpt_path"):
            raise ValueError("fit=false scores an existing model: also pass ckpt_path=<path to a .ckpt>")
        log.info("fit=false: scoring %s on validation and test without training", cfg.ckpt_path)
        return str(cfg.ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    if best is None:
        log.warning("No checkpoint was saved (fast_dev_run or no checkpoint callback): scoring the last weights")
    return best


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test the best checkpoint, write the run folder; returns metrics.json's content."""
    import lightning.pytorch as L

    started = time.perf_counter()
    run_dir = run_dir_of(cfg)
    apply_device_defaults(cfg)
    write_config(run_dir, cfg)
    # built now so that bad subgroup options stop the run before training (subgroups=none leaves no _target_)
    subgroups = instantiate(cfg.subgroups) if cfg.get("subgroups") and cfg.subgroups.get("_target_") else None
    other_data = other_test_data(cfg)  # test_data=[...]: checked now, scored after the usual test
    L.seed_everything(cfg.seed, workers=True)
    data, datamodule, module, trainer = build(cfg)
    best = fit(cfg, trainer, module, datamodule)
    metrics: dict[str, Any] = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
    if cfg.get("test", True):
        for stage in ("val", "test"):
            getattr(trainer, "validate" if stage == "val" else "test")(module, datamodule=datamodule, ckpt_path=best,
                                                                       verbose=False)
            metrics.update({k: v for k, v in trainer.callback_metrics.items() if k.startswith(f"{stage}/")})
        if trainer.is_global_zero:
            frame = data.labels_only()[0].frame  # sex / age / view travel in predictions*.csv (subgroups)
            write_run_predictions(run_dir, {s: with_metadata(data.split_frame(s), frame) for s in ("val", "test")},
                                  module.outputs, data.pathologies)
            if cfg.get("clinical") and cfg.clinical.get("_target_"):  # clinical=none leaves no _target_
                instantiate(cfg.clinical)(run_dir, image_paths=data.image_paths("test"))
            if subgroups is not None:  # after the clinical step: it reuses its thresholds.csv
                subgroups(run_dir)
            metrics.update(test_other_datasets(cfg, other_data, best, run_dir, subgroups))
    metrics.update(run_summary(cfg, trainer, module, datamodule, best, started))
    if trainer.is_global_zero:
        write_metrics(run_dir / METRICS_FILE, metrics)
    return metrics


def other_test_data(cfg: DictConfig) -> dict[str, ChestXData]:
    """The datasets of `test_data=[...]`, built (options checked) before training; their roots must exist."""
    out = {}
    for name, node in (cfg.get("test_data") or {}).items():
        missing = sorted(OmegaConf.missing_keys(node))
        if missing:
            raise ValueError(f"test_data.{name} needs {', '.join(f'test_data.{name}.{k}' for k in missing)}: e.g. "
                             f"test_data.{name}.root=/data/{name}")
        data = instantiate(node)
        if not Path(data.root).is_dir():
            raise FileNotFoundError(f"test_data.{name}.root={str(data.root)!r} is not a folder: point it at the "
                                    f"{type(data).__name__} dataset folder")
        out[str(name)] = data
    return out


def test_other_datasets(cfg: DictConfig, other: dict[str, ChestXData], best: str | None, run_dir: Path,
                        subgroups: Any) -> dict[str, Any]:
    """Score the best checkpoint on each extra dataset's test split into external/<name>/ (cross-dataset)."""
    if not other:
        return {}
    if best is None:
        log.warning("test_data: no checkpoint was saved, so %s could not be scored", sorted(other))
        return {}
    from chestx.inference.external import checkpoint_device, score_external
    from chestx.inference.predictor import load_for_inference
    from chestx.runs.external import EXTERNAL_DIR, thresholds_for, write_external

    predictor = load_for_inference(best, device=checkpoint_device())
    metrics: dict[str, Any] = {}
    for name, data in other.items():
        scores = score_external(predictor, data, batch_size=int(cfg.data.eval_batch_size),
                                num_workers=int(cfg.data.num_workers or 0))
        metrics.update(write_external(run_dir / EXTERNAL_DIR / name, scores,
                                      thresholds_for(predictor, scores.pathologies), subgroups))
    return metrics


def run_summary(cfg: DictConfig, trainer: L.Trainer, module: ChestXModule, datamodule: ChestXDataModule,
                best: str | None, started: float) -> dict[str, Any]:
    """metrics.json's description of the run: model, sizes, cost, epochs, machine."""
    from chestx.models.callbacks import CostMonitor, count_macs, count_parameters
    from chestx.models.module import checkpoint_epoch
    from chestx.runs.machine import machine

    cost = next((c for c in trainer.callbacks if isinstance(c, CostMonitor)), None)
    return {
        "status": "ok", "error": None, "model": cfg.model.name, "data": type(datamodule.data).__name__,
        "seed": cfg.seed, "image_size": datamodule.image_size, "params": count_parameters(module.net),
        "macs": count_macs(module.net, datamodule.in_chans, datamodule.image_size),
        "epochs": trainer.current_epoch, "best_epoch": checkpoint_epoch(best) if best else None,
        "best_checkpoint": best, "monitor": getattr(trainer.checkpoint_callback, "monitor", None),
        "wall_time_s": time.perf_counter() - started,
        **{f"n_{name}": len(ds) for name, ds in datamodule.datasets.items()},
        **(cost.summary(module) if cost else {}),
        "machine": machine(),  # results depend on the CPU kernels that ran (README: what is reproducible)
    }


def run_dir_of(cfg: DictConfig) -> Path:
    """The Hydra run folder, or `paths.output_dir` when `train(cfg)` is called without Hydra (tests)."""
    from hydra.core.hydra_config import HydraConfig

    return hydra_run_dir() if HydraConfig.initialized() else Path(cfg.paths.output_dir)


def run(cfg: DictConfig) -> float | None:
    """One training job as an entry point runs it: a failure is recorded in metrics.json and error.txt,
    then re-raised; returns the optimised metric (for Hydra sweepers such as Optuna)."""
    with failure_recorded(run_dir_of(cfg), model=cfg.model.get("name"), seed=cfg.get("seed")):
        metrics = train(cfg)
    value = metrics.get(cfg.get("optimized_metric") or "")
    return float(value) if value is not None else None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
