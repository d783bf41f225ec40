"""Pixel cache on real NIH images: identical to the uncached path, reuse / refresh on change,
interrupted builds, corrupt files, one shared mapping across DataLoader workers, and DICOM decoded
once under a decoding rule that is part of the cache's key."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from chestx.data.images import cache as cache_mod
from chestx.data.images.cache import INDEX, PIXELS, CachedPixels, build_cache, cached_pixels
from chestx.data.images.read import ImageReadError, load_grayscale, resize_square
from chestx.data.labels.table import DataError


def _sample_images(sample_root: Path, tmp_path: Path, n: int) -> list[Path]:
    """`n` real 256 px NIH images copied to a folder the test may modify."""
    folder = tmp_path / "images"
    folder.mkdir(parents=True)
    for src in sorted((sample_root / "images").glob("*.png"))[:n]:
        shutil.copy(src, folder)
    return sorted(folder.glob("*.png"))


def _count_decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = cache_mod.load_grayscale

    def counting(path, **options):
        calls.append(str(path))
        return real(path, **options)

    monkeypatch.setattr(cache_mod, "load_grayscale", counting)
    return calls


def _expected(paths: list[Path], size: int) -> np.ndarray:
    return np.stack([resize_square(load_grayscale(p), size) for p in paths])  # (N, S, S) uint8


def test_cache_equals_decoding_on_real_1024px_originals(fullres_fixtures: Path, repo_root: Path,
                                                       tmp_path: Path) -> None:
    paths = sorted(fullres_fixtures.glob("*.png"))  # one RGBA, one L, 1024 px as NIH ships them
    shared = repo_root.parent / "shared" / "data" / "nih" / "fullres1024"
    paths += sorted(shared.glob("*.png"))[:6]
    for size in (224, 97):
        pixels = cached_pixels(paths, size, cache_dir=tmp_path, root=fullres_fixtures.parent, workers=1)
        assert len(pixels) == len(paths)
        for i, path in enumerate(paths):
            got = pixels(i)
            assert got.shape == (size, size) and got.dtype == np.uint8
            np.testing.assert_array_equal(got, resize_square(load_grayscale(path), size))


@pytest.mark.slow
def test_datamodule_cached_items_equal_uncached(sample_root: Path, tmp_path: Path) -> None:
    """The real NIH sample through ChestXDataModule: same tensors with and without data.cache (threaded build)."""
    from chestx.data.loading.datamodule import ChestXDataModule
    from chestx.data.datasets.nih import NIHData

    options = dict(root=str(sample_root), csv=str(sample_root / "Data_Entry_sample.csv"), split="random")
    plain = ChestXDataModule(NIHData(**options), image_size=64)
    cached = ChestXDataModule(NIHData(**options, cache=True, cache_dir=str(tmp_path)), image_size=64)
    plain.setup()
    cached.setup()
    assert isinstance(cached.datasets["test"].pixels, CachedPixels)
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 1, "one cache for the whole dataset, shared by the three splits"
    for name in ("train", "val", "test"):
        a, b = plain.datasets[name], cached.datasets[name]
        assert len(a) == len(b)
        for i in range(0, len(a), max(1, len(a) // 25)):
            np.testing.assert_array_equal(resize_square(a.pixels(i), 64), b.pixels(i))
            if name != "train":  # eval transform is deterministic: whole items must match
                torch.testing.assert_close(a[i]["image"], b[i]["image"], rtol=0, atol=0)


def test_reused_when_valid_refreshed_when_a_file_changes(sample_root: Path, tmp_path: Path, monkeypatch) -> None:
    paths = _sample_images(sample_root, tmp_path, 12)
    calls = _count_decodes(monkeypatch)
    folder = build_cache(paths, 64, cache_dir=tmp_path / "c", root=tmp_path, workers=1)
    assert len(calls) == 12
    assert build_cache(paths, 64, cache_dir=tmp_path / "c", root=tmp_path, workers=1) == folder
    assert len(calls) == 12, "a valid cache must be reused without decoding"

    other = sorted((sample_root / "images").glob("*.png"))[-1]
    shutil.copy(other, paths[3])  # same name, different image: size / mtime change
    calls.clear()
    assert build_cache(paths, 64, cache_dir=tmp_path / "c", root=tmp_path, workers=1) == folder
    assert calls == [str(paths[3])], "only the changed file is decoded again"
    np.testing.assert_array_equal(CachedPixels(folder)(3), resize_square(load_grayscale(other), 64))
    np.testing.assert_array_equal(np.load(folder / PIXELS), _expected(paths, 64))

    calls.clear()
    other_size = build_cache(paths, 48, cache_dir=tmp_path / "c", root=tmp_path, workers=1)
    assert other_size != folder and len(calls) == 12, "another size is another cache"


def test_interrupted_build_never_looks_valid_and_resumes(sample_root: Path, tmp_path: Path, monkeypatch) -> None:
    paths = _sample_images(sample_root, tmp_path, 40)
    monkeypatch.setattr(cache_mod, "CHUNK", 8)
    real = cache_mod.load_grayscale
    calls: list[str] = []

    def dies_after_20(path, **options):
        if len(calls) == 20:
            raise KeyboardInterrupt  # the user presses Ctrl-C mid-build
        calls.append(str(path))
        return real(path, **options)

    monkeypatch.setattr(cache_mod, "load_grayscale", dies_after_20)
    with pytest.raises(KeyboardInterrupt):
        build_cache(paths, 64, cache_dir=tmp_path / "c", root=tmp_path, workers=1)
    built = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert [p.suffix for p in built] == [".partial"], "only a .partial folder may exist after an interruption"
    final = built[0].with_suffix("")
    assert not final.exists() and cache_mod._read_index(built[0])["complete"] is False

    calls.clear()
    monkeypatch.setattr(cache_mod, "load_grayscale", lambda p, **o: (calls.append(str(p)), real(p, **o))[1])
    folder = build_cache(paths, 64, cache_dir=tmp_path / "c", root=tmp_path, workers=1)
    assert folder == final and not built[0].exists()
    assert len(calls) == 40 - 16, "the two chunks finished before the interruption are not decoded again"
    np.testing.assert_array_equal(np.load(folder / PIXELS), _expected(paths, 64))


def test_corrupt_file_is_reported_by_path_then_fixed(sample_root: Path, tmp_path: Path, monkeypatch) -> None:
    paths = _sample_images(sample_root, tmp_path, 10)
    good = paths[4].read_bytes()
    paths[4].write_bytes(good[:300])  # truncated PNG
    with pytest.raises(ImageReadError, match=rf"(?s)1 of 10 images .*{paths[4].name}.*truncated PNG"):
        build_cache(paths, 64, cache_dir=tmp_path / "c", root=tmp_path, workers=1)
    assert not any(json_ok(p) for p in (tmp_path / "c").iterdir() if p.is_dir())
    paths[4].write_bytes(good)
    calls = _count_decodes(monkeypatch)
    folder = build_cache(paths, 64, cache_dir=tmp_path / "c", root=tmp_path, workers=1)
    assert calls == [str(paths[4])]
    np.testing.assert_array_equal(np.load(folder / PIXELS), _expected(paths, 64))


def json_ok(folder: Path) -> bool:
    index = cache_mod._read_index(folder)
    return bool(index and index.get("complete")) and not folder.name.endswith(".partial")


class _MapsProbe(Dataset):
    """Reports, from inside a DataLoader worker, whether the cache file is mapped (not copied)."""

    def __init__(self, pixels: CachedPixels) -> None:
        self.pixels = pixels

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        img = self.pixels(i)
        maps = Path("/proc/self/maps").read_text()
        return {"pid": os.getpid(), "mapped": str(self.pixels.folder / PIXELS) in maps,
                "memmap": isinstance(self.pixels.array, np.memmap), "sum": int(img.sum())}


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_dataloader_workers_share_the_mapped_file(sample_root: Path, tmp_path: Path) -> None:
    paths = _sample_images(sample_root, tmp_path, 8)
    pixels = cached_pixels(paths, 128, cache_dir=tmp_path / "c", root=tmp_path, workers=1).subset([0, 2, 4, 6])
    pixels(0)  # mapped in this process: pickling must still not carry the pixels
    blob = pickle.dumps(pixels)
    assert len(blob) < 2_000 < 4 * 128 * 128
    fresh = pickle.loads(blob)  # what a spawned worker receives; never touched in this process
    loader = DataLoader(_MapsProbe(fresh), batch_size=None, num_workers=2)
    items = list(loader)
    assert fresh._array is None, "the parent never mapped the file: each worker mapped it itself"
    assert {it["pid"] for it in items} - {os.getpid()}, "items came from worker processes"
    assert all(it["mapped"] and it["memmap"] for it in items)
    expected = _expected([paths[i] for i in (0, 2, 4, 6)], 128)
    assert [it["sum"] for it in items] == [int(e.sum()) for e in expected]


@pytest.mark.slow
def test_prepare_cli_builds_the_cache_train_reuses(repo_root: Path, sample_root: Path, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "chestx.prepare", f"data.cache_dir={tmp_path / 'c'}", "data.image_size=64",
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(args, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pixel cache:" in proc.stdout and "621 images" in proc.stdout
    folders = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert len(folders) == 1 and (folders[0] / INDEX).is_file()
    from chestx.data.loading.datamodule import ChestXDataModule
    from chestx.data.datasets.nih import NIHData

    dm = ChestXDataModule(NIHData(root=str(sample_root), csv=str(sample_root / "Data_Entry_sample.csv"),
                                  split="random", cache=True, cache_dir=str(tmp_path / "c")), image_size=64)
    dm.setup()
    assert dm.datasets["train"].pixels.folder == folders[0], "train with data.cache=true reuses prepare's cache"


def _dicom_files(sample_root: Path, tmp_path: Path, n: int) -> list[Path]:
    """`n` DX files (MONOCHROME2, 12 bits stored, window centre / width) with real NIH pixels."""
    import pydicom
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

    folder = tmp_path / "dicom"
    folder.mkdir()
    paths = []
    for i, src in enumerate(sorted((sample_root / "images").glob("*.png"))[:n]):
        stored = np.asarray(Image.open(src).convert("L")).astype(np.uint16) * 16  # (256, 256) 12-bit
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.Modality, ds.PatientID, ds.ViewPosition = "DX", str(i), "PA"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 1500, 1800
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OW"
        if i % 2:
            ds.compress(JPEG2000Lossless, stored)
        ds.save_as(folder / f"{src.stem}.dcm", enforce_file_format=True)
        paths.append(folder / f"{src.stem}.dcm")
    assert pydicom.dcmread(paths[1]).file_meta.TransferSyntaxUID == JPEG2000Lossless
    return paths


def test_dicom_decoded_once_and_the_rule_keys_the_cache(sample_root: Path, tmp_path: Path, monkeypatch) -> None:
    paths = _dicom_files(sample_root, tmp_path, 6)
    calls = _count_decodes(monkeypatch)
    voi = build_cache(paths, 64, cache_dir=tmp_path / "c", root=tmp_path, workers=1)
    assert len(calls) == 6
    index = json.loads((voi / INDEX).read_text())
    assert index["decoding"] == {"version": cache_mod.DECODE_VERSION, "dicom_window": "voi"}
    np.testing.assert_array_equal(np.load(voi / PIXELS), np.stack(
        [resize_square(load_grayscale(p, dicom_window="voi"), 64) for p in paths]))
    spec = cache_mod.CacheSpec(paths, 64, "area", tmp_path, "voi")
    assert list(cache_mod._changed_rows(index, spec, cache_mod.file_stats(paths))) == []
    other_rule = {**index, "decoding": {**index["decoding"], "dicom_window": "minmax"}}
    assert cache_mod._changed_rows(other_rule, spec, cache_mod.file_stats(paths)) is None, "another rule, another cache"
    calls.clear()
    assert cached_pixels(paths, 64, cache_dir=tmp_path / "c", root=tmp_path, workers=1).folder == voi
    assert calls == [], "DICOM is decoded once: a valid cache is reused"

    minmax = build_cache(paths, 64, cache_dir=tmp_path / "c", root=tmp_path, workers=1, dicom_window="minmax")
    assert minmax != voi and len(calls) == 6, "another data.dicom_window is another cache"
    expected = np.stack([resize_square(load_grayscale(p, dicom_window="minmax"), 64) for p in paths])
    np.testing.assert_array_equal(np.load(minmax / PIXELS), expected)
    assert not np.array_equal(np.load(minmax / PIXELS), np.load(voi / PIXELS))
    assert voi.exists(), "the other rule's cache stays valid"

    calls.clear()
    monkeypatch.setattr(cache_mod, "DECODE_VERSION", cache_mod.DECODE_VERSION + 1)  # the decoder changed
    rebuilt = build_cache(paths, 64, cache_dir=tmp_path / "c", root=tmp_path, workers=1)
    assert rebuilt != voi and len(calls) == 6, "a new decoder version re-decodes"

    with pytest.raises(DataError, match=r"data\.dicom_window='lut'"):
        build_cache(paths, 64, cache_dir=tmp_path / "c", root=tmp_path, dicom_window="lut")
