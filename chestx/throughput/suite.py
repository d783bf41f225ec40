"""The throughput suite behind `chestx.perf`: settings resolved from the machine, the parts run
(`loader`, `train` (with inference), `scale`, `epoch`), targets checked, the table printed and perf.json written.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from chestx.core.hardware import machine, native_bf16, resolve_device_defaults
from chestx.data.images.cache import CachedPixels, cached_pixels
from chestx.models.backbones import BACKBONES
from chestx.throughput.epoch import format_epoch, measure_epoch
from chestx.throughput.loader import bench_loader, write_resized_pngs
from chestx.throughput.probe import bench_probe, format_probe
from chestx.throughput.scale import NIH_LABEL_FILE, format_scale, measure_scale
from chestx.throughput.training import Option, bench_training

log = logging.getLogger("chestx.perf")

REPO_DIR = Path(__file__).resolve().parents[2]  # the checkout (the embedded sample lives in data/)
DEFAULT_IMAGES = REPO_DIR.parent / "shared" / "data" / "nih" / "fullres1024"
FALLBACK_IMAGES = REPO_DIR / "data" / "nih_sample" / "images"
ALL_BACKBONES = list(BACKBONES)
PARTS = ("loader", "train", "scale", "epoch", "probe")
DEFAULT_PARTS: tuple[str, ...] = ("loader", "train")  # as conf/perf.yaml; scale and epoch need NIH's label file
TARGETS = {"cache_over_decode_per_core": 50.0, "lightning_over_bare_cpu": 0.90, "gpu_densenet121_224_images_per_s": 3000.0,
           "scale_setup_seconds": 15.0, "scale_loader_per_core": 2000.0,
           "probe_speedup": 10.0}  # fine-tune / linear probe seconds per epoch after the first (CPU)
SCALE_PARTS = ("scale", "epoch")  # the parts that need the simulated full NIH tree
DEFAULT_NIH = REPO_DIR.parent / "shared" / "data" / "nih"  # the full NIH label file and split lists
SAMPLE_IMAGES = REPO_DIR / "data" / "nih_sample" / "images"
RESULT_FILE = "perf.json"


@dataclass
class BenchSettings:
    """Every setting of a benchmark run, machine-dependent defaults resolved (see conf/perf.yaml)."""

    images: Path
    size: int
    parts: list[str]
    workers: list[int]
    backbones: list[str]
    options: list[str]
    batch_size: int
    eval_batch_size: int
    batches: int
    warmup: int
    train_workers: int
    repeats: int
    min_seconds: float
    device: str
    threads: int | None
    cache_dir: Path | None
    full: bool
    scale_nih: Path
    scale_images: int | None
    scale_dir: Path | None
    epoch_model: str = "resnet18"
    epoch_batch_size: int = 8
    epoch_limit_batches: int | None = None
    epoch_cache: bool = False
    epoch_runs: int = 1
    epoch_args: tuple[str, ...] = ()
    probe_backbone: str | None = None
    probe_epochs: int = 3
    probe_batches: int | None = None


def _as_list(value: object) -> list | None:
    """`parts=loader` as well as `parts=[loader]` (one value, or a list of them)."""
    if value is None or isinstance(value, (list, tuple)):
        return None if value is None else list(value)
    return [value]


def resolve_settings(
    images: str | Path | None = None, size: int = 224, parts: Sequence[str] = DEFAULT_PARTS,
    workers: Sequence[int] | None = None, backbones: Sequence[str] | None = None, options: Sequence[str] | None = None,
    batch_size: int | None = None, eval_batch_size: int | None = None, batches: int | None = None,
    warmup: int | None = None, train_workers: int | None = None, repeats: int = 2, min_seconds: float = 2.0,
    device: str | None = None, threads: int | None = None, cache_dir: str | Path | None = None, full: bool = False,
    scale_nih: str | Path | None = None, scale_images: int | None = 10000, scale_dir: str | Path | None = None,
    epoch_model: str | None = None, epoch_batch_size: int | None = None, epoch_limit_batches: int | None = None,
    epoch_cache: bool | None = None, epoch_runs: int = 1, epoch_args: Sequence[str] | None = None,
    probe_backbone: str | None = None, probe_epochs: int = 3, probe_batches: int | None = None,
) -> BenchSettings:
    """Fill in the settings left None from the machine: GPU defaults when `device` is (or defaults to) CUDA."""
    parts, workers, backbones, options, epoch_args = (_as_list(v) for v in (parts, workers, backbones, options,
                                                                            epoch_args))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.device(device).type == "cuda"
    scale_nih = _checked_scale_nih(parts, scale_nih, epoch_runs, scale_images)
    options = _resolve_options(options, device, gpu, full)
    return BenchSettings(
        images=Path(images) if images else (DEFAULT_IMAGES if DEFAULT_IMAGES.is_dir() else FALLBACK_IMAGES),
        size=size, parts=parts, workers=[int(w) for w in workers] if workers else [os.cpu_count() or 1],
        backbones=_resolve_backbones(backbones, gpu, full), options=options,
        **_train_defaults(gpu, full, batch_size, eval_batch_size, batches, warmup, train_workers, threads),
        repeats=repeats, min_seconds=min_seconds, device=device,
        cache_dir=Path(cache_dir) if cache_dir else None, full=full, scale_nih=scale_nih,
        scale_images=int(scale_images) if scale_images is not None else None,
        scale_dir=Path(scale_dir) if scale_dir else None,
        **_epoch_defaults(gpu, epoch_model, epoch_batch_size, epoch_limit_batches, epoch_cache, epoch_runs, epoch_args),
        probe_backbone=probe_backbone, probe_epochs=int(probe_epochs),
        probe_batches=int(probe_batches) if probe_batches else None,
    )


def _checked_scale_nih(parts: list | None, scale_nih: str | Path | None, epoch_runs: int,
                       scale_images: int | None) -> Path:
    """Check the parts and the scale / epoch settings (each bad value named); returns the NIH label folder."""
    if not parts or any(p not in PARTS for p in parts):
        raise ValueError(f"parts={parts}: choose from {list(PARTS)} ('train' also measures inference)")
    scale_nih = Path(scale_nih) if scale_nih else DEFAULT_NIH
    if set(parts) & set(SCALE_PARTS) and not (scale_nih / NIH_LABEL_FILE).is_file():
        raise FileNotFoundError(f"scale_nih={str(scale_nih)!r} has no {NIH_LABEL_FILE}: the scale and epoch "
                                "parts need NIH's full label file and split lists (scale_nih=<folder with them>)")
    if int(epoch_runs) < 1:
        raise ValueError(f"epoch_runs={epoch_runs}: the number of measured chestx.train runs (at least 1)")
    if scale_images is not None and int(scale_images) < 1:
        raise ValueError(f"scale_images={scale_images}: the number of images to cache (null: all 112,120)")
    return scale_nih


def _resolve_options(options: list | None, device: str, gpu: bool, full: bool) -> list[str]:
    """The training options to measure, from the hardware when None; each one parsed now, so a bad entry fails early."""
    if options is None:  # bf16 only where the hardware has it (emulated bf16 ran at 0.4 images/s on a CPU)
        bf16 = native_bf16(device)
        options = (["32", "16+cl"] + (["bf16+cl"] if bf16 else []) if gpu else ["32", "32+cl"] + (["bf16"] if bf16 else [])
                   ) + (["16+cl+compile" if gpu else "32+compile"] if full else [])
        log.info("perf options from the hardware (%s, native bf16: %s): %s", device, bf16, options)
    options = [str(o) for o in options]  # `options=[32,bf16]`: Hydra reads 32 as a number
    for option in options:
        Option.parse(option)  # fails now, naming the entry, rather than after the loader part
    return options


def _resolve_backbones(backbones: list | None, gpu: bool, full: bool) -> list[str]:
    """The backbones of the train part: all with `full`, else the device's usual one."""
    if not backbones:
        backbones = ALL_BACKBONES if full else ["densenet121" if gpu else "resnet18"]
    return [str(b) for b in backbones]


