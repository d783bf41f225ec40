"""Train one backbone, test its best checkpoint, and write the run's files.

    python -m chestx.train                                   # DenseNet121 on the embedded NIH sample
    python -m chestx.train model=resnet50 data=nih data.root=/data/ChestX-ray14
    python -m chestx.train -m model=densenet121,resnet50 seed=0,1,2

`train(cfg)`: `start` (hardware defaults, config.yaml, options checked, every object built from its `_target_`),
`fit`, `score_best` (validation and test with the best checkpoint), then the AFTER_TEST steps in order
(predictions and AUROC files, the clinical read-out, subgroups, other datasets' test splits), then metrics.json
(file names: `chestx.core.run_folder`). `main()` returns the optimised metric so Hydra sweepers (Optuna) can use it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from chestx._hydra import (
    CONFIG_DIR, data_config_name, instantiate_all, instantiate_optional, run_dir_of, write_config,
)
from chestx.core.run_folder import (
    BEST_CHECKPOINT, CHECKPOINT_DIR, METRICS_FILE, SPLIT_FILE, SWA_CHECKPOINT, TOP_K_CHECKPOINT_NAME, external_dir,
    failure_recorded, with_metadata, write_metrics, write_run_predictions,
)

from chestx.inference.tta import check_tta

if TYPE_CHECKING:  # torch and Lightning are imported when a run starts, so `--help` answers at once
    import lightning.pytorch as L

    from chestx.data.loading.datamodule import ChestXDataModule
    from chestx.data.datasets.base import ChestXData
    from chestx.models.losses import OutputLayout
    from chestx.models.module import ChestXModule

log = logging.getLogger(__name__)


@dataclass
class Run:
    """One training run as its steps share it."""

    cfg: DictConfig
    run_dir: Path
    data: ChestXData
    datamodule: ChestXDataModule
    module: ChestXModule
    trainer: L.Trainer
    subgroups: Any = None  # SubgroupAnalysis, or None with subgroups=none
    other_data: dict[str, ChestXData] = field(default_factory=dict)  # test_data=[...]
    best: str | None = None  # the best checkpoint
    kept: list[Any] = field(default_factory=list)  # test_top_k=true: the ModelCheckpoint's top k (chestx.runs.top_k)
    metrics: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)


def build(cfg: DictConfig, run_dir: Path | None = None) -> tuple[ChestXData, ChestXDataModule, ChestXModule, L.Trainer]:
    """Data (split saved into `run_dir`, default the run folder), datamodule, module and trainer, each from its
    config group."""
    from chestx.data.loading.datamodule import ChestXDataModule
    from chestx.models.backbones import check_pretrained_available, default_input_size
    from chestx.models.losses import OutputLayout, build_loss
    from chestx.runs.tracking import log_resolved_config

    # first, before the data work (label file, image search, resize cache): weights the model config asks for
    # and that cannot be had here (pretrained=true offline, a missing weights file) stop the run at once
    encoder = encoder_kind(cfg)
    if encoder is None:
        check_pretrained_available(cfg.model.name, cfg.model.get("pretrained", False), cfg.model.get("weights"))
        preprocessing: dict[str, Any] = {}
    else:  # transformers / open_clip: its files must be here; its own size and mean/std (docs/encoders.md)
        from chestx.models.encoders import encoder_preprocessing

        preprocessing = encoder_preprocessing(cfg.model.name, encoder)
    data: ChestXData = instantiate(cfg.data)
    data.save_split((run_dir or run_dir_of(cfg)) / SPLIT_FILE)
    rows_saved = len(data.paths)
    image_size = data.image_size or preprocessing.get("input_size") or default_input_size(cfg.model.name)
    datamodule = ChestXDataModule(data, image_size, in_chans=cfg.model.in_chans, loader=instantiate(cfg.loader))
    if preprocessing and datamodule.normalization == "imagenet" and cfg.model.in_chans == len(preprocessing["mean"]):
        # the encoder's statistics instead of ImageNet's, as fixed statistics ("dataset" with them preset)
        datamodule.normalization = "dataset"
        datamodule.mean, datamodule.std = preprocessing["mean"], preprocessing["std"]
        log.info("normalising with %s's own mean %s / std %s (%s)", cfg.model.name, preprocessing["mean"],
                 preprocessing["std"], preprocessing["source"])
    datamodule.setup("fit")
    if len(data.paths) != rows_saved:  # data.cache=true, missing_images=drop: files that failed to decode dropped
        data.save_split((run_dir or run_dir_of(cfg)) / SPLIT_FILE)
    data_ready = time.time()  # labels, split, image files, pixel cache: metrics.json "phases"
    layout = OutputLayout(data.multiclass, len(data.pathologies))
    log.info("Instantiating backbone %s (%d outputs, in_chans=%d, %d px)", cfg.model.name, layout.num_outputs,
             cfg.model.in_chans, image_size)
    resolve_feature_cache(cfg)
    net = instantiate(cfg.model, num_outputs=layout.num_outputs)
    module = instantiate(
        cfg.module, _convert_="all", net=net,
        pathologies=data.pathologies, loss=build_loss(instantiate(cfg.loss), layout, data.train_labels()),
        optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        multiclass=layout.multiclass, checkpoint_info=checkpoint_info(cfg, datamodule, layout, net),
    )
    module.timestamps["data_ready"] = data_ready
    loggers = instantiate_all(cfg.get("logger"))
    log_resolved_config(loggers, OmegaConf.to_container(cfg, resolve=True))  # params: model.name, optimizer.lr, ...
    swa = instantiate_optional(cfg.get("swa"))  # swa=default: Lightning's StochasticWeightAveraging
    trainer = instantiate(cfg.trainer, callbacks=[*instantiate_all(cfg.get("callbacks")), *([swa] if swa else [])],
                          logger=loggers or False)
    log.info("Device: %s x%d, precision %s", type(trainer.accelerator).__name__, trainer.num_devices, trainer.precision)
    return data, datamodule, module, trainer


def apply_device_defaults(cfg: DictConfig) -> dict[str, Any]:
    """Fill the settings left null (precision, channels_last, loader workers, pinned memory, cuDNN autotuning,
    torch.compile) from the hardware, in `cfg` itself, so config.yaml records what ran (chestx.core.hardware);
    returns what was filled."""
    from chestx.core.hardware import DEFAULT_KEYS, fill_defaults, resolve_device_defaults

    current = {key: OmegaConf.select(cfg, key, default="<absent>") for key in DEFAULT_KEYS}
    trainer = cfg.get("trainer") or {}
    filled = fill_defaults({k: v for k, v in current.items() if v != "<absent>"},
                           resolve_device_defaults(trainer.get("accelerator", "auto"), trainer.get("devices", 1),
                                                   deterministic=trainer.get("deterministic", False)))
    for key, value in filled.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return filled


def resolve_feature_cache(cfg: DictConfig) -> None:
    """module.cache_features null -> true for a linear probe whose training transform is deterministic (every
    data.augment value off), else false; true with augmentation on is an error (cached features would freeze one
    random draw of every image)."""
    if cfg.module.get("freeze") != "backbone":
        OmegaConf.update(cfg, "module.cache_features", False, merge=False)
        return
    aug = cfg.data.get("augment") or {}
    random = [k for k, v in aug.items() if (list(v) != [1.0, 1.0] if k == "scale" else float(v) != 0.0)]
    wanted = cfg.module.get("cache_features")
    if wanted and random:
        raise ValueError(f"module.cache_features=true with random training augmentation data.augment.{random}: "
                         "cached features would keep one random draw; use experiment=linear_probe (augmentation "
                         "off) or module.cache_features=false (the frozen encoder runs every epoch)")
    OmegaConf.update(cfg, "module.cache_features", not random if wanted is None else bool(wanted), merge=False)


ENCODER_TARGETS = {"chestx.models.encoders.create_hf_encoder": "hf",
                   "chestx.models.encoders.create_open_clip_encoder": "open_clip"}


def encoder_kind(cfg: DictConfig) -> str | None:
    """"hf" / "open_clip" for a transformers / open_clip model config, None for timm's."""
    return ENCODER_TARGETS.get(str(cfg.model.get("_target_", "")))


