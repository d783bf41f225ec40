"""Pointing game on SIIM-ACR's run-length masks (issue 18) and blank image ids in region files.

A peak on a pneumothorax pixel of the image's decoded masks is a hit; a peak inside the masks' bounding box but off
the mask is a miss (the earlier box rule called it a hit). Masks come from the real train-rle.csv rows, decoded here
by an independent transcription of the competition's `rle2mask` loop (mask_functions.py), not chestx's decoder.
Fast: no model; `pointing_game_rows` gets a stand-in predictor whose heatmap peaks are placed by the test.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chestx.data.labels.table import DataError
from chestx.explain.pointing_game import Region, pointing_game, pointing_game_rows, read_bbox_list, read_boxes

SIIM_GZ = "siim/siim-pneumothorax-train-rle.csv.gz"
SIZE = 1024


def ref_rle2mask(rle: str, width: int = SIZE, height: int = SIZE) -> np.ndarray:
    """The competition's loop (relative starts, column-major), transposed to (H, W) bool."""
    mask = np.zeros(width * height, dtype=bool)
    array = np.asarray([int(v) for v in rle.split()])
    position = 0
    for start, length in zip(array[0::2], array[1::2]):
        position += start
        mask[position:position + length] = True
        position += length
    return mask.reshape(width, height).T


@pytest.fixture(scope="module")
def siim_raw(shared_data: Path) -> pd.DataFrame:
    with gzip.open(shared_data / SIIM_GZ, "rt") as handle:
        return pd.read_csv(handle, dtype=str)


@pytest.fixture(scope="module")
def one_image(siim_raw: pd.DataFrame, tmp_path_factory) -> tuple[Path, str, np.ndarray]:
    """The real rows (real header) of the first image with several masks: file, ImageId, union of its masks."""
    encoded = siim_raw[" EncodedPixels"].str.strip()
    counts = siim_raw.loc[encoded != "-1", "ImageId"].value_counts()
    image_id = counts.index[counts >= 2][0]
    rows = siim_raw[siim_raw["ImageId"] == image_id]
    path = tmp_path_factory.mktemp("siim") / "train-rle.csv"
    rows.to_csv(path, index=False)
    union = np.logical_or.reduce([ref_rle2mask(r.strip()) for r in rows[" EncodedPixels"]])
    return path, image_id, union


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    r, c = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(c[0]), int(r[0]), int(c[-1] - c[0] + 1), int(r[-1] - r[0] + 1)


def _cells(mask: np.ndarray, size: int, on: bool) -> tuple[int, int]:
    """A cam pixel (row, col) at `size` whose centre's mask pixel is on (or off) the mask, inside its bounding box."""
    x, y, w, h = _bbox(mask)
    step = SIZE / size
    for row in range(size):
        for col in range(size):
            r, c = int((row + 0.5) * step), int((col + 0.5) * step)
            if x <= c < x + w and y <= r < y + h and row >= y / step and col >= x / step and mask[r, c] == on:
                return row, col
    raise AssertionError("no such pixel")


def _peaked(size: int, row: int, col: int) -> np.ndarray:
    cam = np.zeros((size, size), dtype=np.float32)
    cam[row, col] = 1.0
    return cam


def test_siim_file_reads_as_one_mask_region_per_image(one_image) -> None:
    path, image_id, union = one_image
    regions = read_boxes(path)
    assert len(regions) == 1 and regions["region"].tolist() == ["mask"]
    row = regions.iloc[0]
    assert row["image_id"] == f"{image_id}.dcm" and row["pathology"] == "Pneumothorax" and row["source_size"] == SIZE
    assert (row["x"], row["y"], row["w"], row["h"]) == _bbox(union)  # bounding box of the union of its masks
    assert len(row["masks"]) >= 2


@pytest.mark.parametrize("size", [SIZE, 256, 224])
def test_peak_in_the_bounding_box_but_off_the_mask_is_a_miss(one_image, size: int) -> None:
    _, _, union = one_image
    region = Region.of_mask(union)
    assert region.kind == "mask" and region.box == tuple(float(v) for v in _bbox(union))
    off, on = _cells(union, size, on=False), _cells(union, size, on=True)
    scaled_box = region.scaled(size).box
    assert pointing_game(_peaked(size, *off), scaled_box)  # the old box rule: a hit
    assert not pointing_game(_peaked(size, *off), region)  # the mask: a miss
    assert pointing_game(_peaked(size, *on), region)
    assert not pointing_game(np.zeros((size, size)), region)  # constant heatmap: no peak


