"""Pointing game on expert regions: the boxes of NIH ChestX-ray14's `BBox_List_2017.csv`, VinDr-CXR's radiologists
and RSNA Pneumonia, and the run-length pneumothorax masks of SIIM-ACR's `train-rle.csv` (`read_boxes` recognises
each file).

Wang et al. 2017 (ChestX-ray8, CVPR) give 984 boxes for 8 pathologies on 880 images, as (x, y, w, h) in the
1024 x 1024 PNGs NIH distributes; RSNA's boxes and SIIM's masks are on the same 1024 px grid; VinDr's boxes are in
the pixels of each original DICOM (sizes vary), so they are scaled from the loaded image's own size. For every input
image that has regions, the Grad-CAM heatmap of each annotated finding the model predicts (matched through the
finding vocabulary, `chestx.data.labels.table.shared_pathologies`: VinDr `Effusion` meets a CheXpert model's `Pleural
Effusion`) is computed at the model input size S (the input is a resize of the whole image, so one scale per axis)
and a region is a hit when the heatmap's peak lies in it (Zhang et al. 2016, ECCV; `pointing_game` below):
- box: the box rescaled to S contains the peak pixel, one row per box;
- mask (SIIM): the peak pixel's centre, mapped onto the mask's own 1024 px grid, falls on a pneumothorax pixel of
  the image's decoded masks (their union: one region per image); inside the mask's bounding box but off the mask
  is a miss. `x, y, w, h` of a mask row are its bounding box.
Regions meet input files by file name or by stem (VinDr ids have no extension).
`python -m chestx.predict ... bbox=<box or mask file>`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import cv2
import numpy as np
import pandas as pd
import torch

from chestx.data.datasets.nih import read_nih_boxes as read_bbox_list  # noqa: F401 (NIH box list, re-exported)
from chestx.data.labels.table import DataError
from chestx.explain.overlay import overlay

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # (x, y, w, h) in pixels
Size = Union[int, float, Sequence[float]]  # (W, H), or the side of a square image

BBOX_SOURCE_SIZE = 1024  # NIH boxes are in the coordinates of the 1024 px PNGs
BOX, MASK = "box", "mask"  # the `region` column of `read_boxes` and of the pointing game's rows


def _size(size: Size) -> tuple[float, float]:
    """(W, H) from (W, H) or a side."""
    return (size, size) if isinstance(size, (int, float)) else (size[0], size[1])


def scale_box(box: Sequence[float], from_size: Size, to_size: Size) -> Box:
    """Rescale an (x, y, w, h) box between image sizes given as (W, H) or a side for square images.

    E.g. ``scale_box(nih_box, 1024, 224)``; a pure rescale (does not model crops or padding).
    """
    fw, fh = _size(from_size)
    tw, th = _size(to_size)
    sx, sy = tw / fw, th / fh
    x, y, bw, bh = (float(v) for v in box)
    return (x * sx, y * sy, bw * sx, bh * sy)


def _window(index: int, tolerance: float, scale: float, n: int) -> slice:
    """Mask cells (of n) within `tolerance` grid pixels of grid pixel `index`'s centre; `scale` = mask / grid."""
    lo = math.floor((index + 0.5 - tolerance) * scale)
    hi = math.floor((index + 0.5 + tolerance) * scale) + 1
    return slice(min(max(lo, 0), n), min(max(hi, 0), n))


@dataclass(frozen=True)
class Region:
    """Where a finding is, on a pixel grid of size `grid` (W, H): an (x, y, w, h) box, or a bool mask.

    `mask` (H_m, W_m) covers the whole grid at any resolution (a grid pixel is looked up at its centre); `box` is then
    its bounding box, in grid pixels. `scaled` moves a region to another grid (the cam's), `contains` tests a pixel.
    """

    box: Box
    grid: tuple[float, float]
    mask: np.ndarray | None = None

    @property
    def kind(self) -> str:
        return BOX if self.mask is None else MASK

    @classmethod
    def of_mask(cls, mask: np.ndarray) -> "Region":
        """A (H, W) bool mask on its own grid, with its bounding box; ValueError when it is empty."""
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            raise ValueError(f"mask of shape {mask.shape} has no pixel set: no region to point at")
        box = (float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1))
        return cls(box, (float(mask.shape[1]), float(mask.shape[0])), mask)

    def scaled(self, size: Size) -> "Region":
        """The same region on a grid of `size`: the box rescaled (`scale_box`), a mask kept as it is."""
        return Region(scale_box(self.box, self.grid, size), _size(size), self.mask)

    def contains(self, col: int, row: int, tolerance: float = 0.0) -> bool:
        """Whether grid pixel (row, col) lies in the region or within `tolerance` grid pixels of it.

        Box: ``x - tol <= col < x + w + tol`` and ``y - tol <= row < y + h + tol``. Mask: a mask pixel set within
        `tol` of the pixel's centre (per axis; tol 0: the mask pixel under the centre).
        """
        if self.mask is None:
            x, y, w, h = self.box
            return bool(x - tolerance <= col < x + w + tolerance and y - tolerance <= row < y + h + tolerance)
        mh, mw = self.mask.shape
        rows = _window(row, tolerance, mh / self.grid[1], mh)
        cols = _window(col, tolerance, mw / self.grid[0], mw)
        return bool(self.mask[rows, cols].any())


