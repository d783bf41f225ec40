"""Resize-once pixel cache: every image decoded a single time into one memory-mapped uint8 array.

Layout of one cache (a folder under `cache_dir`, named after the dataset root, size and a hash of
the ordered file list):

    pixels.npy   (N, S, S) uint8, NumPy .npy format, opened with `np.load(mmap_mode="r")`
    index.json   format version, size, interpolation, decoding rule, root, relative paths,
                 (bytes, mtime_ns) per file

Why this format: reading one 224 px image is a page-cache memcpy (134,102 images/s on one core of an
idle 2-core Intel Xeon @ 2.80 GHz VM, `make perf`), against 1,687/s for re-decoding 224 px PNG files and
77/s for decoding + resizing the 1024 px originals (docs/scaling.md, "Measured with make perf"). DataLoader
workers share the mapping through the page cache: `CachedPixels` pickles only the file name, and each process maps the file on first use.

Validity: a cache is used only if its folder has a complete `index.json` whose size, interpolation,
decoding rule (`chestx.data.images.read.DECODE_VERSION` and `data.dicom_window`: DICOM files are
windowed once, here, so another window is another cache) and per-file (bytes, mtime_ns) match the
source files. Files that changed are re-decoded, nothing
else. Builds happen in `<name>.partial/` and become valid through one atomic `os.replace` of the
folder, so an interrupted build never leaves a folder that looks valid; a `done.npy` bitmap makes
the next build resume where the last one stopped. A file lock serialises builders (DDP ranks).
Pixels are `resize_square(load_grayscale(path, dicom_window), size, interpolation)`, the exact calls
of the uncached path (chestx.data.loading.transforms), so cached and uncached pixels are identical; DICOM
files, slow to decode, are decoded once (`python -m chestx.prepare`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from chestx.data.images.read import (
    DECODE_VERSION, INTERPOLATIONS, ImageReadError, check_dicom_window, load_grayscale, resize_square,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PIXELS = "pixels.npy"
INDEX = "index.json"
DONE = "done.npy"
CHUNK = 64  # at most this many images per worker task


def default_cache_dir() -> Path:
    """`$CHESTX_CACHE_DIR`, else `$XDG_CACHE_HOME/chestx`, else `~/.cache/chestx`."""
    if os.environ.get("CHESTX_CACHE_DIR"):
        return Path(os.environ["CHESTX_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "chestx"


# ------------------------------------------------------------------------------------ reading
class CachedPixels:
    """Picklable `PixelSource` over a built cache: `pixels(i)` -> (S, S) uint8 of row `rows[i]`."""

    def __init__(self, folder: Path, rows: np.ndarray | None = None) -> None:
        self.folder = Path(folder)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:  # mapped lazily, once per process (DataLoader workers included)
            self._array = np.load(self.folder / PIXELS, mmap_mode="r", allow_pickle=False)  # (N, S, S) uint8 memmap
        return self._array

    def subset(self, rows: Sequence[int] | np.ndarray) -> "CachedPixels":
        rows = np.asarray(rows, dtype=np.int64)
        return CachedPixels(self.folder, rows if self.rows is None else self.rows[rows])

    def __len__(self) -> int:
        return len(self.array) if self.rows is None else len(self.rows)

    def __call__(self, i: int) -> np.ndarray:
        row = int(i) if self.rows is None else int(self.rows[i])
        return np.array(self.array[row])  # (S, S) uint8, a private copy (augmentations write to it)

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "rows": self.rows, "_array": None}  # never the pixels

    def __repr__(self) -> str:
        return f"CachedPixels({str(self.folder)!r}, {len(self)} images)"


# ------------------------------------------------------------------------------------ keying
@dataclass
class CacheSpec:
    """What a cache holds: which files (in row order), at which size and interpolation, decoded by which rule."""

    paths: list[Path]
    size: int
    interpolation: str
    root: Path | None
    dicom_window: str = "voi"

    def __post_init__(self) -> None:
        root = os.path.abspath(self.root) if self.root is not None else None
        self.root_abs = root
        rel = []
        for p in self.paths:  # abspath, not resolve(): no system call per file
            p = os.path.abspath(p)
            rel.append(os.path.relpath(p, root) if root is not None and p.startswith(root + os.sep) else p)
        self.relative = rel

    @property
    def decoding(self) -> dict:
        """The decoding rule of the pixels: load_grayscale's version and data.dicom_window."""
        return {"version": DECODE_VERSION, "dicom_window": self.dicom_window}

    def folder_name(self) -> str:
        digest = hashlib.sha256(
            json.dumps([FORMAT_VERSION, self.decoding, self.root_abs, self.size, self.interpolation,
                        self.relative]).encode()
        ).hexdigest()[:16]
        name = (os.path.basename(self.root_abs) if self.root_abs else "") or "images"
        return f"{name}-{self.size}px-{self.interpolation}-{digest}"


