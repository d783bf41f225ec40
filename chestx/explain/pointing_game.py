"""Pointing game on NIH ChestX-ray14's expert boxes (`BBox_List_2017.csv`).

Wang et al. 2017 (ChestX-ray8, CVPR) give 984 boxes for 8 pathologies on 880 images, as
(x, y, w, h) in the 1024 x 1024 PNGs NIH distributes. For every input image that has boxes, the
Grad-CAM heatmap of each boxed pathology (whatever the prediction) is computed at the model input
size S, the box is rescaled 1024 -> S (the input is a resize of the whole image, so one scale per
axis), and the box is a hit when the heatmap's peak lies inside it (Zhang et al. 2016, ECCV;
`pointing_game` below). `python -m chestx.predict ... bbox=<BBox_List_2017.csv>`.
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
    boxes: `read_bbox_list` rows. `heatmap_dir`: also save each overlay with its box drawn.
    """
    from chestx.explain.overlay import save_heatmap

    by_image = {name: group for name, group in boxes[boxes["image_id"].isin(list(names))].groupby("image_id")}
    picks: list[int] = []
    classes: list[list[int]] = []
    for i, name in enumerate(names):
        group = by_image.get(name)
        if group is None:
            continue
        known = [p for p in dict.fromkeys(group["pathology"]) if p in predictor.pathologies]
        if len(known) < len(set(group["pathology"])):
            log.warning("%s: boxes for %s are not among the model's pathologies", name,
                        sorted(set(group["pathology"]) - set(known)))
        if known:
            picks.append(i)
            classes.append([predictor.pathologies.index(p) for p in known])
    if not picks:
        return []
    cams = predictor.cams(x[picks], classes, target_layer)  # (N, S, S), image-major
    size = predictor.image_size
    rows: list[dict[str, Any]] = []
    n = 0
    for i, cls in zip(picks, classes):
        group = by_image[names[i]]
        for k in cls:
            cam = cams[n]
            n += 1
            peak_row, peak_col = np.unravel_index(int(np.argmax(cam)), cam.shape)
            for box in group[group["pathology"] == predictor.pathologies[k]].itertuples():
                scaled = scale_box((box.x, box.y, box.w, box.h), BBOX_SOURCE_SIZE, size)  # cam pixels
                hit = pointing_game(cam, scaled, tolerance)
                rows.append({
                    "image_id": names[i], "pathology": predictor.pathologies[k], "probability": float(probs[i, k]),
                    "x": scaled[0], "y": scaled[1], "w": scaled[2], "h": scaled[3], "cam_size": size,
                    "peak_row": int(peak_row), "peak_col": int(peak_col), "constant_cam": bool(np.ptp(cam) == 0),
                    "hit": hit,
                })
                if heatmap_dir is not None:
                    h0, w0 = images[i].shape
                    drawn = scale_box((box.x, box.y, box.w, box.h), BBOX_SOURCE_SIZE, (w0, h0))  # loaded pixels
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