def cam_peak(cam: np.ndarray) -> tuple[int, int] | None:
    """(row, col) of the heatmap's maximum (NaN ignored); None for a constant or all-NaN heatmap (no peak)."""
    heat = np.nan_to_num(np.asarray(cam, dtype=np.float64), nan=-np.inf)
    if heat.ndim != 2:
        raise ValueError(f"cam must be (H, W), got {heat.shape}")
    if not np.isfinite(heat).any() or heat.max() == heat.min():
        return None
    row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(row), int(col)


def pointing_game(cam: np.ndarray, region: Union[Sequence[float], Region], tolerance: float = 0.0) -> bool:
    """True when the heatmap's peak pixel (row, col) lies in the region: an (x, y, w, h) box in cam pixel
    coordinates, or a `Region` on any grid (rescaled to the cam's).

    Box: pixel (r, c) is a hit when ``x - tol <= c < x + w + tol`` and ``y - tol <= r < y + h + tol`` (Zhang et al.
    use tol = 15 px at the original resolution); mask: see `Region.contains`. A constant heatmap has no peak: False.
    """
    peak = cam_peak(cam)
    if peak is None:
        return False
    height, width = np.shape(cam)
    if not isinstance(region, Region):
        region = Region(tuple(float(v) for v in region), (width, height))  # type: ignore[arg-type]
    return region.scaled((width, height)).contains(peak[1], peak[0], tolerance)


def read_boxes(path: str | Path) -> pd.DataFrame:
    """Any supported region file -> image_id, pathology, x, y, w, h, source_size, region, masks (one row per region).

    `source_size`: the side of the square image the coordinates refer to (1024 for NIH, RSNA, SIIM); NaN for
    VinDr-CXR, whose boxes are in each image's own pixels. `region`: "box", or "mask" for SIIM (one row per image,
    x..h its bounding box, `masks` its run-length strings; None for boxes). Recognised by the header: NIH `Image
    Index, Finding Label, ...`; VinDr `image_id, class_name, ..., x_min, y_min, x_max, y_max` (Kaggle train.csv or
    PhysioNet annotations_*.csv); RSNA `patientId, x, y, width, height, Target`; SIIM `ImageId, EncodedPixels`.
    A blank image id -> DataError naming the file and lines.
    """
    from chestx.data.datasets.registry import registered

    path = Path(path).expanduser()
    regions = [info.regions for info in registered().values() if info.regions is not None]
    files = ", ".join(r.files for r in regions)
    if not path.is_file():
        raise FileNotFoundError(f"bbox={str(path)!r} does not exist; pass bbox=<a box file: {files}>")
    columns = {str(c).strip() for c in pd.read_csv(path, nrows=0).columns}
    found = next((r for r in regions if r.columns <= columns), None)
    if found is None:
        raise ValueError(f"bbox={str(path)!r}: not a box file chestx knows (columns {sorted(columns)[:8]}); pass "
                         f"{files}")
    boxes, size, kind = found.read(path), found.source_size, found.kind  # blank image ids: DataError with lines
    log.info("Read %d %ss of %d images from %s", len(boxes), kind, boxes["image_id"].nunique(), path)
    if "masks" not in boxes.columns:
        boxes = boxes.assign(masks=None)
    return boxes.assign(source_size=size, region=kind)[
        ["image_id", "pathology", "x", "y", "w", "h", "source_size", "region", "masks"]]


def region_of(box: Any, image_size: tuple[int, int]) -> Region:
    """A `read_boxes` row (itertuples) -> its Region on its source grid (`image_size` (W, H) when NaN); masks
    decoded here."""
    from chestx.data.datasets.siim import rle_decode

    source = _size(image_size if np.isnan(box.source_size) else box.source_size)
    if getattr(box, "region", BOX) != MASK:
        return Region((float(box.x), float(box.y), float(box.w), float(box.h)), source)
    height, width = int(source[1]), int(source[0])
    mask = np.logical_or.reduce([rle_decode(e, height, width) for e in box.masks])  # (H, W)
    return Region((float(box.x), float(box.y), float(box.w), float(box.h)), source, mask)