def _train_defaults(gpu: bool, full: bool, batch_size: int | None, eval_batch_size: int | None, batches: int | None,
                    warmup: int | None, train_workers: int | None, threads: int | None) -> dict:
    """Batch sizes, batch counts, loader workers and torch threads of the train part; GPU or CPU defaults for None."""
    batches = batches if batches is not None else (30 if gpu else 4)
    return {
        "batch_size": batch_size or (64 if gpu else 8), "eval_batch_size": eval_batch_size or (128 if gpu else 16),
        "batches": max(batches, 10) if full else batches, "warmup": warmup if warmup is not None else (5 if gpu else 1),
        # GPU: the loader workers chestx.train would use; CPU: none (one process on one thread, the per-core figure)
        "train_workers": train_workers if train_workers is not None else (
            resolve_device_defaults("gpu", 1, cuda_available=True, bf16_supported=True, gpu_count=1).num_workers
            if gpu else 0),
        "threads": threads if threads is not None else (None if gpu else 1),
    }


def _epoch_defaults(gpu: bool, epoch_model: str | None, epoch_batch_size: int | None, epoch_limit_batches: int | None,
                    epoch_cache: bool | None, epoch_runs: int, epoch_args: list | None) -> dict:
    """Settings of the epoch part: the whole epoch on a GPU; a few batches of a small model on a CPU."""
    return {
        "epoch_model": epoch_model or ("densenet121" if gpu else "resnet18"),
        "epoch_batch_size": int(epoch_batch_size or (128 if gpu else 8)),
        "epoch_limit_batches": int(epoch_limit_batches) if epoch_limit_batches else (None if gpu else 3),
        "epoch_cache": bool(gpu if epoch_cache is None else epoch_cache), "epoch_runs": int(epoch_runs),
        "epoch_args": tuple(str(a) for a in epoch_args or ()),
    }