def checkpoint_info(cfg: DictConfig, datamodule: ChestXDataModule, layout: OutputLayout,
                    net: Any = None) -> dict[str, Any]:
    """Plain fields every checkpoint carries, enough to predict without the config (no `_target_`s)."""
    model = {"name": cfg.model.name, "in_chans": cfg.model.in_chans, "drop_rate": cfg.model.get("drop_rate", 0.0)}
    if encoder_kind(cfg) is not None:  # the architecture travels: predict / export rebuild it without hub files
        model.update(kind=encoder_kind(cfg), arch_config=net.arch_config, preprocessing=net.pretrained_cfg)
    return {
        "model": model,
        "pathologies": list(datamodule.data.pathologies), "multiclass": layout.multiclass,
        "image_size": datamodule.image_size, "in_chans": datamodule.in_chans,
        "normalization": datamodule.normalization, "mean": datamodule.mean, "std": datamodule.std,
        "seed": cfg.seed, "data": type(datamodule.data).__name__, "dicom_window": datamodule.data.dicom_window,
    }


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


def start(cfg: DictConfig) -> Run:
    """Everything before fitting: hardware defaults, config.yaml, the optional steps' options (checked now, so a bad
    option stops the run before training), the seed, and every object."""
    import lightning.pytorch as L

    started = time.perf_counter()
    run_dir = run_dir_of(cfg)
    apply_device_defaults(cfg)
    check_top_k(cfg)
    write_config(run_dir, cfg)
    subgroups = instantiate_optional(cfg.get("subgroups"))
    check_tta(str(cfg.get("tta") or "none"))  # a bad tta= stops the run before training
    other_data = other_test_data(cfg)
    L.seed_everything(cfg.seed, workers=True)
    data, datamodule, module, trainer = build(cfg, run_dir)
    if cfg.get("init_from"):  # backbone weights of another run (a resumed fit then loads its own checkpoint)
        from chestx.models.warm_start import load_backbone_weights

        load_backbone_weights(module.net, cfg.init_from, reset_head=cfg.get("init_reset_head", True),
                              trust=trusted(cfg))
    return Run(cfg, run_dir, data, datamodule, module, trainer, subgroups, other_data, started=started)