def file_stats(paths: Sequence[Path]) -> list[list[int]]:
    """(bytes, mtime_ns) of every file; (-1, -1) when it cannot be stat-ed."""
    stats = []
    for p in paths:
        try:
            st = os.stat(p)
            stats.append([int(st.st_size), int(st.st_mtime_ns)])
        except OSError:
            stats.append([-1, -1])
    return stats


def _read_index(folder: Path) -> dict | None:
    try:
        return json.loads((folder / INDEX).read_text())
    except (OSError, ValueError):
        return None


def _write_index(folder: Path, index: dict) -> None:
    tmp = folder / (INDEX + ".tmp")
    with open(tmp, "w") as f:
        json.dump(index, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / INDEX)


def _changed_rows(index: dict, spec: CacheSpec, stats: list[list[int]]) -> np.ndarray | None:
    """Rows whose file changed since `index` was written; None when the index is for another spec."""
    same = (
        index.get("version") == FORMAT_VERSION and index.get("size") == spec.size
        and index.get("interpolation") == spec.interpolation and index.get("decoding") == spec.decoding
        and index.get("paths") == spec.relative
    )
    if not same:
        return None
    old = np.asarray(index.get("stats", []), dtype=np.int64).reshape(-1, 2)
    new = np.asarray(stats, dtype=np.int64).reshape(-1, 2)
    if old.shape != new.shape:
        return None
    return np.flatnonzero((old != new).any(axis=1))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (POSIX flock); a no-op where fcntl does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------ building
def _decode_chunk(out: np.ndarray, rows: list[int], paths: list[str], size: int, interpolation: str,
                  dicom_window: str = "voi") -> tuple[list[int], list[tuple[int, str]]]:
    """Decode + resize `rows` into the mapped array `out`; returns rows written and (row, error message)."""
    written, errors = [], []
    for row, path in zip(rows, paths):
        try:
            image = load_grayscale(path, dicom_window=dicom_window)  # (H, W) uint8
            out[row] = resize_square(image, size, interpolation)  # (S, S) uint8
            written.append(row)
        except ImageReadError as err:
            errors.append((row, str(err)))
    return written, errors