def check_targets(result: dict) -> dict:
    """Which README targets this run measured, and whether each is met."""
    out: dict = {}
    loader = [r for r in result.get("loader", []) if r["workers"] == 0]
    rate = {r["method"]: r["images_per_s"] for r in loader}
    decoders = [rate[m] for m in ("pil", "opencv", "torchvision") if m in rate]
    if "cache" in rate and decoders:
        ratio = rate["cache"] / max(decoders)
        out["cache_over_fastest_decode_per_core"] = {"value": ratio, "target": TARGETS["cache_over_decode_per_core"],
                                                     "met": ratio >= TARGETS["cache_over_decode_per_core"]}
    cpu_rows = [r for r in result.get("train", []) if result["device"] == "cpu"]
    scale = result.get("scale")
    if scale:
        seconds = scale["setup"]["seconds"]
        out["scale_setup_seconds"] = {"value": seconds, "target": TARGETS["scale_setup_seconds"],
                                      "met": seconds <= TARGETS["scale_setup_seconds"]}
        per_core = max(r["images_per_s"] for r in scale["loader"] if r["workers"] == 0 and "uint8" in r["normalisation"])
        out["scale_loader_per_core_device_norm"] = {"value": per_core, "target": TARGETS["scale_loader_per_core"],
                                                    "met": per_core >= TARGETS["scale_loader_per_core"]}
    if cpu_rows:
        worst = min(r["lightning_over_bare"] for r in cpu_rows)
        out["lightning_over_bare_cpu_worst"] = {"value": worst, "target": TARGETS["lightning_over_bare_cpu"],
                                                "met": worst >= TARGETS["lightning_over_bare_cpu"]}
    gpu = [r for r in result.get("train", []) if result["device"] != "cpu" and r["backbone"] == "densenet121"
           and r["size"] == 224 and "mixed" in r["option"] and "channels_last" in r["option"]]
    if gpu:
        best = max(r["lightning_images_per_s"] for r in gpu)
        out["gpu_densenet121_224_mixed_cl"] = {"value": best, "target": TARGETS["gpu_densenet121_224_images_per_s"],
                                               "met": best >= TARGETS["gpu_densenet121_224_images_per_s"]}
    probe = result.get("probe")
    if probe:
        ratio = probe["finetune_over_probe_later"]
        out["probe_speedup_per_epoch_after_first"] = {"value": ratio, "target": TARGETS["probe_speedup"],
                                                      "met": ratio >= TARGETS["probe_speedup"]}
    epoch = result.get("epoch")
    rates = [r["train_images_per_s"] for r in (epoch or {}).get("runs", []) if r.get("train_images_per_s")]
    if epoch and rates and result["device"] != "cpu" and epoch["model"] == "densenet121" and epoch["size"] == 224:
        best = max(rates)  # the target, through chestx.train itself
        out["gpu_densenet121_224_chestx_train"] = {"value": best, "target": TARGETS["gpu_densenet121_224_images_per_s"],
                                                   "met": best >= TARGETS["gpu_densenet121_224_images_per_s"]}
    return out


