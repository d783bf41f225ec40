"""`python -m chestx.bench` / `make perf`: loader, training and inference throughput; prints a table, writes bench.json.

    python -m chestx.bench                                  # quick default: a few minutes on a 2-core CPU
    python -m chestx.bench --full                           # every backbone, every option, more batches
    python -m chestx.bench --backbones densenet121 --options 16+cl bf16+cl 16+cl+compile --batch-size 64
    python -m chestx.bench --images /data/ChestX-ray14/images_001/images --parts loader

Defaults: images from ../shared/data/nih/fullres1024 (real 1024 px NIH PNGs; the embedded 256 px
sample if absent), 224 px, CUDA when available. `make perf ARGS="--full"` passes options through.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from chestx.bench.loader import bench_loader
from chestx.bench.training import Option, bench_training
from chestx.config import REPO_DIR
from chestx.data.cache import cached_pixels

log = logging.getLogger("chestx.bench")

DEFAULT_IMAGES = REPO_DIR.parent / "shared" / "data" / "nih" / "fullres1024"
FALLBACK_IMAGES = REPO_DIR / "data" / "nih_sample" / "images"
ALL_BACKBONES = ["densenet121", "resnet18", "resnet50", "mobilenetv2", "inceptionv3", "vgg16", "resnet56v2"]
TARGETS = {"cache_over_decode_per_core": 50.0, "lightning_over_bare_cpu": 0.90, "gpu_densenet121_224_images_per_s": 2000.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(prog="python -m chestx.bench", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images", type=Path, default=None, help="folder of PNG/JPEG files (default: the 1024 px NIH originals)")
    p.add_argument("--size", type=int, default=224, help="image size of the cache and the models")
    p.add_argument("--parts", nargs="+", default=["loader", "train"], choices=["loader", "train"],
                   help="'train' also measures inference")
    p.add_argument("--workers", type=int, nargs="+", default=[os.cpu_count() or 1], help="DataLoader worker counts for the loader part")
    p.add_argument("--backbones", nargs="+", default=None, help=f"default: densenet121 on GPU, resnet18 on CPU; --full: {ALL_BACKBONES}")
    p.add_argument("--options", nargs="+", default=None,
                   help="training options: 32|bf16|16 [+cl] [+compile]; default CPU: 32 32+cl bf16, GPU: 32 16+cl bf16+cl")
    p.add_argument("--batch-size", type=int, default=64 if cuda else 8)
    p.add_argument("--eval-batch-size", type=int, default=128 if cuda else 16)
    p.add_argument("--batches", type=int, default=30 if cuda else 4, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, default=5 if cuda else 1, help="untimed batches first (compile, cudnn autotune)")
    p.add_argument("--train-workers", type=int, default=min(8, os.cpu_count() or 1) if cuda else 0)
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats of each Lightning/bare pair; best is kept")
    p.add_argument("--min-seconds", type=float, default=2.0, help="minimum time per loader measurement")
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--threads", type=int, default=None if cuda else 1,
                   help="torch intra-op threads for the train part (0: torch's choice). CPU default 1: the Lightning/bare "
                        "ratio does not depend on it, and OpenMP threads collapse on a shared, loaded CPU")
    p.add_argument("--cache-dir", type=Path, default=None, help="where the cache goes (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=Path("bench.json"))
    p.add_argument("--full", action="store_true", help="every backbone, compile too, more batches")
    args = p.parse_args(argv)
    if args.images is None:
        args.images = DEFAULT_IMAGES if DEFAULT_IMAGES.is_dir() else FALLBACK_IMAGES
    if args.backbones is None:
        args.backbones = ALL_BACKBONES if args.full else (["densenet121"] if cuda else ["resnet18"])
    if args.options is None:
        base = ["32", "16+cl", "bf16+cl"] if cuda else ["32", "32+cl", "bf16"]
        args.options = base + (["16+cl+compile" if cuda else "32+compile"] if args.full else [])
    if args.full and args.batches < 10:
        args.batches = 10
    return args


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


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
    return out


def format_table(result: dict) -> str:
    lines = [f"machine: {result['machine']['cpu']} x{result['machine']['cores']}"
             + (f", {result['machine']['gpu']}" if "gpu" in result["machine"] else "")
             + f"; device {result['device']}; torch threads {result['machine'].get('torch_threads')}"
             + f"; load average at start {result['machine']['load_average_start']}"]
    if result.get("loader"):
        lines += ["", f"LOADER  ({result['size']} px, images/s; workers 0 = one process, one thread)",
                  f"{'method':<14}{'source':<22}{'workers':>8}{'images/s':>12}"]
        lines += [f"{r['method']:<14}{r['source']:<22}{r['workers']:>8}{r['images_per_s']:>12.1f}" for r in result["loader"]]
    if result.get("train"):
        lines += ["", "TRAIN  (images/s through the real Lightning loop vs a bare PyTorch loop, same batches)",
                  f"{'backbone':<13}{'option':<32}{'lightning':>10}{'bare':>10}{'ratio':>7}{'peak MB':>9}"]
        lines += [f"{r['backbone']:<13}{r['option']:<32}{r['lightning_images_per_s']:>10.1f}{r['bare_images_per_s']:>10.1f}"
                  f"{r['lightning_over_bare']:>7.3f}{r['peak_memory_mb']:>9.0f}" for r in result["train"]]
        lines += ["", "INFERENCE", f"{'backbone':<13}{'option':<32}{'images/s':>10}{'peak MB':>9}"]
        lines += [f"{r['backbone']:<13}{r['option']:<32}{r['images_per_s']:>10.1f}{r['peak_memory_mb']:>9.0f}"
                  for r in result["infer"]]
    if result.get("targets"):
        lines += ["", "TARGETS"]
        lines += [f"{k:<40}{v['value']:>12.2f}  (target {v['target']})  {'met' if v['met'] else 'NOT met'}"
                  for k, v in result["targets"].items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not paths:
        raise FileNotFoundError(f"--images={str(args.images)!r} holds no PNG/JPEG files; pass a folder of images")
    device = torch.device(args.device)
    result: dict = {"machine": machine(), "device": device.type, "size": args.size, "images": str(args.images),
                    "n_images": len(paths), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="chestx-bench-") as tmp:
        cache_dir = args.cache_dir or Path(tmp) / "cache"
        cache = cached_pixels(paths, args.size, cache_dir=cache_dir, root=args.images)
        if "loader" in args.parts:
            result["loader"] = bench_loader(paths, args.size, cache, args.workers, args.min_seconds, Path(tmp))
        if "train" in args.parts:
            if args.threads:
                torch.set_num_threads(args.threads)
            result["machine"]["torch_threads"] = torch.get_num_threads()
            result["train"], result["infer"] = bench_training(
                cache, args.backbones, [Option.parse(o) for o in args.options], args.size, args.batch_size,
                args.batches, args.warmup, args.train_workers, args.repeats, device, args.eval_batch_size,
            )
    result["targets"] = check_targets(result)
    result["machine"]["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result["wall_time_s"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    args = parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(format_table(result))
    print(f"\nwritten: {args.out}  ({result['wall_time_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
