"""Image decoding on real NIH originals (RGBA and L, 1024 px), the embedded NIH sample, and files derived from them.

8-bit images decode byte for byte; deeper ones (16-bit PNG / TIFF) by min-max (chestx.data.images.read docstring),
checked against an independent numpy reference.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from chestx.data.images.read import ImageReadError, _decode_pillow, load_grayscale, resize_square
from chestx.data.labels.table import DataError

RGBA = "00000100_000.png"
GRAY = "00000075_000.png"


@pytest.fixture(scope="module")
def gray(fullres_fixtures: Path) -> np.ndarray:
    return np.asarray(Image.open(fullres_fixtures / GRAY))  # (1024, 1024) uint8


def test_real_originals(fullres_fixtures: Path, gray: np.ndarray) -> None:
    with Image.open(fullres_fixtures / RGBA) as im:
        assert im.mode == "RGBA"
        luma = np.asarray(im.convert("RGB").convert("L"))
    rgba = load_grayscale(fullres_fixtures / RGBA)
    assert rgba.shape == (1024, 1024) and rgba.dtype == np.uint8
    np.testing.assert_array_equal(rgba, luma)
    l_img = load_grayscale(fullres_fixtures / GRAY)
    assert l_img.shape == (1024, 1024) and l_img.dtype == np.uint8
    np.testing.assert_array_equal(l_img, gray)


def test_colour_rgb_is_bt601_luma(tmp_path: Path, gray: np.ndarray) -> None:
    rgb = np.stack([gray, np.roll(gray, 7, axis=0), 255 - gray], axis=-1)[:256, :256]  # (256, 256, 3)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    expected = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(load_grayscale(tmp_path / "rgb.png") - expected).max() <= 1.0


def _minmax_reference(values: np.ndarray) -> np.ndarray:
    """Independent reference of the 16-bit rule: round((v - min) / (max - min) * 255)."""
    v = values.astype(np.float64)
    return np.rint((v - v.min()) / (v.max() - v.min()) * 255).astype(np.uint8)


def test_sixteen_bit_png_is_min_max(tmp_path: Path, gray: np.ndarray) -> None:
    crop = gray[300:700, 300:700] // 2 + 40  # (400, 400) uint8 whose values do not span 0..255
    assert crop.min() >= 40 and crop.max() <= 167
    cases = {
        "full16.png": crop.astype(np.uint16) * 257,  # 16-bit range
        "twelve.png": np.rint(crop.astype(np.float64) * 4095 / 255).astype(np.uint16),  # 12-bit data in 16 bits
        "offset.png": crop.astype(np.uint16) * 40 + 9000,  # PadChest-like: a narrow band of a 16-bit range
    }
    for name, values in cases.items():
        cv2.imwrite(str(tmp_path / name), values)
        assert Image.open(tmp_path / name).mode.startswith("I")
        got = load_grayscale(tmp_path / name)
        np.testing.assert_array_equal(got, _minmax_reference(values), err_msg=name)
        assert got.min() == 0 and got.max() == 255
        for window in ("voi", "minmax"):  # a PNG carries no window: the same under both settings
            np.testing.assert_array_equal(load_grayscale(tmp_path / name, dicom_window=window), got)
    # 16-bit data that spans the full range come back as the 8-bit original
    np.testing.assert_array_equal(load_grayscale(tmp_path / "full16.png"), _minmax_reference(crop))
    # The Pillow fallback decodes the same file as mode I;16 / I.
    full = cases["full16.png"]
    assert _decode_pillow((tmp_path / "full16.png").read_bytes(), tmp_path / "full16.png").max() == full.max()


def test_sixteen_bit_tiff_and_constant_image(tmp_path: Path, gray: np.ndarray) -> None:
    values = gray[:256, :256].astype(np.uint16) * 100 + 500
    Image.fromarray(values).save(tmp_path / "x.tif")  # Pillow mode I;16 TIFF
    np.testing.assert_array_equal(load_grayscale(tmp_path / "x.tif"), _minmax_reference(values))
    cv2.imwrite(str(tmp_path / "flat.png"), np.full((32, 32), 1234, np.uint16))
    np.testing.assert_array_equal(load_grayscale(tmp_path / "flat.png"), np.zeros((32, 32), np.uint8))


def test_setup_check_reads_tiff_headers_wherever_they_are(tmp_path: Path, gray: np.ndarray) -> None:
    """libtiff (OpenCV) writes the IFD after the pixels, Pillow before them: both pass the header check."""
    from chestx.data.images.check import probe_image

    values = gray.astype(np.uint16) * 64  # (1024, 1024) 16-bit
    cv2.imwrite(str(tmp_path / "cv.tif"), values)
    Image.fromarray(values).save(tmp_path / "pil.tif")
    assert (tmp_path / "cv.tif").read_bytes()[4:8] != b"\x08\x00\x00\x00", "IFD not right after the header"
    for name in ("cv.tif", "pil.tif"):
        probe_image(tmp_path / name)
        np.testing.assert_array_equal(load_grayscale(tmp_path / name), _minmax_reference(values))


def test_embedded_nih_sample_is_byte_identical(sample_root: Path) -> None:
    """Every 8-bit image of the embedded NIH sample decodes to exactly Pillow's pixels (no stretching)."""
    for path in sorted((sample_root / "images").glob("*.png")):
        with Image.open(path) as im:
            expected = np.asarray(im.convert("L"))
        np.testing.assert_array_equal(load_grayscale(path), expected, err_msg=path.name)
        np.testing.assert_array_equal(load_grayscale(path, dicom_window="minmax"), expected, err_msg=path.name)