def format_table(result: dict) -> str:
    lines = [f"machine: {result['machine']['cpu']} x{result['machine']['cores']}"
             + (f", {result['machine']['gpu']}" if result['machine'].get('gpu') else "")
             + f"; device {result['device']}; torch threads {result['machine'].get('torch_threads')}"
             + f"; load average at start {result['machine'].get('load_avg_1min_at_start')}"]
    if result.get("loader"):
        lines += ["", f"LOADER  ({result['size']} px, images/s; workers 0 = one process, one thread)",
                  f"{'method':<14}{'source':<22}{'workers':>8}{'images/s':>12}"]
        lines += [f"{r['method']:<14}{r['source']:<22}{r['workers']:>8}{r['images_per_s']:>12.1f}" for r in result["loader"]]
    if result.get("train"):
        workers = result["train"][0].get("workers", 0)
        lines += ["", "TRAIN  (images/s through the real Lightning loop vs a bare PyTorch loop, the batches of "
                  f"chestx.train's datamodule: uint8 from the cache, {workers} loader workers, normalised on the device)",
                  f"{'backbone':<13}{'option':<32}{'lightning':>10}{'bare':>10}{'ratio':>7}{'peak MB':>9}"]
        lines += [f"{r['backbone']:<13}{r['option']:<32}{r['lightning_images_per_s']:>10.1f}{r['bare_images_per_s']:>10.1f}"
                  f"{r['lightning_over_bare']:>7.3f}{r['peak_memory_mb']:>9.0f}" for r in result["train"]]
        lines += ["", "INFERENCE", f"{'backbone':<13}{'option':<32}{'images/s':>10}{'peak MB':>9}"]
        lines += [f"{r['backbone']:<13}{r['option']:<32}{r['images_per_s']:>10.1f}{r['peak_memory_mb']:>9.0f}"
                  for r in result["infer"]]
    if result.get("scale"):
        lines += format_scale(result["scale"])
    if result.get("epoch"):
        lines += format_epoch(result["epoch"])
    if result.get("probe"):
        lines += format_probe(result["probe"])
    if result.get("targets"):
        lines += ["", "TARGETS"]
        lines += [f"{k:<40}{v['value']:>12.2f}  (target {v['target']})  {'met' if v['met'] else 'NOT met'}"
                  for k, v in result["targets"].items()]
    return "\n".join(lines)


def run(settings: BenchSettings) -> dict:
    """Measure the parts of `settings`; returns what perf.json holds."""
    started = time.perf_counter()
    paths = _image_paths(settings)
    result = _result_head(settings, paths)
    with tempfile.TemporaryDirectory(prefix="chestx-perf-") as tmp:
        cache_dir = settings.cache_dir or Path(tmp) / "cache"
        _measure_nih_parts(settings, result, cache_dir, settings.scale_dir or Path(tmp) / "scale")
        if not set(settings.parts) & {"loader", "train", "probe"}:
            return _finish(result, started)
        cache = cached_pixels(paths, settings.size, cache_dir=cache_dir, root=settings.images)
        if "loader" in settings.parts:
            result["loader"] = bench_loader(paths, settings.size, cache, settings.workers, settings.min_seconds,
                                            Path(tmp))
        if "train" in settings.parts:
            _measure_train(settings, result, cache, cache_dir, Path(tmp))
        if "probe" in settings.parts:
            _measure_probe(settings, result, cache, cache_dir, Path(tmp))
    return _finish(result, started)


