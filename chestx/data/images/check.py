"""What an image file declares before it is decoded: its format, its size against a limit, and the set-up check.

Files handed to chestx are untrusted. A PNG, JPEG or DICOM whose header declares absurd dimensions
(a decompression bomb: a few kilobytes that decode to gigabytes) is refused from its header, before
any decoder allocates memory, with an `ImageReadError` naming the file, the declared size, the
limit and how to raise it.

The limit: `CHESTX_MAX_IMAGE_PIXELS` (environment variable, pixels per image, frames included;
default 100,000,000 = 100 megapixels, six times the largest chest radiographs, ~4,300 x 3,500 =
15 MP detector images). It is read at every call, so it reaches DataLoader workers and cache
threads; `0` is not allowed (there is always a limit). Files larger than 8 bytes per allowed pixel
plus 64 MiB are refused before they are read. Sizes come from:

- PNG: the IHDR chunk (bytes 16..24, PNG specification, W3C 2003, section 11.2.2);
- JPEG / JPEG-LS: the first SOFn / SOF55 segment (ITU-T T.81 B.2.2; ISO/IEC 14495-1 C.2.2);
- JPEG 2000 codestreams inside DICOM: the SIZ marker segment (ISO/IEC 15444-1 A.5.1);
- DICOM: Rows, Columns, Number of Frames (chestx.data.images.dicom);
- anything else (TIFF, BMP, WebP): Pillow's lazy `Image.open`, which reads the header only.

PNG and JPEG are sized by the parsers here, so neither OpenCV (`cv2.imdecode`, whose own limit is
2**30 pixels) nor Pillow (`Image.MAX_IMAGE_PIXELS`, which a program may set to None) is ever handed
a file over the limit, whatever their own settings are.

`probe_image` is the cheap check `ChestXData` runs over every found file at set-up (see
`find_unreadable`): for PNG / JPEG the first bytes (format, size) and the last bytes (truncation),
for DICOM the header up to the pixel data (chestx.data.images.dicom.probe_dicom); no pixel is decoded.
Measured on this project's shared 2-core VM, page cache warm: 32 us per NIH PNG on one thread, 3.6 s
for the 112,120 files of ChestX-ray14 (the simulated tree of chestx.throughput.scale); ~1.1-1.3 ms
per DICOM header (a 2,828 x 2,320 CR / DX file, native or compressed). `find_unreadable` adds
threads only where files are slow to reach (cold or network storage).
"""
from __future__ import annotations

import io
import logging
import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from chestx.data.errors import DataError, ImageReadError

log = logging.getLogger(__name__)

DICOM_WINDOWS: tuple[str, ...] = ("voi", "minmax")  # data.dicom_window (the rule: chestx.data.images.dicom)
MAX_PIXELS_ENV = "CHESTX_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
FILE_BYTES_PER_PIXEL = 8  # the largest raw pixel (16-bit RGBA) ...
FILE_BYTES_SLACK = 64 * 2**20  # ... plus headers, overlays, private tags

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"
JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
DICOM_MAGIC = b"DICM"  # at byte 128, after the preamble (PS3.10 7.1)
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
PROBE_SAMPLE = 256  # find_unreadable times this many files on one thread ...
SLOW_PROBE_S = 200e-6  # ... and uses threads when one takes longer (storage latency, not Python)
HEAD_BYTES = 256 * 1024  # the JPEG frame header follows APPn segments (EXIF: at most 64 KiB each)
# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC); SOF55 (F7) is JPEG-LS
_SOF_MARKERS = frozenset([*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xF7])
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RST0..7: markers without a length


class UnreadableImagesError(DataError, ImageReadError):
    """Files found at set-up that cannot be decoded (data.missing_images=error); a DataError and an ImageReadError."""


def image_error(path: str | Path, reason: str) -> ImageReadError:
    return ImageReadError(f"cannot read image {str(path)!r}: {reason}")


def check_dicom_window(dicom_window: str) -> None:
    """`dicom_window` is one of DICOM_WINDOWS, else a DataError naming data.dicom_window."""
    if dicom_window not in DICOM_WINDOWS:
        raise DataError(f"data.dicom_window={dicom_window!r} is not one of {list(DICOM_WINDOWS)}: voi (the file's "
                         "VOI LUT or first window, min-max where it has none) or minmax (the image's own range)")