def check_top_k(cfg: DictConfig) -> None:
    """test_top_k=true: the checkpoints the ModelCheckpoint keeps get their own names (TOP_K_CHECKPOINT_NAME, in
    config.yaml) unless its filename is a template already. Off: save_top_k > 1 under one fixed file name (best) is
    refused, since Lightning would write every kept checkpoint to that one file."""
    node = OmegaConf.select(cfg, "callbacks.model_checkpoint")
    if node is None:
        if cfg.get("test_top_k"):
            raise ValueError("test_top_k=true tests the checkpoints callbacks.model_checkpoint keeps, but it is not "
                             "set: use callbacks=default (or give callbacks.model_checkpoint)")
        return
    k, filename = int(node.get("save_top_k", 1)), str(node.get("filename") or "")
    fixed = bool(filename) and "{" not in filename and not node.get("enable_version_counter", True)
    if cfg.get("test_top_k"):
        if fixed:
            OmegaConf.update(cfg, "callbacks.model_checkpoint.filename", TOP_K_CHECKPOINT_NAME, merge=False)
    elif fixed and k not in (0, 1):
        raise ValueError(f"callbacks.model_checkpoint.save_top_k={k} keeps {k} checkpoints under the one name "
                         f"{filename!r}: {filename}.ckpt would hold whichever entered the top {k} last, not the best; "
                         f"add test_top_k=true (each kept checkpoint gets its own name, {TOP_K_CHECKPOINT_NAME}, "
                         "and is tested into top_k/<name>/ for chestx.ensemble) or set "
                         "callbacks.model_checkpoint.filename='e{epoch}'")


