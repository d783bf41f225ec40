"""Decode chest X-ray files (PNG, JPEG, TIFF, DICOM) to 8-bit grayscale (H, W), and resize them.

`load_grayscale(path, dicom_window)` recognises the format by content and turns every file into
uint8 by one rule:

- 8-bit images (PNG, JPEG, 8-bit TIFF; L, P, RGB, RGBA): their own values, byte for byte. Colour
  (RGB / RGBA / palette) becomes BT.601 luma with alpha dropped.
- Deeper integer images (16-bit PNG / TIFF, e.g. PadChest's 16-bit PNGs; 32-bit mode I): min-max,
  round((v - min) / (max - min) * 255), a constant image is 0. Such a file carries no window, so
  this is the `data.dicom_window` rule's "min-max where the file has none", the same under
  `voi` and `minmax`. (Before DECODE_VERSION 2 they were scaled by their effective bit depth.)
- DICOM ('DICM' at byte 128, or a raw data set / a .dcm file pydicom reads with force): Modality
  LUT, then the VOI LUT or first window (`voi`) or the image's own range (`minmax`), MONOCHROME1
  inverted: see chestx.data.images.dicom.

Before anything is decoded the file's size and its header's dimensions are checked against
`CHESTX_MAX_IMAGE_PIXELS` (decompression bombs, chestx.data.images.check), and PNG / JPEG files
must be complete (PNG ends with its IEND chunk, JPEG with an EOI marker: decoders may otherwise
pad a truncated image silently). Raster files are decoded with OpenCV (13.5 ms vs Pillow's 16.0 ms
per 1024 px NIH PNG on this project's CPU), Pillow for whatever OpenCV cannot decode. Every
failure is an `ImageReadError` naming the file and the reason.

`DECODE_VERSION` changes whenever the pixels of some file change; the resize cache
(chestx.data.images.cache) keys on it and on `dicom_window`, so a change re-decodes.
"""
from __future__ import annotations

import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from chestx.data.images.check import (  # ImageReadError, DICOM_WINDOWS, check_dicom_window: re-exported
    ImageReadError, check_complete, check_dicom_window, check_raster_header, image_error,
    looks_like_dicom, read_image_bytes,
)

log = logging.getLogger(__name__)

DECODE_VERSION = 2  # 2: 16-bit min-max, DICOM; bump whenever load_grayscale's pixels change for some file
INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
    "lanczos": cv2.INTER_LANCZOS4,
}


# what to do when a file whose header passed fails to decode mid-run (FileSource, the pixel cache)
FIND_ALL_UNDECODABLE = (
    "The set-up check reads headers only; to find every file that fails to decode before training, set "
    "data.verify_images=decode (every image decoded at set-up; failures handled by data.missing_images: drop lists "
    "them in the run folder's unreadable.csv, error stops naming them all)"
)


def _fail(path: Path, reason: str) -> ImageReadError:
    return image_error(path, reason)