# ----------------------------------------------------------------------------------- the limit
def max_image_pixels() -> int:
    """`$CHESTX_MAX_IMAGE_PIXELS`, else 100,000,000 (read at every call)."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV}={os.environ[MAX_PIXELS_ENV]!r} must be a positive number of pixels, "
                         f"e.g. {MAX_PIXELS_ENV}=200000000; unset it for the default {DEFAULT_MAX_IMAGE_PIXELS:,}")
    return value


def check_pixel_count(path: str | Path, width: int, height: int, frames: int = 1, what: str = "its header") -> None:
    """Refuse an image whose declared width x height (x frames) is over `max_image_pixels()`."""
    if width < 1 or height < 1:
        raise image_error(path, f"{what} declares an empty image ({width} x {height})")
    limit = max_image_pixels()
    pixels = int(width) * int(height) * max(1, int(frames))
    if pixels > limit:
        size = f"{width} x {height}" + (f" x {frames} frames" if frames > 1 else "")
        raise image_error(path, f"{what} declares {size} = {pixels:,} pixels, over the limit of {limit:,} "
                                f"({MAX_PIXELS_ENV}); refused before decoding (a decompression bomb?). If the image "
                                f"is genuine, raise the limit: export {MAX_PIXELS_ENV}={pixels}")


def check_file_size(path: str | Path, size: int) -> None:
    """Refuse a file too large to hold any image within the pixel limit, before reading it."""
    limit = max_image_pixels()
    most = FILE_BYTES_PER_PIXEL * limit + FILE_BYTES_SLACK
    if size > most:
        raise image_error(path, f"the file has {size:,} bytes, more than any image within the limit of {limit:,} "
                                f"pixels ({MAX_PIXELS_ENV}) can need ({most:,} bytes); raise {MAX_PIXELS_ENV} if it "
                                "is a genuine image")


# ----------------------------------------------------------------------------------- parsers
def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk; None when the bytes are not a PNG with IHDR first."""
    if not data.startswith(PNG_MAGIC) or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return struct.unpack(">II", data[16:24])


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOFn (JPEG) or SOF55 (JPEG-LS) segment; None when there is none
    in `data` (not a JPEG, or the frame header lies beyond the bytes given)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    offset, end = 2, len(data)
    while offset + 4 <= end:
        if data[offset] != 0xFF:
            return None  # not at a marker: corrupt
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _STANDALONE:
            offset += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI / SOS before any frame header
            return None
        (length,) = struct.unpack(">H", data[offset + 2:offset + 4])
        if marker in _SOF_MARKERS:
            if offset + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[offset + 5:offset + 9])
            return width, height
        offset += 2 + length
    return None


def j2k_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG 2000 codestream's SIZ segment (Xsiz - XOsiz, Ysiz - YOsiz); a JP2
    file's codestream box is found first. None when the bytes hold no SIZ."""
    offset = 0
    if data.startswith(b"\x00\x00\x00\x0cjP  "):  # JP2 boxes: find the contiguous codestream box
        offset = 12
        while offset + 8 <= len(data):
            length, box = struct.unpack(">I4s", data[offset:offset + 8])
            if box == b"jp2c":
                offset += 8
                break
            if length < 8:
                return None
            offset += length
    if data[offset:offset + 4] != b"\xff\x4f\xff\x51" or len(data) < offset + 24:
        return None
    xsiz, ysiz, x0, y0 = struct.unpack(">IIII", data[offset + 8:offset + 24])
    return xsiz - x0, ysiz - y0


def looks_like_dicom(head: bytes, path: str | Path) -> bool:
    """DICOM by content: 'DICM' at byte 128; or no preamble (a raw data set) starting with group 0002 / 0008,
    or any non-PNG/JPEG file with a DICOM suffix (.dcm, .dicom, .dic), which pydicom then reads with force."""
    if head[128:132] == DICOM_MAGIC:
        return True
    if head.startswith(PNG_MAGIC) or head.startswith(JPEG_MAGIC):
        return False
    if head[:2] in (b"\x02\x00", b"\x08\x00") and head[3:4] == b"\x00":
        return True
    return Path(path).suffix.lower() in DICOM_SUFFIXES


def check_raster_header(data: bytes, path: str | Path, whole_file: bool = True) -> None:
    """Size check of a non-DICOM file from its header: PNG / JPEG parsed here, other formats via Pillow
    (from `data`, or from the file when `data` is only its first bytes: a TIFF's IFD may sit at its end)."""
    if data.startswith(PNG_MAGIC):
        size = png_size(data)
        if size is None:
            raise image_error(path, "corrupt PNG: no IHDR chunk after the signature")
        check_pixel_count(path, *size, what="its PNG header (IHDR)")
        return
    if data.startswith(JPEG_MAGIC):
        size = jpeg_size(data)
        if size is None:
            raise image_error(path, "corrupt JPEG: no frame header (SOFn) before the image data")
        if size[1] == 0:
            raise image_error(path, "JPEG without a frame height (DNL marker); re-save it as a plain JPEG or PNG")
        check_pixel_count(path, *size, what="its JPEG frame header (SOF)")
        return
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if whole_file else path) as im:  # lazy: reads the header only
            size = im.size
    except Image.DecompressionBombError as err:  # Pillow's own limit (Image.MAX_IMAGE_PIXELS) is lower
        raise image_error(path, f"Pillow refused it: {err}") from err
    except UnidentifiedImageError as err:
        raise image_error(path, "not an image file chestx can read (PNG, JPEG, TIFF, BMP, WebP or DICOM)") from err
    except (OSError, ValueError, SyntaxError, struct.error) as err:
        raise image_error(path, f"corrupt image header ({type(err).__name__}: {err})") from err
    check_pixel_count(path, *size, what="its header")


