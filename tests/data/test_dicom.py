"""DICOM decoding: files written with pydicom from real NIH pixels, each decoded and compared with the uint8 image
computed here, independently, from the formulas of DICOM PS3.3 C.11 (numpy only, no chestx code in the reference).

The headers mirror real chest radiographs: CR (SOP class 1.2.840.10008.5.1.4.1.1.1, MONOCHROME1, 12 bits stored
in 16, a VOI LUT Sequence whose LUT Descriptor declares 16 bits, LUT Explanation "NK5", Rescale Type "LOG_E REL",
as in Open-i's headers, `../shared/data/openi/nlmcxr_dicom_metadata.csv.gz`) and DX For Presentation (MONOCHROME2,
Presentation LUT Shape IDENTITY, a window centre / width).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000Lossless, JPEGLSLossless, ExplicitVRLittleEndian, RLELossless, UID, generate_uid,
)

from chestx.data.images import dicom as dicom_mod
from chestx.data.images.check import ImageReadError, probe_image
from chestx.data.images.read import load_grayscale

CR = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
DX = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
COMPRESSED = [JPEG2000Lossless, JPEGLSLossless, RLELossless]


@pytest.fixture(scope="module")
def gray(sample_root: Path) -> np.ndarray:
    """A real NIH image, 256 px (uint8)."""
    with Image.open(sorted((sample_root / "images").glob("*.png"))[3]) as im:
        return np.asarray(im.convert("L"))  # (256, 256) uint8


def write_dicom(path: Path, stored: np.ndarray, *, bits_stored: int = 12, photometric: str = "MONOCHROME2",
                syntax: UID = ExplicitVRLittleEndian, sop_class: str = DX, preamble: bool = True,
                bits_allocated: int = 16, **attributes) -> Path:
    """A single-frame chest radiograph with `stored` as its pixel data ((u)int16, or (u)int32 with
    bits_allocated=32), written by pydicom."""
    signed = np.issubdtype(stored.dtype, np.signedinteger)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX" if sop_class == DX else "CR"
    ds.PatientID, ds.PatientSex, ds.BodyPartExamined, ds.ViewPosition = "1000", "F", "CHEST", "PA"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.ImagerPixelSpacing = [0.15, 0.15]
    if sop_class == DX:
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    for key, value in attributes.items():
        setattr(ds, key, value)
    arr = stored.astype(f"{'int' if signed else 'uint'}{bits_allocated}")
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OW"
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, arr)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:  # a raw data set: no 128-byte preamble, no 'DICM', no file meta (implicit VR little endian)
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True)
    return path


# ---------------------------------------------------------------------- independent references (PS3.3 C.11.2)
def linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """C.11.2.1.2.1 with ymin = 0, ymax = 255."""
    x = x.astype(np.float64)
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    y[x <= c - 0.5 - (w - 1) / 2] = 0
    y[x > c - 0.5 + (w - 1) / 2] = 255
    return np.rint(y).astype(np.uint8)


def linear_exact(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """C.11.2.1.3.2."""
    x = x.astype(np.float64)
    y = ((x - c) / w + 0.5) * 255
    y[x <= c - w / 2] = 0
    y[x > c + w / 2] = 255
    return np.rint(y).astype(np.uint8)


def sigmoid(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """C.11.2.1.3.1."""
    return np.rint(255 / (1 + np.exp(-4 * (x.astype(np.float64) - c) / w))).astype(np.uint8)


def minmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return np.rint((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8)


def voi_lut_sequence(entries: np.ndarray, first: int, bits: int = 16) -> list[Dataset]:
    item = Dataset()
    item.LUTDescriptor = [len(entries), first, bits]
    item.LUTExplanation = "NK5"
    item.LUTData = [int(v) for v in entries]
    item["LUTData"].VR = "US"
    return [item]


def _cases(gray: np.ndarray) -> dict[str, tuple[np.ndarray, dict, dict[str, np.ndarray]]]:
    """name -> (stored values, write_dicom options, expected uint8 per data.dicom_window)."""
    g = gray.astype(np.int64)
    s12 = (g * 16).astype(np.uint16)  # 12 bits stored: 0..4080
    m1 = (4095 - g * 16).astype(np.uint16)  # MONOCHROME1: low values are white
    s16 = (g * 257).astype(np.uint16)  # full 16 bits
    rescaled = s16 * 0.5 - 1000.0  # Rescale Slope 0.5, Intercept -1000
    signed = (g * 64 - 8000).astype(np.int16)
    lut = np.rint(4095 * (np.arange(3000) / 2999.0) ** 0.7).astype(np.int64)  # a 12-bit gamma curve from value 600
    lut_out = lut[np.clip(m1.astype(np.int64) - 600, 0, len(lut) - 1)]
    return {
        "mono2_12bit_window": (s12, dict(WindowCenter=1800, WindowWidth=2400),
                               {"voi": linear(s12, 1800, 2400), "minmax": minmax(s12)}),
        "mono1_12bit_window": (m1, dict(photometric="MONOCHROME1", WindowCenter=2000, WindowWidth=3000),
                               {"voi": 255 - linear(m1, 2000, 3000), "minmax": 255 - minmax(m1)}),
        "full16_rescale_window": (s16, dict(bits_stored=16, RescaleSlope=0.5, RescaleIntercept=-1000,
                                            RescaleType="US", WindowCenter=[14000, 9000], WindowWidth=[26000, 4000]),
                                  {"voi": linear(rescaled, 14000, 26000), "minmax": minmax(rescaled)}),
        "signed16_no_window": (signed, dict(bits_stored=16), {"voi": minmax(signed), "minmax": minmax(signed)}),
        "cr_voi_lut_sequence": (m1, dict(photometric="MONOCHROME1", sop_class=CR, RescaleSlope=1, RescaleIntercept=0,
                                         RescaleType="LOG_E REL", VOILUTSequence=voi_lut_sequence(lut, 600),
                                         WindowCenter=100, WindowWidth=50),  # the LUT wins over the window
                                {"voi": 255 - np.rint(lut_out / 4095 * 255).astype(np.uint8),
                                 "minmax": 255 - minmax(m1)}),
        "linear_exact": (s12, dict(WindowCenter=2000, WindowWidth=1500, VOILUTFunction="LINEAR_EXACT"),
                         {"voi": linear_exact(s12, 2000, 1500), "minmax": minmax(s12)}),
        "sigmoid": (s12, dict(WindowCenter=2000, WindowWidth=1500, VOILUTFunction="SIGMOID"),
                    {"voi": sigmoid(s12, 2000, 1500), "minmax": minmax(s12)}),
        "threshold_width_1": (s12, dict(WindowCenter=2000, WindowWidth=1),
                              {"voi": np.where(s12 < 2000, 0, 255).astype(np.uint8), "minmax": minmax(s12)}),
    }


CASE_NAMES = ["mono2_12bit_window", "mono1_12bit_window", "full16_rescale_window", "signed16_no_window",
              "cr_voi_lut_sequence", "linear_exact", "sigmoid", "threshold_width_1"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_uncompressed_decodes_to_the_expected_uint8(tmp_path: Path, gray: np.ndarray, name: str) -> None:
    stored, options, expected = _cases(gray)[name]
    path = write_dicom(tmp_path / f"{name}.dcm", stored, **options)
    for window in ("voi", "minmax"):
        got = load_grayscale(path, dicom_window=window)
        assert got.shape == gray.shape and got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected[window], err_msg=f"{name}, dicom_window={window}")
    probe_image(path)  # the set-up check passes


@pytest.mark.parametrize("syntax", COMPRESSED, ids=lambda uid: uid.name)
@pytest.mark.parametrize("name", ["mono2_12bit_window", "mono1_12bit_window", "full16_rescale_window"])
def test_compressed_syntaxes_decode_losslessly(tmp_path: Path, gray: np.ndarray, syntax: UID, name: str) -> None:
    stored, options, expected = _cases(gray)[name]
    path = write_dicom(tmp_path / "c.dcm", stored, syntax=syntax, **options)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds["PixelData"].is_undefined_length, "the pixel data are encapsulated (compressed)"
    np.testing.assert_array_equal(load_grayscale(path), expected["voi"])
    np.testing.assert_array_equal(load_grayscale(path, dicom_window="minmax"), expected["minmax"])
    probe_image(path)


def test_decoder_plugins_are_the_maintained_ones() -> None:
    """JPEG 2000 via pylibjpeg(-openjpeg), JPEG-LS / JPEG lossless via pylibjpeg(-libjpeg) or pyjpegls, RLE native."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1

    assert "pylibjpeg" in get_decoder(JPEG2000Lossless).available_plugins
    assert {"pylibjpeg", "pyjpegls"} & set(get_decoder(JPEGLSLossless).available_plugins)
    assert "pylibjpeg" in get_decoder(JPEGLosslessSV1).available_plugins
    assert "pydicom" in get_decoder(RLELossless).available_plugins