def _chunks(todo: np.ndarray, workers: int) -> list[list[int]]:
    chunk = max(1, min(CHUNK, -(-len(todo) // (4 * workers))))  # >= 4 tasks per worker for balance
    return [[int(r) for r in todo[start:start + chunk]] for start in range(0, len(todo), chunk)]


def _progress(total: int, initial: int, desc: str):
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit="img", dynamic_ncols=True, mininterval=1.0)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None


def _fill(partial: Path, spec: CacheSpec, todo: np.ndarray, workers: int) -> list[tuple[int, str]]:
    """Decode rows `todo` into `partial/pixels.npy`, ticking `partial/done.npy`; returns (row, error message).

    Threads, not processes: OpenCV releases the GIL while it decodes and resizes, so threads scale
    over cores without the seconds of imports a spawned process costs, and all write to one mapping.
    """
    out = np.load(partial / PIXELS, mmap_mode="r+", allow_pickle=False)  # (N, S, S) uint8
    done = np.load(partial / DONE, mmap_mode="r+", allow_pickle=False)  # (N,) bool
    paths = [str(p) for p in spec.paths]
    bar = _progress(len(done), int(done.sum()), f"pixel cache {spec.size}px")
    errors: list[tuple[int, str]] = []
    started, count = time.perf_counter(), 0

    def task(rows: list[int]) -> tuple[list[int], list[tuple[int, str]]]:
        return _decode_chunk(out, rows, [paths[r] for r in rows], spec.size, spec.interpolation, spec.dicom_window)

    def record(result: tuple[list[int], list[tuple[int, str]]]) -> None:
        nonlocal count
        written, errs = result
        _tick(out, done, written)
        errors.extend(errs)
        count += len(written) + len(errs)
        if bar is not None:
            bar.update(len(written) + len(errs))

    try:
        _run_chunks(_chunks(todo, workers), task, record, workers)
    finally:
        if bar is not None:
            bar.close()
        del out, done
    elapsed = time.perf_counter() - started
    log.info("Decoded %d images in %.1f s (%.0f images/s, %d threads)", count, elapsed, count / max(elapsed, 1e-9), workers)
    return errors


def _tick(out: np.ndarray, done: np.ndarray, written: list[int]) -> None:
    """Mark `written` rows done, after their pixels reach the file (a resumed build trusts every ticked row)."""
    out.flush()  # pixels reach the file before their rows are ticked
    done[written] = True
    done.flush()


def _run_chunks(chunks: list[list[int]], task: Callable[[list[int]], tuple[list[int], list[tuple[int, str]]]],
                record: Callable[[tuple[list[int], list[tuple[int, str]]]], None], workers: int) -> None:
    """`record(task(rows))` per chunk: in this thread, or on `workers` threads (the pending ones cancelled on error)."""
    if workers <= 1:
        for rows in chunks:
            record(task(rows))
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = [pool.submit(task, rows) for rows in chunks]
        try:
            for future in as_completed(pending):
                record(future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def build_cache(
    paths: Sequence[str | Path],
    size: int,
    cache_dir: str | Path | None = None,
    root: str | Path | None = None,
    interpolation: str = "area",
    workers: int | None = None,
    dicom_window: str = "voi",
) -> Path:
    """Build (or validate / resume / refresh) the cache of `paths` at `size`; returns its folder.

    `dicom_window` (data.dicom_window) is part of the cache's key: DICOM files are windowed once, here.
    """
    spec = _checked_spec(paths, size, root, interpolation, dicom_window)
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    final = base / spec.folder_name()
    partial = base / (final.name + ".partial")
    workers = workers or os.cpu_count() or 1
    with _locked(base / (final.name + ".lock")):
        stats = file_stats(spec.paths)
        if _final_is_current(final, partial, spec, stats):
            return final
        _prepare_partial(partial, spec, stats)
        todo = _rows_to_decode(partial, final, spec, workers)
        _raise_on_unreadable(_fill(partial, spec, todo, workers), spec, partial)
        _publish(partial, final, spec, stats)
    return final


def _checked_spec(paths: Sequence[str | Path], size: int, root: str | Path | None, interpolation: str,
                  dicom_window: str) -> CacheSpec:
    """The `CacheSpec` of a build, its arguments checked first (each bad value named)."""
    check_dicom_window(dicom_window)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"data.cache interpolation={interpolation!r} is not one of {list(INTERPOLATIONS)}")
    if int(size) < 1:
        raise ValueError(f"data.image_size={size} must be a positive number of pixels for the pixel cache")
    spec = CacheSpec([Path(p) for p in paths], int(size), interpolation, Path(root).expanduser() if root else None,
                     dicom_window)
    if not spec.paths:
        raise ValueError("the pixel cache got no image paths: check data.root and the split")
    return spec


def _final_is_current(final: Path, partial: Path, spec: CacheSpec, stats: list[list[int]]) -> bool:
    """True when `final` is valid as is; else it is moved to `partial` for a refresh, or removed when stale."""
    index = _read_index(final)
    changed = _changed_rows(index, spec, stats) if index is not None else None
    pixels_ok = changed is not None and _pixels_ok(final, spec)
    if pixels_ok and len(changed) == 0:
        log.info("Using the pixel cache %s (%d images at %d px)", final, len(spec.paths), spec.size)
        return True
    if pixels_ok:  # refresh only the files that changed
        log.info("%d source files changed since the cache was built (first: %s); re-decoding them",
                 len(changed), spec.paths[changed[0]])
        _reopen_for_refresh(final, partial, len(spec.paths))
    elif final.exists():
        log.info("Pixel cache %s is stale or incomplete; rebuilding it", final)
        shutil.rmtree(final)
    return False


def _reopen_for_refresh(final: Path, partial: Path, n: int) -> None:
    """Move the built cache back to `partial` with every row ticked (`_prepare_partial` un-ticks the changed ones)."""
    shutil.rmtree(partial, ignore_errors=True)
    os.replace(final, partial)  # from here the cache is invalid until the final rename
    done = np.lib.format.open_memmap(partial / DONE, mode="w+", dtype=np.bool_, shape=(n,))
    done[:] = True  # _prepare_partial un-ticks the changed rows
    done.flush()
    del done


def _rows_to_decode(partial: Path, final: Path, spec: CacheSpec, workers: int) -> np.ndarray:
    """The rows `partial/done.npy` has not ticked yet (N',) int64; logs a resume or a fresh build."""
    done = np.load(partial / DONE, allow_pickle=False)  # (N,) bool
    todo = np.flatnonzero(~done)
    if len(todo) < len(done):
        log.info("Resuming the pixel cache build in %s: %d of %d images already done", partial, len(done) - len(todo), len(done))
    else:
        log.info("Building the pixel cache %s: %d images at %d px (%s), %d workers", final, len(todo), spec.size,
                 spec.interpolation, workers)
    return todo


class UndecodableImagesError(ImageReadError):
    """Files that failed to decode while the cache was built; `failed`: (row of `paths`, reason) of every one, so
    that the dataset can drop them (data.missing_images=drop) and build the cache of the rest."""

    def __init__(self, message: str, failed: list[tuple[int, str]]) -> None:
        super().__init__(message)
        self.failed = failed


def _raise_on_unreadable(errors: list[tuple[int, str]], spec: CacheSpec, partial: Path) -> None:
    """One ImageReadError naming every file that failed to decode, if any; the partial cache stays to resume."""
    if not errors:
        return
    errors = sorted(errors)
    shown = "\n  ".join(reason for _, reason in errors)
    raise UndecodableImagesError(
        f"{len(errors)} of {len(spec.paths)} images could not be decoded while building the pixel cache "
        f"(data.cache=true); the partial cache in {partial} resumes once they are fixed or removed; or set "
        f"data.missing_images=drop to drop them (listed, with their reasons, in the run folder's unreadable.csv). "
        f"All of them:\n  {shown}",
        errors,
    )


def _publish(partial: Path, final: Path, spec: CacheSpec, stats: list[list[int]]) -> None:
    """Write the complete index and rename `partial` to `final`: the cache becomes valid in one atomic step."""
    _write_index(partial, {**_index_head(spec), "stats": stats, "complete": True})
    (partial / DONE).unlink()
    os.replace(partial, final)  # atomic: the cache becomes valid in one step
    log.info("Pixel cache ready: %s (%.1f MB)", final, (final / PIXELS).stat().st_size / 2**20)


def _index_head(spec: CacheSpec) -> dict:
    return {
        "version": FORMAT_VERSION, "size": spec.size, "interpolation": spec.interpolation,
        "decoding": spec.decoding, "root": spec.root_abs, "paths": spec.relative,
    }


def _pixels_ok(folder: Path, spec: CacheSpec) -> bool:
    try:
        array = np.load(folder / PIXELS, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return array.shape == (len(spec.paths), spec.size, spec.size) and array.dtype == np.uint8


def _prepare_partial(partial: Path, spec: CacheSpec, stats: list[list[int]]) -> None:
    """Reuse `partial` if it was started for this spec (files that changed meanwhile are redone), else start fresh."""
    index = _read_index(partial)
    changed = _changed_rows(index, spec, stats) if index is not None else None
    if changed is not None and _pixels_ok(partial, spec) and (partial / DONE).exists():
        if len(changed):
            done = np.load(partial / DONE, mmap_mode="r+", allow_pickle=False)
            done[changed] = False
            done.flush()
            del done
        _write_index(partial, {**_index_head(spec), "stats": stats, "complete": False})
        return
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    n = len(spec.paths)
    np.lib.format.open_memmap(partial / PIXELS, mode="w+", dtype=np.uint8, shape=(n, spec.size, spec.size)).flush()
    np.lib.format.open_memmap(partial / DONE, mode="w+", dtype=np.bool_, shape=(n,)).flush()
    _write_index(partial, {**_index_head(spec), "stats": stats, "complete": False})


def cached_pixels(
    paths: Sequence[str | Path],
    image_size: int,
    cache_dir: str | Path | None = None,
    root: str | Path | None = None,
    interpolation: str = "area",
    workers: int | None = None,
    dicom_window: str = "voi",
) -> CachedPixels:
    """Build or reuse the cache of `paths` and return a `PixelSource` indexed like `paths`."""
    return CachedPixels(build_cache(paths, image_size, cache_dir, root, interpolation, workers, dicom_window))