def trusted(cfg: DictConfig) -> bool:
    """`trust_checkpoint=true`: a checkpoint that needs more than tensors and plain values is loaded (its code runs)."""
    from chestx.core.checkpoint_io import trust_setting

    return trust_setting(cfg.get("trust_checkpoint", False))


def fit(run: Run) -> str | None:
    """Fit (resuming from `ckpt_path`, e.g. `last`) and return the best checkpoint; with fit=false, `ckpt_path`."""
    from chestx.core.checkpoint_io import lightning_weights_only, refusing_unsafe

    cfg = run.cfg
    if not cfg.get("fit", True):
        if not cfg.get("ckpt_path"):
            raise ValueError("fit=false scores an existing model: also pass ckpt_path=<path to a .ckpt>")
        log.info("fit=false: scoring %s on validation and test without training", cfg.ckpt_path)
        return str(cfg.ckpt_path)
    ckpt_path = cfg.get("ckpt_path")
    with refusing_unsafe(lambda: run.trainer.ckpt_path or ckpt_path):  # read with weights_only (checkpoint_io)
        run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=ckpt_path,
                        weights_only=lightning_weights_only(ckpt_path, trusted(cfg)))
    best = getattr(run.trainer.checkpoint_callback, "best_model_path", "") or None
    if run.cfg.get("swa"):  # the averaged weights (with recomputed BatchNorm statistics) are what SWA tests
        best = str(run.run_dir / CHECKPOINT_DIR / SWA_CHECKPOINT)
        run.trainer.save_checkpoint(best)
        log.info("swa: the averaged weights saved as %s; they are tested instead of the best checkpoint", best)
    if best is None:
        log.warning("No checkpoint was saved (fast_dev_run or no checkpoint callback): scoring the last weights")
    return best


def score_best(run: Run) -> None:
    """Validation and test with the best checkpoint; their `val/...` and `test/...` metrics."""
    from chestx.core.checkpoint_io import lightning_weights_only, refusing_unsafe

    for stage, loop in (("val", run.trainer.validate), ("test", run.trainer.test)):
        with refusing_unsafe(lambda: run.trainer.ckpt_path or run.best):  # read with weights_only (checkpoint_io)
            loop(run.module, datamodule=run.datamodule, ckpt_path=run.best, verbose=False,
                 weights_only=lightning_weights_only(run.best, trusted(run.cfg)))
        run.metrics.update({k: v for k, v in run.trainer.callback_metrics.items() if k.startswith(f"{stage}/")})


def keep_top_k(run: Run) -> None:
    """test_top_k=true, right after fitting: the checkpoints the ModelCheckpoint kept, best first (read now: testing
    a checkpoint restores the callback's state saved in it, which predates the checkpoints kept after it), and
    checkpoints/best.ckpt as a copy of the best of them (the tested checkpoint, as without the key)."""
    from chestx.runs.top_k import copy_best, few_kept_message, kept_checkpoints

    callback = run.trainer.checkpoint_callback
    if callback is None or not run.cfg.get("fit", True):
        log.warning("test_top_k=true: %s, so no checkpoints were kept", "fit=false" if callback else "no checkpoint "
                    "callback")
        return
    run.kept = kept_checkpoints(callback.best_k_models, callback.mode)
    message = few_kept_message(run.kept, callback.save_top_k)
    if message:
        log.warning("%s", message)
    if run.kept and callback.best_model_path:
        if run.trainer.is_global_zero:
            copy_best(callback.best_model_path, Path(callback.dirpath))
        run.trainer.strategy.barrier()
        if run.best == callback.best_model_path:  # swa=default tests swa.ckpt instead
            run.best = str(Path(callback.dirpath) / BEST_CHECKPOINT)
    log.info("test_top_k=true: %d checkpoints kept (%s %s): %s", len(run.kept), callback.monitor, callback.mode,
             ", ".join(f"{k.path.name} ({k.score})" for k in run.kept))