class _StandIn:
    """The three things `pointing_game_rows` asks of a predictor; the heatmaps peak where the test says."""

    pathologies = ["Atelectasis", "Pneumothorax"]
    image_size = 256

    def __init__(self, peaks: list[tuple[int, int]]) -> None:
        self.peaks = peaks

    def cams(self, x: torch.Tensor, classes, target_layer=None) -> np.ndarray:
        assert [list(c) for c in classes] == [[1]] * len(self.peaks)
        return np.stack([_peaked(self.image_size, r, c) for r, c in self.peaks])


def test_pointing_game_rows_score_the_mask(one_image, tmp_path: Path) -> None:
    path, image_id, union = one_image
    regions = read_boxes(path)
    size = _StandIn.image_size
    off, on = _cells(union, size, on=False), _cells(union, size, on=True)
    for peak, hit in ((off, False), (on, True)):
        image = np.full((512, 512), 100, dtype=np.uint8)  # loaded at another size than the 1024 px masks
        rows = pointing_game_rows(_StandIn([peak]), [f"{image_id}.png"], [image], torch.zeros(1, 3, size, size),
                                  np.array([[0.1, 0.9]]), regions, heatmap_dir=tmp_path / "heat")
        assert len(rows) == 1
        row = rows[0]
        assert row["hit"] is hit and row["region"] == "mask" and (row["peak_row"], row["peak_col"]) == peak
        assert (row["x"], row["y"], row["w"], row["h"]) == tuple(v * size / SIZE for v in _bbox(union))
        assert list(row)[:12] == ["image_id", "pathology", "probability", "x", "y", "w", "h", "cam_size", "peak_row",
                                  "peak_col", "constant_cam", "hit"]  # the columns before issue 18, in order
    assert (tmp_path / "heat" / f"{image_id}_Pneumothorax_mask.png").is_file()


def test_mask_tolerance_reaches_nearby_mask_pixels() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[2, 5] = True
    region = Region.of_mask(mask)
    assert region.box == (5.0, 2.0, 1.0, 1.0)
    assert region.contains(5, 2) and not region.contains(4, 2) and not region.contains(7, 2)
    assert region.contains(4, 2, tolerance=1) and region.contains(6, 3, tolerance=1)
    assert not region.contains(7, 2, tolerance=1) and region.contains(7, 2, tolerance=2)
    half = region.scaled(4)  # a 4 px cam over the 8 px mask: cam pixel (1, 2) has its centre on mask pixel (3, 5)
    assert not half.contains(2, 1) and half.contains(2, 1, tolerance=0.5)
    with pytest.raises(ValueError, match="no pixel set"):
        Region.of_mask(np.zeros((4, 4), dtype=bool))


def test_box_files_keep_boxes(nih_dir: Path) -> None:
    boxes = read_boxes(nih_dir / "BBox_List_2017.csv")
    assert len(boxes) == 984 and set(boxes["region"]) == {"box"} and boxes["masks"].isna().all()
    assert (boxes["source_size"] == 1024).all()


def test_blank_image_index_is_refused_with_file_and_lines(nih_dir: Path, tmp_path: Path) -> None:
    lines = (nih_dir / "BBox_List_2017.csv").read_text().splitlines()[:6]  # the real header quirks and rows
    lines[2] = "," + lines[2].split(",", 1)[1]  # line 3: no Image Index
    lines[4] = "  ," + lines[4].split(",", 1)[1]  # line 5: only spaces
    bad = tmp_path / "BBox_List_2017.csv"
    bad.write_text("\n".join(lines) + "\n")
    for read in (read_bbox_list, read_boxes):
        with pytest.raises(DataError, match=r"BBox_List_2017\.csv.*2 rows .* blank 'Image Index' \(line 3, 5\)"):
            read(bad)


def test_blank_vindr_image_id_is_refused(shared_data: Path, tmp_path: Path) -> None:
    raw = pd.read_csv(shared_data / "vindr" / "vinbigdata-train.csv.gz", nrows=10, dtype=str)
    raw.loc[7, "image_id"] = ""
    raw.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train\.csv.*blank 'image_id' \(line 9\)"):
        read_boxes(tmp_path / "train.csv")


def test_blank_image_id_in_a_box_table_is_refused() -> None:
    boxes = pd.DataFrame({"image_id": ["a.png", np.nan], "pathology": ["Pneumothorax"] * 2, "x": [0.0, 0.0],
                          "y": [0.0, 0.0], "w": [1.0, 1.0], "h": [1.0, 1.0]})
    with pytest.raises(DataError, match=r"blank image_id \(rows \[1\]"):
        pointing_game_rows(_StandIn([]), ["a.png"], [np.zeros((8, 8), np.uint8)], torch.zeros(1, 3, 8, 8),
                           np.zeros((1, 2)), boxes)