def check_complete(data: bytes, path: str | Path) -> None:
    """Detect truncated PNG / JPEG files from their last bytes (decoders may pad them silently)."""
    if data.startswith(PNG_MAGIC) and not data.rstrip(b"\x00").endswith(PNG_IEND):
        raise image_error(path, f"truncated PNG (no IEND chunk at the end of its {len(data)} bytes); "
                                "re-copy or re-extract it")
    if data.startswith(JPEG_MAGIC) and JPEG_EOI not in data[-1024:]:
        raise image_error(path, f"truncated JPEG (no end-of-image marker in its last bytes, {len(data)} bytes); "
                                "re-copy it")


def read_image_bytes(path: str | Path) -> bytes:
    """The whole file, after checking its size against the limit (nothing read when it is over)."""
    try:
        with open(path, "rb") as handle:
            check_file_size(path, os.fstat(handle.fileno()).st_size)
            data = handle.read()
    except OSError as err:
        raise image_error(path, f"{type(err).__name__}: {err.strerror or err}") from err
    if not data:
        raise image_error(path, "the file is empty (0 bytes)")
    return data


# ----------------------------------------------------------------------------------- set-up check
def probe_image(path: str | Path) -> None:
    """Cheap check that `path` can be decoded, without decoding it; raises `ImageReadError` naming it.

    Format by content, size from the header against the limit, truncation from the last bytes
    (PNG / JPEG); for DICOM the header, the Pixel Data element and a decoder for its transfer syntax.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise image_error(path, "the file is empty (0 bytes)")
            check_file_size(path, size)
            head = handle.read(4096)
            if head.startswith(JPEG_MAGIC) and jpeg_size(head) is None:  # frame header after large APPn segments
                head += handle.read(HEAD_BYTES - len(head))
            if looks_like_dicom(head, path):
                from chestx.data.images.dicom import probe_dicom

                handle.seek(0)
                probe_dicom(handle, path)
                return
            if size > len(head) and (head.startswith(PNG_MAGIC) or head.startswith(JPEG_MAGIC)):
                handle.seek(max(size - 1024, 0))
                tail = handle.read()
            else:
                tail = b""
    except OSError as err:
        raise image_error(path, f"{type(err).__name__}: {err.strerror or err}") from err
    if head.startswith(JPEG_MAGIC) and jpeg_size(head) is None and size > len(head):
        head = Path(path).read_bytes()  # frame header after > 256 KiB of metadata: rare
    check_raster_header(head, path, whole_file=size <= len(head))
    check_complete(head + tail if tail else head, path)


def _probe_reason(path: str | Path) -> str | None:
    try:
        probe_image(path)
    except ImageReadError as err:
        return str(err)
    return None


def find_unreadable(paths: Sequence[str | Path], workers: int | None = None) -> list[tuple[int, str]]:
    """(index, reason) of every file in `paths` that `probe_image` refuses, in order.

    `workers=None` times the first files on one thread and keeps one thread while a file takes under
    `SLOW_PROBE_S` (page cache, fast disk: 32 us per file, 3.6 s for 112,120 NIH files on this project's
    2-core VM, where threads took 8 s for contending over the GIL); slower files (cold or network
    storage: latency, not Python) go to a pool of up to 8 threads. `workers=n` forces n threads.
    """
    paths = list(paths)
    if workers is None:
        started = time.perf_counter()
        head = [_probe_reason(p) for p in paths[:PROBE_SAMPLE]]
        slow = (time.perf_counter() - started) / max(1, len(head)) > SLOW_PROBE_S
        workers = min(8, 2 * (os.cpu_count() or 1)) if slow else 1
        rest = paths[PROBE_SAMPLE:]
    else:
        head, rest = [], paths
    if workers <= 1 or len(rest) < 2:
        reasons = head + [_probe_reason(p) for p in rest]
    else:
        with ThreadPoolExecutor(workers) as pool:
            reasons = head + list(pool.map(_probe_reason, rest))
    return [(i, reason) for i, reason in enumerate(reasons) if reason is not None]