def top_k_step(run: Run) -> None:
    """test_top_k=true: each kept checkpoint on the run's test dataloader (trainer.test, as score_best does), into
    top_k/<checkpoint stem>/ (chestx.runs.top_k), the members of `python -m chestx.ensemble runs=[<run>/top_k]`. With
    tta=hflip|tencrop each also gets its TTA pass (predictions_tta.csv), so chestx.ensemble combines the passes too;
    the member that is the run's tested checkpoint reuses the run's own pass (tta_step) instead of running it again.
    The run's loggers keep the best checkpoint's test only."""
    from chestx.core.checkpoint_io import lightning_weights_only, refusing_unsafe
    from chestx.core.run_folder import METRICS_FILE, top_k_member_dir, write_metrics
    from chestx.runs.top_k import write_member
    from chestx.runs.tta import copy_tta

    mode = str(run.cfg.get("tta") or "none")
    ids = with_metadata(run.data.split_frame("test"), run.data.labels_only()[0].frame)
    callback = run.trainer.checkpoint_callback
    info = {"model": run.cfg.model.name, "seed": run.cfg.seed, "data": type(run.data).__name__,
            "dataset": data_config_name(run.cfg), "monitor": callback.monitor, "monitor_mode": callback.mode,
            "save_top_k": callback.save_top_k,
            **{k: run.metrics.get(k) for k in ("image_size", "params", "macs", "infer_images_per_s")}}
    loggers, run.trainer.loggers = run.trainer.loggers, []
    try:
        for kept in run.kept:
            with refusing_unsafe(lambda: kept.path):  # read with weights_only (checkpoint_io)
                run.trainer.test(run.module, datamodule=run.datamodule, ckpt_path=str(kept.path), verbose=False,
                                 weights_only=lightning_weights_only(kept.path, trusted(run.cfg)))
            if run.trainer.is_global_zero:
                out = run.module.outputs["test"]
                member = write_member(run.run_dir, kept, ids, out.index, out.probs, out.targets,
                                      run.data.pathologies, info, trust=trusted(run.cfg))
                if mode != "none":
                    folder = top_k_member_dir(run.run_dir, kept.path)
                    tested = kept.rank == 1 and run.best == str(Path(callback.dirpath) / BEST_CHECKPOINT)
                    member.update(copy_tta(run.run_dir, folder, run.metrics) if tested
                                  else tta_pass(run, kept.path, mode, folder))
                    write_metrics(folder / METRICS_FILE, member)
    finally:
        run.trainer.loggers = loggers
    run.metrics["top_k_members"] = [str(top_k_member_dir(run.run_dir, k.path)) for k in run.kept]


# ------------------------------------------------------------------ after the test, in this order
def write_predictions_step(run: Run) -> None:
    """predictions_val.csv, predictions.csv (with sex / age / view for subgroups) and auroc.csv."""
    frame = run.data.labels_only()[0].frame
    ids = {stage: with_metadata(run.data.split_frame(stage), frame) for stage in ("val", "test")}
    write_run_predictions(run.run_dir, ids, run.module.outputs, run.data.pathologies)


def tta_step(run: Run) -> None:
    """tta=hflip|tencrop: the best checkpoint on the test split again with test-time augmentation, into
    predictions_tta.csv and auroc_tta.csv (chestx.runs.tta); tta=none: skipped."""
    mode = str(run.cfg.get("tta") or "none")
    if mode == "none":
        return
    if run.best is None:
        log.warning("tta=%s: no checkpoint was saved, so there is no TTA pass", mode)
        return
    run.metrics.update(tta_pass(run, run.best, mode, run.run_dir))


