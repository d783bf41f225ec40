"""chestx.predict on a DICOM input (issue 17: predict takes DICOM too): found in a folder by its suffix, decoded
by the checkpoint's own rule (data.dicom_window travels in the checkpoint), scored like its decoded pixels."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _dicom(path: Path, stored: np.ndarray, center: int, width: int) -> Path:
    """A MONOCHROME2 12-bit DX image with one VOI window, written by pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID = generate_uid(), ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, (ds.Rows, ds.Columns) = 1, "MONOCHROME2", stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = center, width
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_predict_scores_a_dicom_file_as_its_decoded_pixels(clinical_run_dir: Path, sample_root: Path,
                                                          tmp_path: Path) -> None:
    from chestx.data.images.read import load_grayscale
    from chestx.inference.batch import predict
    from chestx.inference.predictor import load_for_inference

    gray = cv2.imread(str(sorted((sample_root / "images").glob("*.png"))[0]), cv2.IMREAD_GRAYSCALE)
    folder = tmp_path / "inputs"
    folder.mkdir()
    path = _dicom(folder / "study.dcm", gray.astype(np.int64) * 16, center=1800, width=2400)
    predictor = load_for_inference(clinical_run_dir / "checkpoints" / "best.ckpt")
    assert predictor.dicom_window == "voi"  # what the run trained with (checkpoint field)
    out = predict(predictor, str(folder), tmp_path / "out", dicom_window=predictor.dicom_window)
    assert out["predictions"]["image_id"].tolist() == ["study.dcm"]
    pixels = load_grayscale(path, dicom_window="voi")  # (H, W) uint8 through the window, not the raw values
    assert pixels.shape == gray.shape and not np.array_equal(pixels, gray)
    expected = predictor.probabilities(predictor.preprocess([pixels]))[0]
    np.testing.assert_allclose(out["probs"][0], expected, atol=1e-6)