def test_raw_data_set_without_preamble(tmp_path: Path, gray: np.ndarray) -> None:
    stored, options, expected = _cases(gray)["mono2_12bit_window"]
    path = write_dicom(tmp_path / "raw.dcm", stored, preamble=False, **options)
    head = path.read_bytes()[:132]
    assert head[128:132] != b"DICM" and head[:2] == b"\x08\x00", "starts with group 0008, no preamble"
    np.testing.assert_array_equal(load_grayscale(path), expected["voi"])
    other = path.rename(tmp_path / "raw.img")  # recognised by content, not by its suffix
    np.testing.assert_array_equal(load_grayscale(other), expected["voi"])
    probe_image(other)
    named_png = write_dicom(tmp_path / "x.png", stored, **options)  # 'DICM' at byte 128 wins over the suffix
    np.testing.assert_array_equal(load_grayscale(named_png), expected["voi"])


def test_rgb_secondary_capture_is_luma(tmp_path: Path, gray: np.ndarray) -> None:
    import cv2

    rgb = np.stack([gray, np.roll(gray, 5, axis=1), 255 - gray], axis=-1)  # (256, 256, 3) uint8
    path = write_dicom(tmp_path / "rgb.dcm", gray.astype(np.uint16))
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    del ds.PresentationLUTShape
    ds.PixelData = rgb.tobytes()
    ds.save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(load_grayscale(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def test_invalid_window_falls_back_to_min_max(tmp_path: Path, gray: np.ndarray, caplog) -> None:
    stored = (gray.astype(np.uint16) * 16)
    path = write_dicom(tmp_path / "w0.dcm", stored, WindowCenter=2000, WindowWidth=0)
    with caplog.at_level(logging.WARNING):
        got = load_grayscale(path)
    np.testing.assert_array_equal(got, minmax(stored))
    assert "w0.dcm" in caplog.text and "invalid window" in caplog.text


# ---------------------------------------------------------------------- unreadable files
def _bad_files(tmp_path: Path, gray: np.ndarray) -> dict[str, tuple[Path, str, bool]]:
    """name -> (file, reason pattern, whether the header check already refuses it)."""
    stored = gray.astype(np.uint16) * 16
    out: dict[str, tuple[Path, str, bool]] = {}
    text = tmp_path / "notes.dcm"
    text.write_text("patient list, not an image\n" * 20)
    out["not_dicom"] = (text, r"not (a readable )?(a )?DICOM file", True)

    path = write_dicom(tmp_path / "sr.dcm", stored)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    out["no_pixel_data"] = (path, r"no Pixel Data \(7FE0,0010\)", True)

    path = write_dicom(tmp_path / "mpeg.dcm", stored, syntax=RLELossless)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile / Main Level
    ds.save_as(path, enforce_file_format=True)
    out["unsupported_syntax"] = (path, r"unsupported transfer syntax MPEG2", True)

    path = write_dicom(tmp_path / "cut.dcm", stored)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - stored.nbytes // 2])
    out["truncated"] = (path, r"truncated|cannot decode|not a readable DICOM", True)

    path = write_dicom(tmp_path / "cut_j2k.dcm", stored, syntax=JPEG2000Lossless)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    out["truncated_compressed"] = (path, r"truncated DICOM", True)

    path = write_dicom(tmp_path / "cine.dcm", np.concatenate([stored, stored]), NumberOfFrames=2)
    ds = pydicom.dcmread(path)
    ds.Rows = stored.shape[0]
    ds.save_as(path, enforce_file_format=True)
    out["multi_frame"] = (path, r"multi-frame DICOM \(2 frames\)", True)

    path = write_dicom(tmp_path / "palette.dcm", stored, photometric="PALETTE COLOR")
    out["palette"] = (path, r"PALETTE COLOR is not supported", True)

    lut = voi_lut_sequence(np.arange(4096), 0, bits=9)  # PS3.3 C.11.2.1.1: 8 or 10-16 bits per entry
    path = write_dicom(tmp_path / "lut9.dcm", stored, VOILUTSequence=lut)
    out["invalid_voi_lut"] = (path, r"unsupported DICOM \(NotImplementedError: '9' bits per LUT entry", False)
    return out


BAD = ["not_dicom", "no_pixel_data", "unsupported_syntax", "truncated", "truncated_compressed", "multi_frame",
       "palette", "invalid_voi_lut"]


@pytest.mark.parametrize("name", BAD)
def test_unreadable_dicom_names_the_file_and_the_reason(tmp_path: Path, gray: np.ndarray, name: str) -> None:
    path, reason, header_detects = _bad_files(tmp_path, gray)[name]
    pattern = rf"{path.name}'.*({reason})"
    with pytest.raises(ImageReadError, match=pattern):
        load_grayscale(path)
    if header_detects:  # the set-up check (no pixel decoded) refuses it too
        with pytest.raises(ImageReadError, match=pattern):
            probe_image(path)
    else:
        probe_image(path)  # only the decode shows it: an ImageReadError naming the file, as above


def test_missing_decoder_plugin_says_what_to_install(tmp_path: Path, gray: np.ndarray, monkeypatch) -> None:
    path = write_dicom(tmp_path / "j2k.dcm", gray.astype(np.uint16), syntax=JPEG2000Lossless)

    class NoPlugin:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0"]

    monkeypatch.setattr(dicom_mod, "get_decoder", lambda uid: NoPlugin())
    for check in (load_grayscale, probe_image):
        with pytest.raises(ImageReadError, match=r"j2k\.dcm.*needs a decoder plugin.*pylibjpeg-openjpeg"):
            check(path)


# ---------------------------------------------------------------------- end to end: ChestXData, cache, loaders
class DicomFolder:
    """Builds a minimal `ChestXData` over DICOM files: one patient per file, splits train / val / test in turn."""

    @staticmethod
    def make(files: list[Path], **options):
        import pandas as pd

        from chestx.data.labels.table import LabelTable
        from chestx.data.datasets.base import ChestXData

        class _Folder(ChestXData):
            def load_table(self):
                n = len(files)
                frame = pd.DataFrame({"image_id": [f.name for f in files], "patient_id": [f"p{i}" for i in range(n)],
                                      "path": [str(f) for f in files], "view": "PA", "age": np.nan, "sex": "F",
                                      "no_finding": False})
                labels = (np.arange(n) % 2).astype(np.float32)[:, None]  # (N, 1)
                split = np.array(["train", "val", "test"] * n)[:n]
                return LabelTable(frame, labels, np.zeros((n, 1), dtype=bool), ["Edema"]), split

            def resolve_paths(self, table):
                return [Path(p) for p in table.frame["path"]], []

        return _Folder(root=str(files[0].parent), **options)


def _dataset_files(tmp_path: Path, gray: np.ndarray) -> tuple[list[Path], list[Path]]:
    """Nine DICOM files (native, JPEG 2000, JPEG-LS, RLE; MONOCHROME1 / 2) and two unreadable ones among them."""
    folder = tmp_path / "dicom"
    folder.mkdir()
    cases = _cases(gray)
    names = ["mono2_12bit_window", "mono1_12bit_window", "full16_rescale_window"]
    good = []
    for i, syntax in enumerate([ExplicitVRLittleEndian, *COMPRESSED]):
        for name in names[: 3 if i == 0 else 2]:
            stored, options, _ = cases[name]
            good.append(write_dicom(folder / f"{i}_{name}.dcm", stored, syntax=syntax, **options))
    bad = _bad_files(folder, gray)
    unreadable = [bad["no_pixel_data"][0], bad["truncated_compressed"][0]]
    for path in folder.iterdir():
        if path not in good and path not in unreadable:
            path.unlink()
    return sorted(good + unreadable), unreadable


def test_chestxdata_stops_or_drops_unreadable_dicom(tmp_path: Path, gray: np.ndarray, caplog) -> None:
    from chestx.data.images.check import UnreadableImagesError
    from chestx.data.labels.table import DataError

    files, unreadable = _dataset_files(tmp_path, gray)
    data = DicomFolder.make(files)
    with pytest.raises(UnreadableImagesError, match=r"(?s)2 of 11 image files cannot be read.*missing_images=drop"
                                                    r".*(sr|cut_j2k)\.dcm.*(sr|cut_j2k)\.dcm") as err:
        data.prepare()
    assert isinstance(err.value, DataError) and isinstance(err.value, ImageReadError)
    assert data.table is None, "nothing half-set-up after the error"

    data = DicomFolder.make(files, missing_images="drop")
    with caplog.at_level(logging.WARNING):
        data.prepare()
    assert "Dropping 2 of 11 rows whose image cannot be read" in caplog.text
    assert all(p.name in caplog.text for p in unreadable)
    assert len(data.table) == 9 and set(data.paths) == set(files) - set(unreadable)
    assert not set(data.table.frame["image_id"]) & {p.name for p in unreadable}


@pytest.mark.slow
def test_datamodule_decodes_dicom_once_with_the_configured_window(tmp_path: Path, gray: np.ndarray) -> None:
    """data.dicom_window reaches the uncached loader and the resize cache (whose key records it)."""
    import json

    from chestx.data.images.cache import INDEX, CachedPixels
    from chestx.data.loading.datamodule import ChestXDataModule
    from chestx.data.loading.dataset import FileSource
    from chestx.data.images.read import resize_square

    files, _ = _dataset_files(tmp_path, gray)
    options = dict(missing_images="drop", dicom_window="minmax")  # loader: LoaderOptions() (0 workers, no pinning)
    plain = ChestXDataModule(DicomFolder.make(files, **options), image_size=32)
    cached = ChestXDataModule(DicomFolder.make(files, cache=True, cache_dir=str(tmp_path / "c"), **options),
                              image_size=32)
    plain.setup()
    cached.setup()
    assert isinstance(plain.datasets["train"].pixels, FileSource)
    assert isinstance(cached.datasets["train"].pixels, CachedPixels)
    (folder,) = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert json.loads((folder / INDEX).read_text())["decoding"]["dicom_window"] == "minmax"
    paths = cached.data.paths
    rows = {name: np.flatnonzero(cached.data.split == name) for name in ("train", "val", "test")}
    for name, index in rows.items():
        for i, row in enumerate(index):
            expected = resize_square(load_grayscale(paths[row], dicom_window="minmax"), 32)
            np.testing.assert_array_equal(cached.datasets[name].pixels(i), expected)
            np.testing.assert_array_equal(resize_square(plain.datasets[name].pixels(i), 32), expected)
    voi = resize_square(load_grayscale(paths[rows["train"][0]]), 32)
    assert not np.array_equal(voi, cached.datasets["train"].pixels(0)), "the window changes these pixels"


# ---------------------------------------------------------------------- edge cases of files from the wild (issue 25)
def test_empty_modality_lut_item_is_skipped(tmp_path: Path, gray: np.ndarray) -> None:
    """A Modality LUT Sequence whose item has neither LUT Descriptor nor LUT Data (a real pylibjpeg-data file has
    one) is ignored, as DCMTK ignores an invalid table (DiMonoModality::checkTable) and as the VOI path skips such an
    item: Rescale Slope / Intercept apply when present, else the stored values. pydicom's apply_modality_lut raises
    on it; pydicom's own pipeline on the file without the sequence is the reference."""
    from pydicom.pixels import apply_modality_lut

    stored = (gray.astype(np.uint16) * 16)  # 12 bits
    for name, rescale in (("rescaled", dict(RescaleSlope=0.5, RescaleIntercept=-100)), ("plain", {})):
        path = write_dicom(tmp_path / f"{name}.dcm", stored, ModalityLUTSequence=[Dataset()],
                           WindowCenter=900, WindowWidth=1600, **rescale)
        ds = pydicom.dcmread(path)
        with pytest.raises(AttributeError):
            apply_modality_lut(ds.pixel_array, ds)  # pydicom: the empty item has no LUTDescriptor
        del ds.ModalityLUTSequence
        expected = linear(apply_modality_lut(ds.pixel_array, ds), 900, 1600)
        assert np.array_equal(load_grayscale(path), expected), name
        probe_image(path)


def _ramp_file(tmp_path: Path, entries: int, bits: int, stored: np.ndarray) -> Path:
    """A VOI LUT Sequence item: a ramp of `entries` entries from 0 to 255 (8-bit values), declared `bits` bits."""
    ramp = np.arange(entries) * 256 // entries  # 4096 entries: 0, 0, ..., 255
    return write_dicom(tmp_path / f"ramp{entries}_{bits}.dcm", stored,
                       VOILUTSequence=voi_lut_sequence(ramp, 0, bits=bits))


def test_8bit_voi_lut_longer_than_256_entries_is_looked_up_in_full(tmp_path: Path) -> None:
    """An 8-bit VOI LUT with 4,096 entries (issue 25): each stored value indexes the whole table. pydicom's apply_voi
    indexes an 8-bit table in uint8, so inputs wrap modulo 256 ([0, 1024, 2048, 4095] -> [0, 0, 0, 15]); chestx looks
    the table up in int64 ([0, 64, 128, 255])."""
    from pydicom.pixels import apply_voi

    stored = np.array([[0, 1024], [2048, 4095]], dtype=np.uint16)  # (2, 2) 12 bits
    path = _ramp_file(tmp_path, 4096, 8, stored)
    assert np.array_equal(load_grayscale(path), [[0, 64], [128, 255]])
    ds = pydicom.dcmread(path)
    assert apply_voi(ds.pixel_array, ds).ravel().tolist() == [0, 0, 0, 15]  # why chestx does its own lookup


@pytest.mark.parametrize("bits", [8, 16])
def test_voi_lut_within_256_entries_agrees_with_pydicom(tmp_path: Path, gray: np.ndarray, bits: int) -> None:
    """Where pydicom's apply_voi is right (at most 256 entries, or a 16-bit table: no wrap), chestx gives its output
    (a table of 8-bit values, so scaled by 255 / 255: unchanged), values below / above the table included."""
    from pydicom.pixels import apply_voi

    stored = gray.astype(np.uint16) + 100  # 100 .. 355: below, inside and above a table starting at 150
    ramp = np.rint(255 * (np.arange(200) / 199.0) ** 0.5).astype(np.int64)
    path = write_dicom(tmp_path / f"lut{bits}.dcm", stored, bits_stored=12,
                       VOILUTSequence=voi_lut_sequence(ramp, 150, bits=bits))
    ds = pydicom.dcmread(path)
    expected = apply_voi(ds.pixel_array, ds).astype(np.uint8)
    assert np.array_equal(load_grayscale(path), expected)


def test_uint32_pixels_above_int32_decode(tmp_path: Path, gray: np.ndarray) -> None:
    """32-bit unsigned stored values above 2**31 - 1 (issue 25: OverflowError) decode by the same rule: min-max, or
    the window, against the references computed here."""
    stored = gray.astype(np.uint32) * 16 + 3_000_000_000  # (256, 256) uint32, all above 2**31 - 1
    path = write_dicom(tmp_path / "u32.dcm", stored, bits_allocated=32, bits_stored=32)
    assert pydicom.dcmread(path).pixel_array.dtype == np.uint32
    assert np.array_equal(load_grayscale(path), minmax(stored))
    path = write_dicom(tmp_path / "u32w.dcm", stored, bits_allocated=32, bits_stored=32,
                       WindowCenter=3_000_001_800, WindowWidth=2400)
    assert np.array_equal(load_grayscale(path), linear(stored, 3_000_001_800, 2400))
    wide = gray.astype(np.uint32) * 65536 + 2**31  # spans more than MAX_TABLE_LEVELS: decoded per pixel
    path = write_dicom(tmp_path / "u32wide.dcm", wide, bits_allocated=32, bits_stored=32)
    assert np.array_equal(load_grayscale(path), minmax(wide))


def test_missing_photometric_interpretation_refused_by_check_and_decoder(tmp_path: Path, gray: np.ndarray,
                                                                          caplog) -> None:
    """Photometric Interpretation (0028,0004) is Type 1 in the Image Pixel Module (PS3.3 C.7.6.3): pydicom will not
    decode a file without it, nor will DCMTK (outside its ACR-NEMA mode). The set-up check and the decoder both refuse
    it, naming the attribute, so data.missing_images=drop drops it at set-up instead of failing mid-epoch."""
    stored = gray.astype(np.uint16) * 16
    path = write_dicom(tmp_path / "no_pi.dcm", stored)
    ds = pydicom.dcmread(path)
    del ds.PhotometricInterpretation
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(AttributeError, match="Photometric Interpretation"):
        pydicom.dcmread(path).pixel_array
    for check in (probe_image, load_grayscale):
        with pytest.raises(ImageReadError, match=r"no_pi\.dcm.*Photometric Interpretation \(0028,0004\)"):
            check(path)
    good = [write_dicom(tmp_path / f"good{i}.dcm", stored) for i in range(4)]
    data = DicomFolder.make([*good[:3], path, good[3]], missing_images="drop")  # it is a train image
    with caplog.at_level(logging.WARNING):
        data.prepare()
    assert "no_pi.dcm" in caplog.text and set(data.paths) == set(good)