def test_format_by_content_not_suffix(tmp_path: Path, gray: np.ndarray) -> None:
    (tmp_path / "really_png.dcm").write_bytes(cv2.imencode(".png", gray)[1].tobytes())
    np.testing.assert_array_equal(load_grayscale(tmp_path / "really_png.dcm"), gray)
    with pytest.raises(DataError, match=r"data\.dicom_window='window'"):
        load_grayscale(tmp_path / "really_png.dcm", dicom_window="window")


def test_palette_and_jpeg(tmp_path: Path, gray: np.ndarray) -> None:
    Image.fromarray(gray).convert("P").save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_grayscale(tmp_path / "p.png"), gray)
    Image.fromarray(gray).convert("RGB").save(tmp_path / "x.jpg", quality=95)
    jpg = load_grayscale(tmp_path / "x.jpg")
    assert jpg.shape == (1024, 1024) and np.abs(jpg.astype(int) - gray).mean() < 2.0


@pytest.mark.parametrize("keep", [0.5, -12])  # half the file; only the IEND chunk cut (Pillow loads that silently)
def test_truncated_png(tmp_path: Path, fullres_fixtures: Path, keep: float) -> None:
    data = (fullres_fixtures / GRAY).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: int(len(data) * keep)] if keep > 0 else data[:keep])
    with pytest.raises(ImageReadError, match=r"cut\.png.*truncated"):
        load_grayscale(cut)


def test_truncated_jpeg(tmp_path: Path, gray: np.ndarray) -> None:
    Image.fromarray(gray).save(tmp_path / "x.jpg")
    data = (tmp_path / "x.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.jpg.*truncated"):
        load_grayscale(tmp_path / "cut.jpg")


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("this is not an image\n")
    with pytest.raises(ImageReadError, match=r"notes\.png.*not an image file chestx can read"):
        load_grayscale(tmp_path / "notes.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png.*empty"):
        load_grayscale(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match=r"absent\.png.*FileNotFoundError"):
        load_grayscale(tmp_path / "absent.png")


def test_resize_square(gray: np.ndarray) -> None:
    small = resize_square(gray, 224)
    assert small.shape == (224, 224) and small.dtype == np.uint8
    np.testing.assert_array_equal(small, cv2.resize(gray, (224, 224), interpolation=cv2.INTER_AREA))
    assert resize_square(gray[:300, :200], 512).shape == (512, 512)
    assert resize_square(gray, 1024) is gray
    with pytest.raises(ValueError, match="bicubic"):
        resize_square(gray, 64, interpolation="bicubic")


def test_setup_check_stops_or_drops_unreadable_nih_images(sample_root: Path, tmp_path: Path, caplog) -> None:
    """The real NIH sample with one PNG cut short and one replaced by a decompression bomb: data.missing_images=error
    stops at set-up naming both (no pixel decoded), drop trains on the other 619."""
    import logging
    import struct
    import zlib

    from chestx.data.images.check import UnreadableImagesError, find_unreadable
    from chestx.data.datasets.nih import NIHData

    root = tmp_path / "nih"
    (root / "images").mkdir(parents=True)
    sources = sorted((sample_root / "images").glob("*.png"))
    for src in sources:
        (root / "images" / src.name).symlink_to(src)
    cut, bomb = root / "images" / sources[10].name, root / "images" / sources[20].name
    data = sources[10].read_bytes()
    cut.unlink()
    cut.write_bytes(data[: len(data) // 3])
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 80_000, 80_000, 8, 0, 0, 0, 0)
    bomb.unlink()
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
                     + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    found = find_unreadable(sorted((root / "images").glob("*.png")), workers=2)
    assert [sorted((root / "images").glob("*.png"))[i].name for i, _ in found] == sorted([cut.name, bomb.name])

    options = dict(root=str(root), csv=str(sample_root / "Data_Entry_sample.csv"), split="random")
    with pytest.raises(UnreadableImagesError, match=rf"(?s)2 of 621 image files cannot be read.*data\.missing_images="
                                                    rf"drop.*({cut.name}|{bomb.name}).*(truncated PNG|80000 x 80000)"):
        NIHData(**options).prepare()
    data = NIHData(**options, missing_images="drop")
    with caplog.at_level(logging.WARNING):
        data.prepare()
    assert "Dropping 2 of 621 rows whose image cannot be read" in caplog.text
    assert len(data.paths) == 619 and cut not in data.paths and bomb not in data.paths
