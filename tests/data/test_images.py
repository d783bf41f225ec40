"""Image decoding on real NIH originals (RGBA and L, 1024 px) and files derived from them."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from chestx.data.images import ImageReadError, _decode_pillow, load_grayscale, resize_square

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


def test_sixteen_bit(tmp_path: Path, gray: np.ndarray) -> None:
    full = gray.astype(np.uint16) * 257  # 16-bit range, white 65535
    cv2.imwrite(str(tmp_path / "full16.png"), full)
    assert Image.open(tmp_path / "full16.png").mode.startswith("I")
    np.testing.assert_array_equal(load_grayscale(tmp_path / "full16.png"), gray)
    twelve = np.rint(gray.astype(np.float64) * 4095 / 255).astype(np.uint16)  # 12-bit data in a 16-bit PNG
    cv2.imwrite(str(tmp_path / "twelve.png"), twelve)
    np.testing.assert_array_equal(load_grayscale(tmp_path / "twelve.png"), gray)
    # The Pillow fallback decodes the same file as mode I;16 / I.
    assert _decode_pillow((tmp_path / "full16.png").read_bytes(), tmp_path / "full16.png").max() == full.max()


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
    with pytest.raises(ImageReadError, match=r"notes\.png.*not a PNG or JPEG"):
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