def tta_pass(run: Run, ckpt: str | Path, mode: str, out_dir: Path) -> dict[str, Any]:
    """The checkpoint `ckpt` on the run's test split with test-time augmentation `mode`, written into `out_dir`
    (predictions_tta.csv, auroc_tta.csv); returns the metrics.json entries (chestx.runs.tta)."""
    from chestx.inference.external import checkpoint_device, score_external
    from chestx.inference.predictor import load_for_inference
    from chestx.runs.tta import write_tta

    predictor = load_for_inference(ckpt, device=checkpoint_device(), trust=trusted(run.cfg), tta=mode)
    scores = score_external(predictor, run.data, batch_size=int(run.cfg.loader.eval_batch_size),
                            num_workers=int(run.cfg.loader.num_workers or 0), tta=True)
    return write_tta(out_dir, scores, mode)


def clinical_step(run: Run) -> None:
    """Thresholds frozen on validation, operating points, calibration, heatmaps (clinical=none: skipped)."""
    clinical = instantiate_optional(run.cfg.get("clinical"))
    if clinical is not None:
        clinical(run.run_dir, image_paths=run.data.image_paths("test"))


def subgroups_step(run: Run) -> None:
    """subgroups.csv at the clinical step's thresholds (subgroups=none: skipped)."""
    if run.subgroups is not None:
        run.subgroups(run.run_dir)


def other_datasets_step(run: Run) -> None:
    """The best checkpoint on each `test_data` dataset's test split, into external/<name>/ (cross-dataset); under
    data=merge also on each source's own test split, on its own findings."""
    datasets = {**getattr(run.data, "sources", {}), **run.other_data}
    if not datasets:
        return
    if run.best is None:
        log.warning("test_data: no checkpoint was saved, so %s could not be scored", sorted(datasets))
        return
    from chestx.inference.external import checkpoint_device, score_external
    from chestx.inference.predictor import load_for_inference
    from chestx.runs.external import thresholds_for, write_external

    predictor = load_for_inference(run.best, device=checkpoint_device(), trust=trusted(run.cfg))
    for name, data in datasets.items():
        scores = score_external(predictor, data, batch_size=run.datamodule.eval_batch_size,
                                num_workers=int(run.datamodule.num_workers or 0))
        run.metrics.update(write_external(external_dir(run.run_dir, name), scores,
                                          thresholds_for(predictor, scores.pathologies), run.subgroups))


def data_files_step(run: Run) -> None:
    """data_files.csv: sha256 of the label file(s) and of split.csv, for the model card."""
    from chestx.runs.card import write_data_files

    write_data_files(run.run_dir, run.data)


def model_card_step(run: Run) -> None:
    """model_card.md from the run folder's files, once metrics.json is written (a failure is logged with the
    command that retries it; the run itself stays ok)."""
    from chestx.runs.card import write_card

    try:
        write_card(run.run_dir)
    except Exception as error:  # noqa: BLE001 - the trained model and its metrics are kept whatever the card does
        log.error("model_card.md not written (%s: %s); retry with: python -m chestx.card run=%s",
                  type(error).__name__, error, run.run_dir)


AFTER_TEST: tuple[tuple[str, Callable[[Run], None]], ...] = (
    ("predictions", write_predictions_step), ("tta", tta_step), ("clinical", clinical_step),
    ("subgroups", subgroups_step), ("other datasets", other_datasets_step), ("data files", data_files_step),
)


def phases(run: Run) -> dict[str, float | None]:
    """metrics.json "phases": when the run reached each phase, in seconds since the epoch (`chestx.perf
    parts=[epoch]` reads them): process start, first log (logging set up, `start` begins), data ready (labels,
    split, image files, pixel cache), first training batch (loaded and on the device), fit end, end (now)."""
    from chestx.core.hardware import process_start_time

    now = time.time()
    return {"process_start": process_start_time(), "first_log": now - (time.perf_counter() - run.started),
            "data_ready": run.module.timestamps.get("data_ready"),
            "first_batch": run.module.timestamps.get("first_batch"), "fit_end": run.module.timestamps.get("fit_end"),
            "end": now}