def _measure_probe(settings: BenchSettings, result: dict, cache: CachedPixels, cache_dir: Path, tmp: Path) -> None:
    """The `probe` part: linear probe (cached features) vs fine-tune, seconds per epoch (chestx.throughput.probe)."""
    levels = {name: logging.getLogger(name).level for name in ("lightning.pytorch", "chestx.data", "chestx.models")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.WARNING)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    result["machine"]["torch_threads"] = torch.get_num_threads()
    files = write_resized_pngs(cache, tmp / f"png{settings.size}")
    gpu = settings.device.startswith("cuda")
    try:
        result["probe"] = bench_probe(
            files, settings.probe_backbone or ("densenet121" if gpu else "resnet18"), settings.size,
            settings.batch_size, settings.probe_batches or (20 if gpu else 8), settings.probe_epochs,
            torch.device(settings.device), cache_dir)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _image_paths(settings: BenchSettings) -> list[Path]:
    """The PNG/JPEG files of `settings.images`, sorted; none is an error when the loader or train part runs."""
    images = settings.images
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")) if images.is_dir() \
        else []
    if not paths and set(settings.parts) & {"loader", "train", "probe"}:
        raise FileNotFoundError(f"images={str(images)!r} holds no PNG/JPEG files; pass images=<a folder of images>")
    return paths


def _result_head(settings: BenchSettings, paths: list[Path]) -> dict:
    """The start of perf.json: machine, device, image size and folder, and every setting."""
    device = torch.device(settings.device)
    return {"machine": machine(), "device": device.type, "size": settings.size, "images": str(settings.images),
            "n_images": len(paths),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}}


def _measure_nih_parts(settings: BenchSettings, result: dict, cache_dir: Path, scale_dir: Path) -> None:
    """The `scale` and `epoch` parts (on the simulated full NIH tree in `scale_dir`), those of `settings.parts`."""
    if "scale" in settings.parts:
        result["scale"] = measure_scale(
            settings.scale_nih, SAMPLE_IMAGES, scale_dir, settings.size,
            settings.scale_images, settings.workers, batch_size=64, min_seconds=settings.min_seconds,
            cache_dir=cache_dir)
    if "epoch" in settings.parts:
        result["epoch"] = measure_epoch(
            settings.scale_nih, SAMPLE_IMAGES, scale_dir, settings.size, settings.epoch_model,
            settings.epoch_batch_size, settings.epoch_limit_batches, settings.epoch_cache,
            settings.cache_dir or scale_dir / "cache", settings.epoch_runs, settings.device, settings.epoch_args)


def _measure_train(settings: BenchSettings, result: dict, cache: CachedPixels, cache_dir: Path, tmp: Path) -> None:
    """The `train` part (inference too): Lightning vs bare loops over the cached pixels, quiet loggers meanwhile."""
    levels = {name: logging.getLogger(name).level for name in ("lightning.pytorch", "chestx.data")}
    for name in levels:  # a Trainer and a datamodule per measurement
        logging.getLogger(name).setLevel(logging.WARNING)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    result["machine"]["torch_threads"] = torch.get_num_threads()
    # the cached pixels as size-px PNG files: what BenchData repeats into the rows of a training datamodule
    files = write_resized_pngs(cache, tmp / f"png{settings.size}")
    try:
        result["train"], result["infer"] = bench_training(
            files, settings.backbones, [Option.parse(o) for o in settings.options], settings.size,
            settings.batch_size, settings.batches, settings.warmup, settings.train_workers, settings.repeats,
            torch.device(settings.device), settings.eval_batch_size, cache_dir,
        )
    finally:  # the caller's log levels again (a notebook, or the next test in this process)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _finish(result: dict, started: float) -> dict:
    result["targets"] = check_targets(result)
    result["machine"]["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result["wall_time_s"] = time.perf_counter() - started
    return result


def write_result(result: dict, out_dir: Path) -> Path:
    """perf.json in `out_dir`; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULT_FILE
    path.write_text(json.dumps(result, indent=2))
    return path