def _match_images(names: Sequence[str], boxes: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Image index -> its rows of `boxes`, matched by file name or stem; blank image ids -> DataError."""
    ids = boxes["image_id"]
    blank = (ids.isna() | (ids.astype("string").str.strip() == "")).fillna(True).to_numpy(dtype=bool)
    if blank.any():
        raise DataError(f"{int(blank.sum())} box rows have a blank image_id (rows {boxes.index[blank][:5].tolist()} of "
                        "the box table); give every box the image file it is on")
    keys = {key: i for i, name in enumerate(names) for key in (name, Path(name).stem)}  # file name or stem
    box_ids = ids.astype(str)
    image_of = box_ids.map(keys).fillna(box_ids.map(lambda b: keys.get(Path(b).stem)))  # (n_boxes,) image or NaN
    found = boxes.assign(_image=image_of)[image_of.notna().to_numpy()]
    return {int(i): group for i, group in found.groupby("_image")}


def _cam_plan(
    predictor: Any, names: Sequence[str], by_image: dict[int, pd.DataFrame]
) -> list[tuple[int, dict[int, str]]]:
    """(image index, {model output: the region file's name of that finding}) for each image with a finding the
    model predicts, in image order; findings it does not predict are logged."""
    from chestx.data.labels.table import shared_pathologies

    plan = []
    for i in sorted(by_image):
        boxed = list(dict.fromkeys(by_image[i]["pathology"]))
        pairs = shared_pathologies(predictor.pathologies, boxed)  # (model output, box finding)
        if len(pairs) < len(boxed):
            log.warning("%s: boxes for %s are not among the model's findings", names[i],
                        sorted(set(boxed) - {boxed[j] for _, j in pairs}))
        if pairs:
            plan.append((i, {k: boxed[j] for k, j in pairs}))
    return plan


def _save_region_heatmap(path: Path, image: np.ndarray, cam: np.ndarray, region: Region, title: str) -> None:
    """The overlay with the region drawn in the loaded image's pixels: a box, or the mask's outline."""
    from chestx.explain.overlay import save_heatmap

    h0, w0 = image.shape[:2]
    shown = overlay(image, cam)
    if region.mask is None:
        save_heatmap(path, shown, title, box=region.scaled((w0, h0)).box)
        return
    mask = cv2.resize(region.mask.astype(np.uint8), (w0, h0), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    shown = cv2.drawContours(np.ascontiguousarray(shown), contours, -1, (0, 255, 0), max(1, w0 // 256))
    save_heatmap(path, shown, title)


def _region_rows(predictor: Any, name: str, image: np.ndarray, cam: np.ndarray, k: int, probability: float,
                 regions: pd.DataFrame, tolerance: float, heatmap_dir: Path | None) -> list[dict[str, Any]]:
    """One row per region of one finding on one image: its box at cam size, the cam peak, hit (see module doc)."""
    size = predictor.image_size
    h0, w0 = image.shape[:2]
    peak_row, peak_col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    pathology = predictor.pathologies[k]
    rows = []
    for box in regions.itertuples():
        region = region_of(box, (w0, h0))
        scaled = region.scaled(size)  # cam pixels
        hit = pointing_game(cam, scaled, tolerance)
        rows.append({
            "image_id": name, "pathology": pathology, "probability": probability,
            "x": scaled.box[0], "y": scaled.box[1], "w": scaled.box[2], "h": scaled.box[3], "cam_size": size,
            "peak_row": int(peak_row), "peak_col": int(peak_col), "constant_cam": bool(np.ptp(cam) == 0),
            "hit": hit, "region": region.kind,
        })
        if heatmap_dir is not None:
            where = {BOX: "box", MASK: "mask"}[region.kind]
            title = f"{name}\n{pathology}: p={probability:.3f}, peak {'in' if hit else 'outside'} {where}"
            _save_region_heatmap(Path(heatmap_dir) / f"{Path(name).stem}_{pathology}_{region.kind}.png", image, cam,
                                 region, title)
    return rows


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
    """One row per region (box, or SIIM mask) of the batch's images: the cam peak and whether it lies in the region.

    names: (B,) image file names; images: (B,) loaded uint8 (H, W); x: (B, C, S, S); probs: (B, K);
    boxes: `read_boxes` rows (`source_size` 1024 and `region` box when absent). `heatmap_dir`: also save each
    overlay with its region drawn. Rows: image_id, pathology, probability, x, y, w, h (cam pixels), cam_size,
    peak_row, peak_col, constant_cam, hit, region.
    """
    if "source_size" not in boxes.columns:
        boxes = boxes.assign(source_size=float(BBOX_SOURCE_SIZE))
    by_image = _match_images(names, boxes)
    plan = _cam_plan(predictor, names, by_image)
    if not plan:
        return []
    picks = [i for i, _ in plan]
    cams = predictor.cams(x[picks], [list(finding_of) for _, finding_of in plan], target_layer)  # (N, S, S)
    rows: list[dict[str, Any]] = []
    n = 0  # cams are image-major
    for i, finding_of in plan:
        group = by_image[i]
        for k, finding in finding_of.items():
            rows += _region_rows(predictor, names[i], images[i], cams[n], k, float(probs[i, k]),
                                 group[group["pathology"] == finding], tolerance, heatmap_dir)
            n += 1
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
