"""Pointing game on expert boxes: NIH ChestX-ray14's `BBox_List_2017.csv`, VinDr-CXR's radiologist boxes, RSNA
Pneumonia's boxes and the bounding boxes of SIIM-ACR's pneumothorax masks (`read_boxes` recognises each file).

Wang et al. 2017 (ChestX-ray8, CVPR) give 984 boxes for 8 pathologies on 880 images, as (x, y, w, h) in the
1024 x 1024 PNGs NIH distributes; RSNA's and SIIM's are on the same 1024 px images; VinDr's are in the pixels of
each original DICOM (sizes vary), so they are scaled from the loaded image's own size. For every input image that
has boxes, the Grad-CAM heatmap of each boxed finding the model predicts (matched through the finding vocabulary,
`chestx.data.labels.shared_pathologies`: VinDr `Effusion` meets a CheXpert model's `Pleural Effusion`) is computed
at the model input size S, the box is rescaled to S (the input is a resize of the whole image, so one scale per
axis), and the box is a hit when the heatmap's peak lies inside it (Zhang et al. 2016, ECCV; `pointing_game`
below). Boxes meet input files by file name or by stem (VinDr ids have no extension).
`python -m chestx.predict ... bbox=<box file>`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import pandas as pd
import torch

from chestx.explain.overlay import overlay

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # (x, y, w, h) in pixels

BBOX_SOURCE_SIZE = 1024  # NIH boxes are in the coordinates of the 1024 px PNGs
BBOX_LABEL_NAMES = {"Infiltrate": "Infiltration"}  # BBox_List_2017 spells one label differently


def scale_box(
    box: Sequence[float], from_size: Union[int, Sequence[int]], to_size: Union[int, Sequence[int]]
) -> Box:
    """Rescale an (x, y, w, h) box between image sizes given as (W, H) or a side for square images.

    E.g. ``scale_box(nih_box, 1024, 224)``; a pure rescale (does not model crops or padding).
    """
    fw, fh = (from_size, from_size) if isinstance(from_size, (int, float)) else tuple(from_size)
    tw, th = (to_size, to_size) if isinstance(to_size, (int, float)) else tuple(to_size)
    sx, sy = tw / fw, th / fh
    x, y, bw, bh = (float(v) for v in box)
    return (x * sx, y * sy, bw * sx, bh * sy)


def pointing_game(cam: np.ndarray, box: Sequence[float], tolerance: float = 0.0) -> bool:
    """True when the heatmap's peak pixel (row, col) lies in the (x, y, w, h) box (cam pixel coords).

    Pixel (r, c) is a hit when ``x - tol <= c < x + w + tol`` and ``y - tol <= r < y + h + tol``
    (Zhang et al. use tol = 15 px at the original resolution). A constant heatmap has no peak: False.
    """
    heat = np.nan_to_num(np.asarray(cam, dtype=np.float64), nan=-np.inf)
    if heat.ndim != 2:
        raise ValueError(f"cam must be (H, W), got {heat.shape}")
    if not np.isfinite(heat).any() or heat.max() == heat.min():
        return False
    row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    x, y, w, h = (float(v) for v in box)
    return bool(x - tolerance <= col < x + w + tolerance and y - tolerance <= row < y + h + tolerance)


def read_bbox_list(path: str | Path) -> pd.DataFrame:
    """BBox_List_2017.csv -> image_id, pathology, x, y, w, h (1024 px coordinates), one row per box."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"bbox={str(path)!r} does not exist; pass bbox=<path to BBox_List_2017.csv>")
    raw = pd.read_csv(path)
    if "Image Index" not in raw.columns or "Finding Label" not in raw.columns or raw.shape[1] < 6:
        raise ValueError(f"bbox={str(path)!r} is not NIH's BBox_List_2017.csv (columns {list(raw.columns)[:6]})")
    coords = raw.iloc[:, 2:6].astype(float).to_numpy()  # 'Bbox [x', 'y', 'w', 'h]'
    return pd.DataFrame({
        "image_id": raw["Image Index"].astype(str),
        "pathology": raw["Finding Label"].astype(str).replace(BBOX_LABEL_NAMES),
        "x": coords[:, 0], "y": coords[:, 1], "w": coords[:, 2], "h": coords[:, 3],
    })


def read_boxes(path: str | Path) -> pd.DataFrame:
    """Any supported box file -> image_id, pathology, x, y, w, h, source_size (one row per box).

    `source_size`: the side of the square image the coordinates refer to (1024 for NIH, RSNA, SIIM); NaN for
    VinDr-CXR, whose boxes are in each image's own pixels. Recognised by the header: NIH `Image Index, Finding
    Label, ...`; VinDr `image_id, class_name, ..., x_min, y_min, x_max, y_max` (Kaggle train.csv or PhysioNet
    annotations_*.csv); RSNA `patientId, x, y, width, height, Target`; SIIM `ImageId, EncodedPixels`.
    """
    from chestx.data.datasets.rsna import read_rsna_boxes
    from chestx.data.datasets.siim import read_siim_boxes
    from chestx.data.datasets.vindr import read_vindr_boxes

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"bbox={str(path)!r} does not exist; pass bbox=<a box file: NIH BBox_List_2017.csv, "
                                "VinDr-CXR train.csv / annotations_*.csv, RSNA stage_2_train_labels.csv, SIIM train-rle.csv>")
    columns = {str(c).strip() for c in pd.read_csv(path, nrows=0).columns}
    if {"Image Index", "Finding Label"} <= columns:
        boxes, size = read_bbox_list(path), float(BBOX_SOURCE_SIZE)
    elif {"image_id", "class_name", "x_min", "y_min", "x_max", "y_max"} <= columns:
        vindr = read_vindr_boxes(path)
        boxes = pd.DataFrame({"image_id": vindr["image_id"], "pathology": vindr["pathology"], "x": vindr["x_min"],
                              "y": vindr["y_min"], "w": vindr["x_max"] - vindr["x_min"],
                              "h": vindr["y_max"] - vindr["y_min"]})
        size = np.nan  # each image's own pixels
    elif {"patientId", "Target"} <= columns:
        boxes, size = read_rsna_boxes(path), float(BBOX_SOURCE_SIZE)
    elif {"ImageId", "EncodedPixels"} <= columns:
        boxes, size = read_siim_boxes(path), float(BBOX_SOURCE_SIZE)
    else:
        raise ValueError(f"bbox={str(path)!r}: not a box file chestx knows (columns {sorted(columns)[:8]}); pass NIH's "
                         "BBox_List_2017.csv, VinDr-CXR's train.csv / annotations_*.csv, RSNA's "
                         "stage_2_train_labels.csv or SIIM's train-rle.csv")
    log.info("Read %d boxes of %d images from %s", len(boxes), boxes["image_id"].nunique(), path)
    return boxes.assign(source_size=size)