def run_summary(run: Run) -> dict[str, Any]:
    """metrics.json's description of the run: model, dataset, sizes, cost, compile time, phases, epochs, machine."""
    import contextlib

    import torch

    from chestx.core.hardware import machine
    from chestx.models.callbacks import CostMonitor, count_macs, count_parameters
    from chestx.models.module import checkpoint_epoch

    cfg, trainer, module, datamodule = run.cfg, run.trainer, run.module, run.datamodule
    cost = next((c for c in trainer.callbacks if isinstance(c, CostMonitor)), None)
    eager = torch.compiler.set_stance("force_eager") if module.compile_mode else contextlib.nullcontext()
    with eager:  # a compiled backbone is counted in eager mode: nothing more is compiled for one image
        macs = count_macs(module.net, datamodule.in_chans, datamodule.image_size)
    return {
        "status": "ok", "error": None, "model": cfg.model.name, "data": type(run.data).__name__,
        "dataset": data_config_name(cfg), "sources": sorted(getattr(run.data, "sources", {})) or None,
        "seed": cfg.seed, "image_size": datamodule.image_size,
        "stage": cfg.get("stage"), "init_from": cfg.get("init_from"),  # the two-stage recipe (chestx._stages)
        "params": count_parameters(module.net), "macs": macs,
        "compile": module.compile_mode, "compile_seconds": module.compile_seconds(), "phases": phases(run),
        "epochs": trainer.current_epoch,
        "best_epoch": checkpoint_epoch(run.best, trust=trusted(cfg)) if run.best else None,
        "best_checkpoint": run.best, "monitor": getattr(trainer.checkpoint_callback, "monitor", None),
        **({"swa": True} if cfg.get("swa") else {}),
        "wall_time_s": time.perf_counter() - run.started,
        **{f"n_{name}": len(ds) for name, ds in datamodule.datasets.items()},
        **(cost.summary(module) if cost else {}),
        "machine": machine(),  # results depend on the CPU kernels that ran (README: what is reproducible)
    }


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test the best checkpoint, run the AFTER_TEST steps, write metrics.json; returns its content. A config
    with `stage_two` (experiment=auc_margin_chexpert) runs both stages (chestx._stages)."""
    if cfg.get("stage_two"):
        from chestx._stages import train_two_stages

        return train_two_stages(cfg, train)
    run = start(cfg)
    run.best = fit(run)
    if cfg.get("test_top_k"):
        keep_top_k(run)
    run.metrics = {k: v for k, v in run.trainer.callback_metrics.items() if k.startswith("train/")}
    if cfg.get("test", True):
        score_best(run)
        if run.trainer.is_global_zero:
            for name, step in AFTER_TEST:
                log.debug("After the test: %s", name)
                step(run)
    run.metrics.update(run_summary(run))
    if cfg.get("test_top_k") and cfg.get("test", True):
        top_k_step(run)  # after the summary: the run's own cost figures are those of its best checkpoint's test
    if run.trainer.is_global_zero:
        write_metrics(run.run_dir / METRICS_FILE, run.metrics)
        if cfg.get("test", True):
            model_card_step(run)  # after metrics.json: the card reads cost and hardware from it
    return run.metrics


def run_job(cfg: DictConfig) -> float | None:
    """One training job as an entry point runs it: a failure is recorded in metrics.json and error.txt,
    then re-raised; returns the optimised metric (for Hydra sweepers such as Optuna)."""
    with failure_recorded(run_dir_of(cfg), model=cfg.model.get("name"), seed=cfg.get("seed")):
        metrics = train(cfg)
    value = metrics.get(cfg.get("optimized_metric") or "")
    return float(value) if value is not None else None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg)


if __name__ == "__main__":
    main()