def minmax_to_uint8(values: np.ndarray, used: np.ndarray | None = None) -> np.ndarray:
    """Any numeric image -> uint8: round((v - min) / (max - min) * 255); a constant image is all 0.

    `used` (bool, like `values`): take min and max over these entries only (a lookup table's levels present
    in the image).
    """
    v = values.astype(np.float64, copy=False)
    present = v if used is None else v[used]
    lo, hi = float(present.min()), float(present.max())
    if not hi > lo:
        return np.zeros(v.shape, dtype=np.uint8)
    return np.clip(np.rint((v - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _to_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    """Integer image of any depth -> uint8: 8-bit unchanged, deeper min-max (see module docstring)."""
    if img.dtype == np.uint8:
        return img
    if not np.issubdtype(img.dtype, np.integer):
        raise _fail(path, f"unsupported pixel type {img.dtype}; expected 8- or 16-bit integers")
    return minmax_to_uint8(img)  # (H, W) uint8


def _gray_cv2(img: np.ndarray) -> np.ndarray:
    """OpenCV decode result (H, W) / (H, W, C) BGR[A] -> (H, W)."""
    if img.ndim == 2:
        return img
    channels = img.shape[2]
    if channels == 1 or channels == 2:  # gray (+ alpha)
        return np.ascontiguousarray(img[:, :, 0])
    return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if channels == 4 else cv2.COLOR_BGR2GRAY)


def _decode_pillow(data: bytes, path: Path) -> np.ndarray:
    """Pillow fallback: modes L / LA / RGB / RGBA / P / CMYK / I;16* / I -> (H, W) integer array."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode.startswith("I"):  # I;16, I;16B, I;16L, I (32-bit)
                return np.asarray(im)
            if im.mode == "F":
                raise _fail(path, "floating-point images (mode F) are not supported; save as 8- or 16-bit PNG")
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")
            return np.asarray(im.convert("L") if im.mode != "L" else im)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as err:
        raise _fail(path, f"Pillow refused it: {err}") from err
    except UnidentifiedImageError as err:
        raise _fail(path, "not a PNG or JPEG image Pillow or OpenCV can decode") from err
    except (OSError, ValueError, SyntaxError) as err:
        raise _fail(path, f"{type(err).__name__}: {err}") from err


def load_grayscale(path: str | Path, dicom_window: str = "voi") -> np.ndarray:
    """Read a PNG, JPEG, TIFF or DICOM file as a (H, W) uint8 array, by the module's rule.

    `dicom_window` (data.dicom_window): `voi` or `minmax`, how DICOM values become 0..255 (no effect on
    other formats, which carry no window).
    """
    check_dicom_window(dicom_window)
    path = Path(path)
    data = read_image_bytes(path)  # size checked against the limit before reading
    if looks_like_dicom(data[:132], path):
        from chestx.data.images.dicom import decode_dicom  # pydicom is imported only when a DICOM file is met

        return decode_dicom(data, path, dicom_window)  # (H, W) uint8
    check_raster_header(data, path)  # refuses decompression bombs before any decoder sees the file
    check_complete(data, path)
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    img = _decode_pillow(data, path) if img is None else _gray_cv2(img)
    if img.ndim != 2 or img.size == 0:
        raise _fail(path, f"decoded to an unexpected shape {img.shape}")
    return _to_uint8(img, path)  # (H, W) uint8


def resize_square(img: np.ndarray, size: int, interpolation: str = "area") -> np.ndarray:
    """(H, W) uint8 -> (size, size) uint8, ignoring aspect ratio (as CheXNet-style pipelines do).

    "area" uses cv2.INTER_AREA when shrinking and INTER_LINEAR when enlarging (INTER_AREA
    degenerates to nearest-neighbour when upsampling).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r} is not one of {list(INTERPOLATIONS)}")
    if img.ndim != 2 or img.dtype != np.uint8:
        raise ValueError(f"resize_square expects a (H, W) uint8 image, got {img.shape} {img.dtype}")
    if int(size) < 1:
        raise ValueError(f"size={size} must be a positive number of pixels")
    h, w = img.shape
    if (h, w) == (size, size):
        return img
    flag = INTERPOLATIONS[interpolation]
    if interpolation == "area" and (size > h or size > w):
        flag = cv2.INTER_LINEAR
    return cv2.resize(img, (int(size), int(size)), interpolation=flag)  # (size, size) uint8


def decode_reason(path: str | Path, dicom_window: str = "voi") -> str | None:
    """Why `path` cannot be decoded (the ImageReadError's text), or None when every pixel decodes."""
    try:
        load_grayscale(path, dicom_window=dicom_window)
    except ImageReadError as err:
        return str(err)
    return None


def find_undecodable(paths: Sequence[str | Path], dicom_window: str = "voi",
                     workers: int | None = None) -> list[tuple[int, str]]:
    """(index, reason) of every file in `paths` that fails to decode, in order (data.verify_images=decode).

    Threads: OpenCV and pydicom's decoders release the GIL for most of their work. Costs a full decode per file
    (what one training epoch costs in decoding), so it is opt-in; the default set-up check reads headers only."""
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(paths) < 2:
        reasons = [decode_reason(p, dicom_window) for p in paths]
    else:
        with ThreadPoolExecutor(workers) as pool:
            reasons = list(pool.map(lambda p: decode_reason(p, dicom_window), paths))
    return [(i, reason) for i, reason in enumerate(reasons) if reason is not None]