def pointing_game_rows(
    predictor: Any,
    names: Sequence[str],
    images: Sequence[np.ndarray],
    x: torch.Tensor,
    probs: np.ndarray,
    boxes: pd.DataFrame,
    tolerance: float = 0.0,
    heatmap_dir: Path | None = None,
    target_layer: str | None = None,
) -> list[dict[str, Any]]:
    """One row per box of the batch's images: the cam peak and whether it lies in the box.

    names: (B,) image file names; images: (B,) loaded uint8 (H, W); x: (B, C, S, S); probs: (B, K);
    boxes: `read_boxes` rows. `heatmap_dir`: also save each overlay with its box drawn.
    """
    from chestx.explain.overlay import save_heatmap

    from chestx.data.labels import shared_pathologies

    if "source_size" not in boxes.columns:
        boxes = boxes.assign(source_size=float(BBOX_SOURCE_SIZE))
    keys = {key: i for i, name in enumerate(names) for key in (name, Path(name).stem)}  # file name or stem
    box_ids = boxes["image_id"].astype(str)
    image_of = box_ids.map(keys).fillna(box_ids.map(lambda b: keys.get(Path(b).stem)))  # (n_boxes,) image or NaN
    found = boxes.assign(_image=image_of)[image_of.notna().to_numpy()]
    by_image = {int(i): group for i, group in found.groupby("_image")}
    picks: list[int] = []
    classes: list[list[int]] = []
    finding_of: dict[int, dict[int, str]] = {}  # image -> model output -> the box file's name of that finding
    for i in sorted(by_image):
        group = by_image[i]
        boxed = list(dict.fromkeys(group["pathology"]))
        pairs = shared_pathologies(predictor.pathologies, boxed)  # (model output, box finding)
        if len(pairs) < len(boxed):
            log.warning("%s: boxes for %s are not among the model's findings", names[i],
                        sorted(set(boxed) - {boxed[j] for _, j in pairs}))
        if pairs:
            picks.append(i)
            classes.append([k for k, _ in pairs])
            finding_of[i] = {k: boxed[j] for k, j in pairs}
    if not picks:
        return []
    cams = predictor.cams(x[picks], classes, target_layer)  # (N, S, S), image-major
    size = predictor.image_size
    rows: list[dict[str, Any]] = []
    n = 0
    for i, cls in zip(picks, classes):
        group = by_image[i]
        h0, w0 = images[i].shape
        for k in cls:
            cam = cams[n]
            n += 1
            peak_row, peak_col = np.unravel_index(int(np.argmax(cam)), cam.shape)
            for box in group[group["pathology"] == finding_of[i][k]].itertuples():
                source = (w0, h0) if np.isnan(box.source_size) else box.source_size  # coordinates' image size
                scaled = scale_box((box.x, box.y, box.w, box.h), source, size)  # cam pixels
                hit = pointing_game(cam, scaled, tolerance)
                rows.append({
                    "image_id": names[i], "pathology": predictor.pathologies[k], "probability": float(probs[i, k]),
                    "x": scaled[0], "y": scaled[1], "w": scaled[2], "h": scaled[3], "cam_size": size,
                    "peak_row": int(peak_row), "peak_col": int(peak_col), "constant_cam": bool(np.ptp(cam) == 0),
                    "hit": hit,
                })
                if heatmap_dir is not None:
                    drawn = scale_box((box.x, box.y, box.w, box.h), source, (w0, h0))  # loaded pixels
                    title = (f"{names[i]}\n{predictor.pathologies[k]}: p={probs[i, k]:.3f}, "
                             f"peak {'in' if hit else 'outside'} box")
                    save_heatmap(Path(heatmap_dir) / f"{Path(names[i]).stem}_{predictor.pathologies[k]}_box.png",
                                 overlay(images[i], cam), title, box=drawn)
    return rows


def summarize_pointing_game(rows: pd.DataFrame) -> pd.DataFrame:
    """Per pathology: boxes, hits, hit fraction, constant heatmaps (counted as misses); last row 'all'."""
    columns = ["pathology", "boxes", "hits", "fraction", "constant_cams"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    table = rows.groupby("pathology", sort=True).agg(
        boxes=("hit", "size"), hits=("hit", "sum"), constant_cams=("constant_cam", "sum")).reset_index()
    table.loc[len(table)] = {"pathology": "all", "boxes": int(rows.shape[0]), "hits": int(rows["hit"].sum()),
                             "constant_cams": int(rows["constant_cam"].sum())}
    table[["hits", "constant_cams"]] = table[["hits", "constant_cams"]].astype(int)
    table["fraction"] = table["hits"] / table["boxes"]
    return table[columns]
