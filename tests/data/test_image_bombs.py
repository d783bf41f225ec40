"""Decompression bombs: files whose header declares absurd dimensions are refused from the header, before any decoder
runs (OpenCV, Pillow and pydicom's pixel decoding are replaced by functions that fail the test if called)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, generate_uid

from chestx.data.images.check import (
    DEFAULT_MAX_IMAGE_PIXELS, MAX_PIXELS_ENV, ImageReadError, j2k_size, jpeg_size, max_image_pixels, png_size,
    probe_image,
)
from chestx.data.images.read import load_grayscale


@pytest.fixture
def no_decoding(monkeypatch) -> None:
    """Any pixel decoder call fails the test: refusals must come from the header alone."""
    def boom(*args, **kwargs):
        raise AssertionError("a decoder was called on a decompression bomb")

    monkeypatch.setattr(cv2, "imdecode", boom)
    monkeypatch.setattr(Image, "open", boom)
    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(boom))
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)


@pytest.fixture(scope="module")
def gray(sample_root: Path) -> np.ndarray:
    with Image.open(sorted((sample_root / "images").glob("*.png"))[0]) as im:
        return np.asarray(im.convert("L"))  # (256, 256) uint8


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A valid-looking 8-bit gray PNG of a few dozen bytes whose IHDR declares width x height."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 1024, 9)  # the first rows of zeros; a real bomb would stream zeros
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def jpeg_bomb(gray: np.ndarray, width: int, height: int) -> bytes:
    """A real baseline JPEG whose SOF0 dimensions are rewritten."""
    data = bytearray(cv2.imencode(".jpg", gray)[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def tiff_bomb(width: int, height: int) -> bytes:
    """A little-endian baseline TIFF (8-bit gray, one uncompressed strip) declaring width x height."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8),
               (278, 4, height), (279, 4, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        for tag, kind, value in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 24) + b"\x00" * 16 + ifd


def test_png_bomb_refused_from_ihdr(tmp_path: Path, no_decoding) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(100_000, 100_000))
    assert path.stat().st_size < 200 and png_size(path.read_bytes()) == (100_000, 100_000)
    pattern = r"bomb\.png.*100000 x 100000 = 10,000,000,000 pixels.*limit of 100,000,000.*CHESTX_MAX_IMAGE_PIXELS"
    for check in (load_grayscale, probe_image):
        with pytest.raises(ImageReadError, match=pattern):
            check(path)


def test_jpeg_bomb_refused_from_sof(tmp_path: Path, gray: np.ndarray, no_decoding) -> None:
    path = tmp_path / "bomb.jpg"
    path.write_bytes(jpeg_bomb(gray, 65_000, 65_000))
    assert jpeg_size(path.read_bytes()) == (65_000, 65_000)
    for check in (load_grayscale, probe_image):
        with pytest.raises(ImageReadError, match=r"bomb\.jpg.*JPEG frame header.*65000 x 65000 = 4,225,000,000"):
            check(path)


def test_tiff_bomb_refused_even_when_pillow_allows_anything(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # a program switched Pillow's own check off
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: pytest.fail("OpenCV was handed a bomb"))
    path = tmp_path / "bomb.tif"
    path.write_bytes(tiff_bomb(200_000, 100_000))
    with Image.open(path) as im:  # Pillow's lazy open reads only the header
        assert im.size == (200_000, 100_000)
    for check in (load_grayscale, probe_image):
        with pytest.raises(ImageReadError, match=r"bomb\.tif.*200000 x 100000 = 20,000,000,000 pixels"):
            check(path)


def _dicom(tmp_path: Path, gray: np.ndarray, name: str, syntax=ExplicitVRLittleEndian) -> Path:
    """A DX For Presentation file, 12 bits stored in 16, MONOCHROME2, with the NIH pixels."""
    stored = gray.astype(np.uint16) * 16  # (256, 256)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientID, ds.ViewPosition = "DX", "1", "PA"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, stored)
    ds.save_as(tmp_path / name, enforce_file_format=True)
    return tmp_path / name


