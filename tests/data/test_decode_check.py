"""A corrupt image with a valid header (issue 25): a real PNG whose IDAT data is cut, chunk lengths and CRCs fixed,
so the set-up header check passes it and only a decode fails. data.verify_images=decode finds it at set-up and
data.missing_images handles it (drop: dropped and listed in unreadable.csv; error: stops naming every such file);
the pixel cache names every such file; the mid-epoch error says how to find them all up front."""
from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from chestx.core.run_folder import SPLIT_FILE, UNREADABLE_FILE
from chestx.data.datasets.csv import CSVData
from chestx.data.errors import DataError, ImageReadError
from chestx.data.images.cache import UndecodableImagesError, build_cache
from chestx.data.images.check import UnreadableImagesError, probe_image
from chestx.data.images.read import find_undecodable
from chestx.data.loading.datamodule import ChestXDataModule
from chestx.data.loading.dataset import FileSource

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "nih_sample"
GOOD = sorted(p.name for p in (SAMPLE / "images").iterdir())[:3]


def truncated_png(path: Path, size: int = 64, keep: float = 0.3) -> Path:
    """A real PNG with its IDAT data cut to `keep` of it; every chunk length and CRC valid, IEND in place."""
    img = (np.random.default_rng(0).random((size, size)) * 255).astype(np.uint8)  # (S, S) noise: incompressible
    data = cv2.imencode(".png", img)[1].tobytes()
    out, pos = [data[:8]], 8
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IDAT":
            body = body[:int(len(body) * keep)]
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
    path.write_bytes(b"".join(out))
    return path


def folder(root: Path, n_bad: int) -> Path:
    (root / "images").mkdir(parents=True)
    for name in GOOD:
        shutil.copy(SAMPLE / "images" / name, root / "images" / name)
    bad = [truncated_png(root / "images" / f"cut{i}.png").name for i in range(n_bad)]
    rows = GOOD + bad
    lines = ["file,Effusion,split"] + [f"images/{r},{i % 2},{['train', 'val', 'test'][i % 3]}"
                                       for i, r in enumerate(rows)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def csv_data(root: Path, **options: object) -> CSVData:
    return CSVData(root=str(root), csv="labels.csv", image_column="file", findings=["Effusion"],
                   split_column="split", **options)


def test_the_header_passes_and_the_decode_fails(tmp_path: Path) -> None:
    path = truncated_png(tmp_path / "cut.png")
    probe_image(path)  # the set-up header check cannot see it
    [(index, reason)] = find_undecodable([SAMPLE / "images" / GOOD[0], path])
    assert index == 1 and "cut.png" in reason and "truncated" in reason


def test_verify_decode_drops_and_lists(tmp_path: Path) -> None:
    root = folder(tmp_path / "data", n_bad=2)
    header_only = csv_data(root, missing_images="drop")
    header_only.prepare()
    assert len(header_only.paths) == 5  # the default check keeps them: they would fail mid-epoch
    data = csv_data(root, missing_images="drop", verify_images="decode")
    data.save_split(tmp_path / "run" / SPLIT_FILE)
    assert [p.name for p in data.paths] == GOOD
    listed = pd.read_csv(tmp_path / "run" / UNREADABLE_FILE, dtype=str)
    assert listed["image_id"].tolist() == ["images/cut0.png", "images/cut1.png"]
    assert listed["reason"].str.contains("truncated").all()


def test_verify_decode_error_names_every_file(tmp_path: Path) -> None:
    root = folder(tmp_path / "data", n_bad=7)
    with pytest.raises(UnreadableImagesError) as error:
        csv_data(root, verify_images="decode").prepare()
    assert all(f"cut{i}.png" in str(error.value) for i in range(7)), error.value  # all seven, not five
    assert "data.missing_images=drop" in str(error.value)


def test_verify_images_value_checked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.verify_images='pixels' is not one of"):
        csv_data(tmp_path, verify_images="pixels")


def test_mid_epoch_error_says_how_to_find_them_all(tmp_path: Path) -> None:
    path = truncated_png(tmp_path / "cut.png")
    with pytest.raises(ImageReadError, match=r"cut\.png.*data\.verify_images=decode"):
        FileSource([path])(0)


def test_cache_names_every_undecodable_file(tmp_path: Path) -> None:
    paths = [SAMPLE / "images" / GOOD[0]] + [truncated_png(tmp_path / f"cut{i}.png") for i in range(12)]
    with pytest.raises(ImageReadError) as error:
        build_cache(paths, 32, tmp_path / "cache", workers=1)
    message = str(error.value)
    assert "12 of 13" in message and all(f"cut{i}.png" in message for i in range(12)), message
    assert "data.missing_images=drop to drop them" in message
    assert isinstance(error.value, UndecodableImagesError) and [i for i, _ in error.value.failed] == list(range(1, 13))


def test_cache_drops_and_lists_under_drop(tmp_path: Path) -> None:
    """data.cache=true, missing_images=drop: the rows whose file fails to decode in the cache build are dropped,
    listed (unreadable.csv) and the cache holds the rest; under error the set-up stops naming every one."""
    root = folder(tmp_path / "data", n_bad=2)
    data = csv_data(root, missing_images="drop", cache=True, cache_dir=str(tmp_path / "cache"))
    dm = ChestXDataModule(data, image_size=32)
    dm.setup("fit")
    assert [p.name for p in data.paths] == GOOD and len(data.table) == 3
    assert sum(len(d) for d in dm.datasets.values()) == 3
    assert dm.datasets["train"][0]["image"].shape[-1] == 32
    data.save_split(tmp_path / "run" / SPLIT_FILE)
    listed = pd.read_csv(tmp_path / "run" / UNREADABLE_FILE, dtype=str)
    assert listed["image_id"].tolist() == ["images/cut0.png", "images/cut1.png"]
    assert listed["reason"].str.contains("truncated").all()
    assert len(pd.read_csv(tmp_path / "run" / SPLIT_FILE)) == 3
    strict = csv_data(root, cache=True, cache_dir=str(tmp_path / "cache2"))
    with pytest.raises(UnreadableImagesError, match=r"(?s)2 of 5 .*failed to decode.*cut0\.png.*cut1\.png"):
        ChestXDataModule(strict, image_size=32).setup("fit")
