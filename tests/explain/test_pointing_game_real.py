"""Pointing game on NIH's real expert boxes over real images: the embedded 256 px sample and 1024 px originals.

Of the 880 boxed images in BBox_List_2017.csv, 12 (12 boxes) are in the 621-image sample and 3 among the
1024 px originals in ../shared/data/nih/fullres1024. The model is an untrained ResNet-18 (positive head
weights so every class has a non-trivial heatmap): the hit fraction is whatever it is; the test checks the
computation against an independent argmax-in-box on the same heatmaps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chestx.data.labels.table import NIH_PATHOLOGIES
from chestx.inference.predictor import Predictor
from chestx.explain.pointing_game import read_bbox_list
from chestx.models import create_backbone
from chestx.inference.batch import predict

SIZE = 128  # ResNet-18 layer4 is 4x4 here


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    torch.manual_seed(0)
    net = create_backbone("resnet18", len(NIH_PATHOLOGIES))
    with torch.no_grad():
        net.get_classifier().weight.abs_()
    return Predictor(net=net.eval(), pathologies=list(NIH_PATHOLOGIES), multiclass=False, image_size=SIZE, in_chans=3,
                     normalization="imagenet", mean=None, std=None, thresholds=np.full(14, 0.5),
                     threshold_source="test", ckpt_path=tmp_path_factory.mktemp("m") / "x.ckpt", model_name="resnet18")


def _independent(predictor: Predictor, files: list[Path], boxes: pd.DataFrame) -> list[tuple[int, int, bool]]:
    """Recompute every heatmap one box at a time: (peak row, peak col, argmax in box) by hand."""
    from chestx.data.images.read import load_grayscale
    from chestx.explain.gradcam import compute_cams

    hits = []
    for box in boxes.itertuples():
        path = next(f for f in files if f.name == box.image_id)
        x = predictor.preprocess([load_grayscale(path)])
        cam = compute_cams(predictor.net, x, [NIH_PATHOLOGIES.index(box.pathology)])[0]  # (S, S)
        r, c = np.unravel_index(np.argmax(cam), cam.shape)
        s = SIZE / 1024.0
        hits.append((int(r), int(c), bool(box.x * s <= c < (box.x + box.w) * s and box.y * s <= r < (box.y + box.h) * s)))
    return hits


@pytest.mark.slow
def test_pointing_game_on_real_boxes(predictor: Predictor, nih_dir: Path, sample_root: Path, tmp_path: Path) -> None:
    boxes = read_bbox_list(nih_dir / "BBox_List_2017.csv")
    assert len(boxes) == 984 and "Infiltration" in set(boxes["pathology"]) and "Infiltrate" not in set(boxes["pathology"])
    sample = sorted(p for p in (sample_root / "images").glob("*.png") if p.name in set(boxes["image_id"]))
    fullres = sorted(p for p in (nih_dir / "fullres1024").glob("*.png") if p.name in set(boxes["image_id"]))
    assert len(sample) == 12 and len(fullres) == 3
    for name, files in (("sample", sample), ("fullres", fullres)):
        out = predict(predictor, [str(f) for f in files], tmp_path / name, cam=name == "fullres",
                      cam_pathologies=["Hernia"], bbox=str(nih_dir / "BBox_List_2017.csv"))
        rows = out["localization"]
        expected = boxes[boxes["image_id"].isin([f.name for f in files])].reset_index(drop=True)
        assert len(rows) == len(expected)
        assert not rows["constant_cam"].any()
        merged = rows.merge(expected, on=["image_id", "pathology"], suffixes=("", "_1024"))
        np.testing.assert_allclose(merged["x"], merged["x_1024"] * SIZE / 1024)
        np.testing.assert_allclose(merged["h"], merged["h_1024"] * SIZE / 1024)
        order = rows.set_index(["image_id", "pathology"]).loc[list(zip(expected.image_id, expected.pathology))]
        assert list(zip(order["peak_row"], order["peak_col"], order["hit"])) == _independent(predictor, files, expected)
        summary = out["pointing_game"].set_index("pathology")
        assert summary.loc["all", "boxes"] == len(expected) and summary.loc["all", "hits"] == rows["hit"].sum()
        assert summary.loc["all", "fraction"] == pytest.approx(rows["hit"].mean())
        assert (tmp_path / name / "pointing_game.csv").is_file()
        print(name, summary.to_dict("index"))

        # positive control on the same real images: a 1024 px box drawn around each computed peak is a hit
        around = expected.copy()
        around["x"] = (order["peak_col"].to_numpy() + 0.5) * 1024 / SIZE - 20
        around["y"] = (order["peak_row"].to_numpy() + 0.5) * 1024 / SIZE - 20
        around["w"] = around["h"] = 40.0
        again = predict(predictor, [str(f) for f in files], tmp_path / f"{name}_control", bbox=_write(around, tmp_path))
        assert again["localization"]["hit"].all() and again["pointing_game"].set_index("pathology").loc["all", "fraction"] == 1
    assert len(list((tmp_path / "fullres" / "heatmaps").glob("*_box.png"))) == 3


def _write(boxes: pd.DataFrame, folder: Path) -> str:
    """A BBox_List_2017.csv-shaped file (same header quirks) holding `boxes`."""
    path = folder / "boxes.csv"
    frame = boxes[["image_id", "pathology", "x", "y", "w", "h"]].copy()
    frame.columns = ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
    frame.to_csv(path, index=False)
    return str(path)