def test_dicom_header_bomb_refused(tmp_path: Path, gray: np.ndarray, no_decoding) -> None:
    path = _dicom(tmp_path, gray, "bomb.dcm")
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 65535, 65535  # US: the largest a DICOM header can declare, 4.3 gigapixels
    ds.save_as(path, enforce_file_format=True)
    for check in (load_grayscale, probe_image):
        with pytest.raises(ImageReadError, match=r"bomb\.dcm.*DICOM header.*65535 x 65535 = 4,294,836,225 pixels"):
            check(path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4096, 4096, 1000  # 16.7 gigapixels in frames
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageReadError, match=r"4096 x 4096 x 1000 frames"):
        probe_image(path)


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEG2000Lossless], ids=lambda uid: uid.name)
def test_bomb_inside_compressed_dicom_frame_refused(tmp_path: Path, gray: np.ndarray, syntax, no_decoding) -> None:
    """Honest Rows / Columns, but the compressed frame's own header declares a huge image."""
    path = _dicom(tmp_path, gray, "frame.dcm", syntax=syntax)
    data = bytearray(path.read_bytes())
    if syntax == JPEGLSLossless:
        sof = data.index(b"\xff\xf7")  # SOF55
        data[sof + 5:sof + 9] = struct.pack(">HH", 60_000, 60_000)
    else:
        siz = data.index(b"\xff\x4f\xff\x51")  # SOC, SIZ: Xsiz and Ysiz follow Lsiz, Rsiz
        data[siz + 8:siz + 16] = struct.pack(">II", 60_000, 60_000)
        assert j2k_size(bytes(data[siz:])) == (60_000, 60_000)
    path.write_bytes(bytes(data))
    for check in (load_grayscale, probe_image):
        with pytest.raises(ImageReadError, match=r"frame\.dcm.*compressed frame header.*60000 x 60000"):
            check(path)


def test_limit_is_a_setting_read_at_call_time(tmp_path: Path, gray: np.ndarray, monkeypatch) -> None:
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), gray)  # 256 x 256 = 65,536 pixels
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS == 100_000_000
    monkeypatch.setenv(MAX_PIXELS_ENV, "65535")
    with pytest.raises(ImageReadError, match=r"x\.png.*over the limit of 65,535.*export CHESTX_MAX_IMAGE_PIXELS=65536"):
        load_grayscale(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "65536")
    np.testing.assert_array_equal(load_grayscale(path), gray)
    monkeypatch.setenv(MAX_PIXELS_ENV, "2e8")
    assert max_image_pixels() == 200_000_000
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=r"CHESTX_MAX_IMAGE_PIXELS='lots' must be a positive number"):
        load_grayscale(path)


def test_oversized_file_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    path = tmp_path / "huge.png"
    with open(path, "wb") as handle:  # sparse: 70 MiB that take no disk; refused from its size (fstat)
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.truncate(70 * 2**20)
    for check in (load_grayscale, probe_image):
        with pytest.raises(ImageReadError, match=r"huge\.png.*73,400,320 bytes, more than any image within the limit"):
            check(path)


def test_truncated_and_corrupt_headers_are_named(tmp_path: Path, gray: np.ndarray) -> None:
    png = cv2.imencode(".png", gray)[1].tobytes()
    (tmp_path / "no_ihdr.png").write_bytes(png[:8] + b"\x00\x00\x00\x04tEXt" + png[16:])
    with pytest.raises(ImageReadError, match=r"no_ihdr\.png.*corrupt PNG: no IHDR"):
        load_grayscale(tmp_path / "no_ihdr.png")
    jpg = cv2.imencode(".jpg", gray)[1].tobytes()
    (tmp_path / "no_sof.jpg").write_bytes(jpg[:20])
    with pytest.raises(ImageReadError, match=r"no_sof\.jpg.*(corrupt JPEG|truncated JPEG)"):
        probe_image(tmp_path / "no_sof.jpg")
