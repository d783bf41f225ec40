"""The pointing game on other datasets' real boxes: VinDr-CXR (boxes in each image's own pixels), RSNA Pneumonia
(1024 px) and SIIM-ACR (the real run-length masks on their 1024 px grid: a hit is a peak on a mask pixel), with a
real NIH model (the shared tiny run) over images written at the names the box files give. Findings meet through the
vocabulary."""
from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from chestx.explain.pointing_game import pointing_game, read_boxes

pytestmark = pytest.mark.slow


def _image(sample_root: Path, index: int, width: int, height: int) -> np.ndarray:
    source = sorted((sample_root / "images").glob("*.png"))[index]
    return cv2.resize(cv2.imread(str(source), cv2.IMREAD_GRAYSCALE), (width, height))


@pytest.fixture(scope="module")
def predictor(clinical_run_dir: Path):
    from chestx.inference.predictor import load_for_inference

    return load_for_inference(clinical_run_dir / "checkpoints" / "best.ckpt")


def _check(out: dict, boxes: pd.DataFrame, sizes: dict[str, tuple[int, int]], size: int, source: float | None,
           masks: dict[str, np.ndarray] | None = None) -> None:
    """Every row's box is a raw box rescaled to the cam; hit = peak in the box, or (`masks`: ImageId -> 1024 px
    mask) the mask pixel under the peak pixel's centre is set."""
    rows = out["localization"]
    assert len(rows) > 0, "some boxed finding is one of the NIH model's"
    for row in rows.itertuples():
        w0, h0 = sizes[row.image_id]
        sx, sy = (size / w0, size / h0) if source is None else (size / source, size / source)
        stem = Path(row.image_id).stem
        raw = boxes[boxes["image_id"].map(lambda b: Path(str(b)).stem) == stem]
        expected = {(round(b.x * sx, 6), round(b.y * sy, 6)) for b in raw.itertuples()}
        assert (round(row.x, 6), round(row.y, 6)) in expected, (row, expected)
        if masks is None:
            assert row.region == "box"
            inside = row.x <= row.peak_col < row.x + row.w and row.y <= row.peak_row < row.y + row.h
        else:
            assert row.region == "mask"
            mask = masks[stem]
            inside = bool(mask[int((row.peak_row + 0.5) * 1024 / size), int((row.peak_col + 0.5) * 1024 / size)])
        assert row.hit == (inside and not row.constant_cam)
    summary = out["pointing_game"]
    assert summary.iloc[-1]["boxes"] == len(rows)


def test_vindr_boxes_scaled_from_each_images_own_size(predictor, shared_data: Path, sample_root: Path,
                                                      tmp_path: Path) -> None:
    from chestx.inference.batch import predict

    raw = pd.read_csv(shared_data / "vindr" / "vinbigdata-train.csv.gz")
    boxed = raw[raw["class_name"].isin(["Cardiomegaly", "Pleural effusion"])]
    chosen = list(dict.fromkeys(boxed["image_id"]))[:1]
    subset = raw[raw["image_id"].isin(chosen)]
    subset.to_csv(tmp_path / "train.csv", index=False)  # the real rows, the real header
    sizes = {}
    for i, image_id in enumerate(chosen):  # VinDr images are not square: boxes are in their own pixels
        width, height = int(subset["x_max"].max()) + 40 + 60 * i, int(subset["y_max"].max()) + 20
        cv2.imwrite(str(tmp_path / f"{image_id}.png"), _image(sample_root, i, width, height))
        sizes[f"{image_id}.png"] = (width, height)
    out = predict(predictor, [str(tmp_path / f"{i}.png") for i in chosen], tmp_path / "out",
                  bbox=str(tmp_path / "train.csv"))
    boxes = read_boxes(tmp_path / "train.csv")
    assert boxes["source_size"].isna().all()
    found = set(out["localization"]["pathology"])
    assert found <= set(predictor.pathologies) and found & {"Cardiomegaly", "Effusion"}  # VinDr Effusion = NIH's
    _check(out, boxes, sizes, predictor.image_size, None)


def test_rsna_boxes_and_siim_masks_on_1024_px(predictor, shared_data: Path, sample_root: Path, tmp_path: Path) -> None:
    from chestx.data.datasets.siim import siim_masks
    from chestx.inference.batch import predict

    with zipfile.ZipFile(shared_data / "rsna" / "kaggle_stage_2_train_labels.csv.zip") as archive:
        rsna = pd.read_csv(archive.open(archive.namelist()[0]))
    patients = list(dict.fromkeys(rsna.loc[rsna["Target"] == 1, "patientId"]))[:1]
    rsna[rsna["patientId"].isin(patients)].to_csv(tmp_path / "stage_2_train_labels.csv", index=False)
    with gzip.open(shared_data / "siim" / "siim-pneumothorax-train-rle.csv.gz", "rt") as handle:
        siim = pd.read_csv(handle)
    ids = list(dict.fromkeys(siim.loc[siim.iloc[:, 1].astype(str).str.strip() != "-1", "ImageId"]))[:1]
    siim[siim["ImageId"].isin(ids)].to_csv(tmp_path / "train-rle.csv", index=False)
    for name, files, box_file in (("rsna", patients, "stage_2_train_labels.csv"), ("siim", ids, "train-rle.csv")):
        folder = tmp_path / name
        folder.mkdir()
        sizes = {}
        for i, stem in enumerate(files):  # stand-in pixels at 256 px: boxes still scale from 1024
            cv2.imwrite(str(folder / f"{stem}.png"), _image(sample_root, i, 256, 256))
            sizes[f"{stem}.png"] = (256, 256)
        boxes = read_boxes(tmp_path / box_file)
        assert (boxes["source_size"] == 1024).all()
        out = predict(predictor, str(folder), tmp_path / f"out_{name}", bbox=str(tmp_path / box_file))
        assert set(out["localization"]["pathology"]) == ({"Pneumonia"} if name == "rsna" else {"Pneumothorax"})
        masks = siim_masks(tmp_path / box_file) if name == "siim" else None
        _check(out, boxes, sizes, predictor.image_size, 1024.0, masks)


def test_unknown_box_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "boxes.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match=r"not a box file chestx knows .* BBox_List_2017.csv"):
        read_boxes(bad)
    assert pointing_game(np.eye(4), (0, 0, 1, 1)) is True
