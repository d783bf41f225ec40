"""Loader throughput: decoding the 1024 px originals (Pillow / OpenCV / torchvision) vs the pixel cache."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from chestx.data.images.cache import CachedPixels
from chestx.data.images.read import load_grayscale, resize_square

log = logging.getLogger(__name__)


class Decoder:
    """Picklable `decoder(i) -> (S, S) uint8` over a list of files (or a cache) by method name."""

    def __init__(self, method: str, paths: list[Path], size: int, cache: CachedPixels | None = None) -> None:
        self.method, self.paths, self.size, self.cache = method, [str(p) for p in paths], size, cache

    def __len__(self) -> int:
        return len(self.cache) if self.method == "cache" else len(self.paths)

    def __call__(self, i: int) -> np.ndarray:
        i = i % len(self)
        if self.method == "cache":
            assert self.cache is not None
            return self.cache(i)  # (S, S) uint8 copy out of the mapping
        path = self.paths[i]
        if self.method == "pil":  # Pillow decode, L conversion, antialiased bilinear resize
            with Image.open(path) as im:
                return np.asarray(im.convert("L").resize((self.size, self.size), Image.Resampling.BILINEAR))
        if self.method == "opencv":  # what chestx uses: OpenCV decode + INTER_AREA
            return resize_square(load_grayscale(path), self.size)
        if self.method == "torchvision":
            from torchvision.io import ImageReadMode, decode_image, read_file
            from torchvision.transforms.v2.functional import resize

            img = decode_image(read_file(path), mode=ImageReadMode.GRAY)  # (1, H, W) uint8
            return resize(img, [self.size, self.size], antialias=True)[0].numpy()
        if self.method == "png_resized":  # alternative cache format: one small PNG per image
            return cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        raise ValueError(f"unknown loader method {self.method!r}")


class _Items(Dataset):
    def __init__(self, decoder: Decoder, n: int) -> None:
        self.decoder, self.n = decoder, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        return self.decoder(i)


def _stack(items: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(items))  # (B, S, S) uint8


def per_core(decoder: Decoder, min_seconds: float) -> float:
    """Images/s of one process on one thread (cv2 and torch threads pinned to 1)."""
    threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        decoder(0)  # warm: imports, page cache
        count, started = 0, time.perf_counter()
        while True:
            decoder(count)
            count += 1
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds and count >= len(decoder):
                return count / elapsed
    finally:
        cv2.setNumThreads(threads[0])
        torch.set_num_threads(threads[1])


def with_workers(decoder: Decoder, workers: int, n_items: int, batch_size: int = 16) -> float:
    """Images/s through a DataLoader with `workers` processes (second pass timed; start-up excluded)."""
    loader = DataLoader(_Items(decoder, n_items), batch_size=batch_size, num_workers=workers,
                        collate_fn=_stack, persistent_workers=True)
    for _ in loader:  # first pass: workers start, files reach the page cache
        pass
    started = time.perf_counter()
    count = sum(len(batch) for batch in loader)
    elapsed = time.perf_counter() - started
    del loader
    return count / elapsed


def write_resized_pngs(cache: CachedPixels, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(cache)):
        path = folder / f"{i:06d}.png"
        cv2.imwrite(str(path), cache(i))
        paths.append(path)
    return paths


def bench_loader(
    paths: list[Path], size: int, cache: CachedPixels, workers: list[int], min_seconds: float, tmp: Path,
    methods: tuple[str, ...] = ("pil", "opencv", "torchvision", "png_resized", "cache"),
) -> list[dict]:
    """One row per (method, workers); `workers=0` is the per-core figure."""
    small = write_resized_pngs(cache, tmp / f"png{size}") if "png_resized" in methods else []
    rows: list[dict] = []
    for method in methods:
        decoder = Decoder(method, small if method == "png_resized" else paths, size, cache if method == "cache" else None)
        source = f"{size} px PNG files" if method == "png_resized" else ("cache" if method == "cache" else "1024 px originals")
        rate = per_core(decoder, min_seconds)
        rows.append({"method": method, "source": source, "workers": 0, "images_per_s": rate})
        log.info("loader %-12s per core: %.1f images/s", method, rate)
        for n in workers:
            n_items = max(len(decoder), int(min(rate, 10_000) * n * min_seconds))  # ~min_seconds of work
            rate_n = with_workers(decoder, n, n_items)
            rows.append({"method": method, "source": source, "workers": n, "images_per_s": rate_n})
            log.info("loader %-12s %d workers: %.1f images/s", method, n, rate_n)
    return rows

