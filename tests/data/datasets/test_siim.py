"""SIIM-ACR Pneumothorax: labels of the real train-rle.csv against a pandas reference, the run-length masks against
an independent encoder and the competition's loop decoder, a DICOM tree as the download lays it out, bad inputs.

Reference rule (competition data page; torchxrayvision `SIIM_Pneumothorax_Dataset`): the header is
`ImageId, EncodedPixels` (leading space); an image is positive when any of its rows is not `-1`. Run-length:
`mask_functions.py` `rle2mask` walks (gap, length) pairs, each run starting `gap` pixels after the previous
run's end, over the column-major 1024 x 1024 grid (the caller transposes).
The DICOM fixtures carry the tags the Kaggle files carry (Modality CR, ConversionType WSD, PatientAge a plain
number string, ViewPosition, JPEG Baseline pixel data, SOP/Study/Series UIDs under 1.2.276.0.7230010.3.1),
with real X-ray pixels from the embedded NIH sample at 256 px instead of 1024.
"""
from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SIIM_GZ = "siim/siim-pneumothorax-train-rle.csv.gz"
SIZE = 1024


# ---------------------------------------------------------------------------------------- independent references
def ref_encode(mask: np.ndarray) -> str:
    """(H, W) bool -> SIIM's relative RLE: column-major runs as (gap since the previous run's end, length)."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)  # column-major
    if not flat.any():
        return "-1"
    padded = np.concatenate([[False], flat, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[0::2], edges[1::2]
    previous_end = np.concatenate([[0], ends[:-1]])
    pairs = np.stack([starts - previous_end, ends - starts], axis=1).reshape(-1)
    return " ".join(str(int(v)) for v in pairs)


def ref_rle2mask(rle: str, width: int, height: int) -> np.ndarray:
    """The competition's loop (`mask_functions.rle2mask`), restated."""
    mask = np.zeros(width * height)
    array = [int(x) for x in rle.split()]
    position = 0
    for start, length in zip(array[0::2], array[1::2]):
        position += start
        mask[position:position + length] = 1
        position += length
    return mask.reshape(width, height)


@pytest.fixture(scope="module")
def siim_raw(shared_data: Path) -> pd.DataFrame:
    path = shared_data / SIIM_GZ
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return pd.read_csv(path, dtype=str)


# ------------------------------------------------------------------------------------------------ DICOM fixtures
def write_siim_dicom(path: Path, sop_uid: str, patient: str, sex: str, age: str, view: str,
                     pixels: np.ndarray) -> None:
    """A DICOM file with the tags of the SIIM-ACR download (secondary capture, JPEG Baseline)."""
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage

    study, series = _study_series(sop_uid)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, sop_uid
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "19010101", "000000.00", ""
    ds.Modality, ds.ConversionType, ds.ReferringPhysicianName = "CR", "WSD", ""
    ds.SeriesDescription = f"view: {view}"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient, patient, "", sex
    with warnings.catch_warnings():  # '51' is not a conformant Age String; the Kaggle files store it so
        warnings.simplefilter("ignore")
        ds.PatientAge = age
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", view
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber, ds.PatientOrientation = "", 1, 1, ""
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [0.168, 0.168]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _study_series(sop_uid: str) -> tuple[str, str]:
    """Study / series UIDs in the download's pattern: ...3.1.4.<n>.<t>.<k> -> ...3.1.2.<n>.<t>.<k-1>, ...3.1.3.<n>.<t>.<k-2>."""
    head, tail = sop_uid.split(".3.1.4.")
    parts = tail.split(".")
    last = int(parts[-1])
    return (f"{head}.3.1.2.{'.'.join(parts[:-1])}.{last - 1}", f"{head}.3.1.3.{'.'.join(parts[:-1])}.{last - 2}")


def build_siim_tree(siim_raw: pd.DataFrame, dest: Path, n_pos: int = 30, n_neg: int = 40,
                    shared_patient: bool = False) -> tuple[Path, pd.DataFrame]:
    """train-rle.csv with the real rows of the first n_pos positive and n_neg negative images, and their DICOM files
    at dicom-images-train/<Study>/<Series>/<SOP>.dcm. Returns the root and the written header values per image."""
    from PIL import Image

    encoded = siim_raw[" EncodedPixels"].str.strip()
    order = siim_raw["ImageId"].drop_duplicates()
    positive = set(siim_raw.loc[encoded != "-1", "ImageId"])
    chosen = [i for i in order if i in positive][:n_pos] + [i for i in order if i not in positive][:n_neg]
    rows = siim_raw[siim_raw["ImageId"].isin(chosen)]
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "train-rle.csv", "w", newline="") as f:  # the download's header, exactly
        f.write("ImageId, EncodedPixels\n")
        rows.to_csv(f, header=False, index=False)
    sample = sorted((Path(__file__).resolve().parents[3] / "data" / "nih_sample" / "images").glob("*.png"))
    written = []
    for k, image_id in enumerate(rows["ImageId"].drop_duplicates()):
        patient = "shared-patient" if shared_patient and k < 2 else f"{k:08d}-0000-4000-8000-{k:012d}"
        sex, age, view = ("M", "F")[k % 2], str(20 + k), ("PA", "AP")[k % 3 == 0]
        study, series = _study_series(image_id)
        path = dest / "dicom-images-train" / study / series / f"{image_id}.dcm"
        write_siim_dicom(path, image_id, patient, sex, age, view, np.array(Image.open(sample[k]).convert("L")))
        written.append({"image_id": image_id, "patient": patient, "sex": sex, "age": float(age), "view": view})
    return dest, pd.DataFrame(written)


@pytest.fixture(scope="module")
def siim_tree(siim_raw: pd.DataFrame, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    return build_siim_tree(siim_raw, tmp_path_factory.mktemp("siim"))


# -------------------------------------------------------------------------------------------- real label file
def test_labels_of_the_real_file_match_the_reference(siim_raw: pd.DataFrame, shared_data: Path) -> None:
    from chestx.data.datasets.siim import read_siim

    encoded = siim_raw[" EncodedPixels"].str.strip()
    ref = siim_raw.assign(pos=encoded != "-1").groupby("ImageId", sort=False)["pos"].agg(["any", "size"])
    assert len(siim_raw) == 12_954 and len(ref) == 12_047 and int(ref["any"].sum()) == 2_669  # README figures
    table = read_siim(shared_data / SIIM_GZ)
    assert table.pathologies == ["Pneumothorax"]
    assert list(table.frame["image_id"]) == list(ref.index)
    np.testing.assert_array_equal(table.labels[:, 0], ref["any"].to_numpy(dtype=np.float32))
    assert not np.isnan(table.labels).any() and not table.uncertain.any()
    np.testing.assert_array_equal(table.frame["n_masks"], np.where(ref["any"], ref["size"], 0))
    assert (table.frame["patient_id"] == table.frame["image_id"]).all()  # each image its own patient


def test_real_masks_decode_and_reencode_exactly(siim_raw: pd.DataFrame) -> None:
    from chestx.data.datasets.siim import rle_decode

    encoded = siim_raw[" EncodedPixels"].str.strip()
    masks = encoded[encoded != "-1"]
    assert len(masks) == 3_576
    for rle in masks:
        mask = rle_decode(rle)
        assert mask.shape == (SIZE, SIZE) and mask.dtype == bool
        assert ref_encode(mask) == rle  # the whole real file round-trips
        assert int(mask.sum()) == sum(int(v) for v in rle.split()[1::2])
    for rle in masks.iloc[::400]:  # the competition's loop, transposed, gives the same masks
        np.testing.assert_array_equal(rle_decode(rle), ref_rle2mask(rle, SIZE, SIZE).T.astype(bool))
    assert not rle_decode("-1").any()


def test_masks_union_and_boxes_of_an_image_with_several_rows(siim_raw: pd.DataFrame, shared_data: Path) -> None:
    from chestx.data.datasets.siim import read_siim_boxes, siim_masks

    encoded = siim_raw[" EncodedPixels"].str.strip()
    rows = siim_raw[encoded != "-1"]
    several = rows["ImageId"].value_counts()
    image_id = several.index[0]
    assert several.iloc[0] >= 2
    union = np.zeros((SIZE, SIZE), dtype=bool)
    for rle in rows.loc[rows["ImageId"] == image_id, " EncodedPixels"]:
        union |= ref_rle2mask(rle.strip(), SIZE, SIZE).T.astype(bool)
    got = siim_masks(shared_data / SIIM_GZ, [image_id])
    assert list(got) == [image_id]
    np.testing.assert_array_equal(got[image_id], union)
    boxes = read_siim_boxes(shared_data / SIIM_GZ)
    assert len(boxes) == len(rows) and set(boxes["pathology"]) == {"Pneumothorax"}
    first = ref_rle2mask(rows[" EncodedPixels"].iloc[0].strip(), SIZE, SIZE).T
    r, c = np.flatnonzero(first.any(axis=1)), np.flatnonzero(first.any(axis=0))
    assert boxes.iloc[0][["x", "y", "w", "h"]].tolist() == [c[0], r[0], c[-1] - c[0] + 1, r[-1] - r[0] + 1]
    assert boxes["image_id"].iloc[0] == rows["ImageId"].iloc[0] + ".dcm"


@pytest.mark.parametrize("seed", range(5))
def test_random_masks_round_trip(seed: int) -> None:
    from chestx.data.datasets.siim import rle_decode

    rng = np.random.default_rng(seed)
    mask = rng.random((64, 48)) < (0.02 + 0.2 * seed)
    mask[0, 0] = seed % 2 == 0  # a run at pixel 0: gap 0
    mask[-1, -1] = True  # a run ending on the last pixel
    np.testing.assert_array_equal(rle_decode(ref_encode(mask), height=64, width=48), mask)


# ------------------------------------------------------------------------------------------------ DICOM tree
def test_dicom_tree_gives_paths_and_header_metadata(siim_tree) -> None:
    from chestx.data.images.read import load_grayscale
    from chestx.data.datasets.siim import SIIMData

    root, written = siim_tree
    data = SIIMData(root=str(root), seed=0)
    data.prepare()
    table, split = data.table, data.split
    assert len(table) == 70 and int(table.labels.sum()) == 30
    meta = written.set_index("image_id").loc[table.frame["image_id"]]
    assert list(table.frame["sex"]) == list(meta["sex"]) and list(table.frame["view"]) == list(meta["view"])
    np.testing.assert_array_equal(table.frame["age"].to_numpy(), meta["age"].to_numpy())
    for image_id, path in data.image_paths("test").items():
        assert path.name == f"{image_id}.dcm" and path.parent.parent.parent.name == "dicom-images-train"
    assert set(split) == {"train", "val", "test"}
    import pydicom

    first = next(iter(data.image_paths("train").values()))
    stored = pydicom.dcmread(first).pixel_array  # (256, 256) uint8, MONOCHROME2 without a window: min-max
    pixels = load_grayscale(first)
    assert pixels.shape == (256, 256) and pixels.dtype == np.uint8
    expected = np.round((stored - stored.min()) / (stored.max() - stored.min()) * 255)
    assert np.abs(pixels.astype(int) - expected).max() <= 1


def test_patient_ids_from_dicom_group_images(siim_raw: pd.DataFrame, tmp_path: Path) -> None:
    from chestx.data.datasets.siim import SIIMData

    root, written = build_siim_tree(siim_raw, tmp_path, n_pos=4, n_neg=8, shared_patient=True)
    by_image, _ = SIIMData(root=str(root), ratios=(0.5, 0.25, 0.25)).labels_only()
    assert by_image.frame["patient_id"].nunique() == 12
    data = SIIMData(root=str(root), patient_ids="dicom", ratios=(0.5, 0.25, 0.25))
    table, split = data.labels_only()
    assert table.frame["patient_id"].nunique() == 11
    pair = table.frame["patient_id"] == "shared-patient"
    assert int(pair.sum()) == 2 and len(set(split[pair.to_numpy()])) == 1


def test_missing_images_are_named(siim_tree, tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError
    from chestx.data.datasets.siim import SIIMData

    root, _ = siim_tree
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "train-rle.csv").symlink_to(root / "train-rle.csv")
    with pytest.raises(DataError, match=r"70 of 70 images .* not found .*missing_images=drop"):
        SIIMData(root=str(partial)).prepare()
    with pytest.raises(DataError, match="patient_ids=dicom needs every image's DICOM PatientID"):
        SIIMData(root=str(partial), patient_ids="dicom").labels_only()
    table, _ = SIIMData(root=str(partial)).labels_only()  # labels alone need no image (chestx.evaluate, explore)
    assert len(table) == 70 and table.frame["sex"].isna().all()


# ------------------------------------------------------------------------------------------------ bad inputs
def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_header_with_or_without_the_leading_space(tmp_path: Path) -> None:
    from chestx.data.datasets.siim import read_siim

    a = read_siim(_csv(tmp_path / "a.csv", "ImageId, EncodedPixels\n1.2.3,-1\n1.2.4,5 3 10 2\n1.2.4,100 1\n"))
    b = read_siim(_csv(tmp_path / "b.csv", "ImageId,EncodedPixels\n1.2.3,-1\n1.2.4, 5 3 10 2\n1.2.4,100 1\n"))
    for table in (a, b):
        assert list(table.frame["image_id"]) == ["1.2.3", "1.2.4"] and table.labels[:, 0].tolist() == [0.0, 1.0]
        assert table.frame["n_masks"].tolist() == [0, 2]


@pytest.mark.parametrize("text, message", [
    ("patientId,x,y,width,height,Target\na,,,,,0\n", r"lacks columns \['ImageId', 'EncodedPixels'\]"),  # RSNA's file
    ("ImageId, EncodedPixels\n1.2.3,\n", r"blank ImageId or EncodedPixels .*line 2 \(1.2.3\)"),
    ("ImageId, EncodedPixels\n1.2.3,none\n", r"neither -1 nor pairs of integers .*line 2 \(1.2.3: 'none'\)"),
    ("ImageId, EncodedPixels\n1.2.3,5 3 7\n", r"neither -1 nor pairs .*'5 3 7'"),
])
def test_bad_label_files_are_named(text: str, message: str, tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError
    from chestx.data.datasets.siim import read_siim

    with pytest.raises(DataError, match=message):
        read_siim(_csv(tmp_path / "bad.csv", text))


def test_bad_encodings_and_options(tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError, DataFileNotFoundError
    from chestx.data.datasets.siim import SIIMData, rle_decode

    with pytest.raises(ValueError, match="beyond the 1024 x 1024 image"):
        rle_decode("1000000 10 1000000 10")  # absolute starts read as gaps
    with pytest.raises(ValueError, match="length 0"):
        rle_decode("5 0")
    with pytest.raises(DataError, match="data.patient_ids='study'"):
        SIIMData(root=str(tmp_path), patient_ids="study")
    with pytest.raises(DataFileNotFoundError, match=r"none of the label files \['train-rle.csv'"):
        SIIMData(root=str(tmp_path)).labels_only()
    (tmp_path / "train-rle.csv").write_text("ImageId, EncodedPixels\n1.2.3,-1\n")
    (tmp_path / "1.2.3.dcm").write_text("not a DICOM file")
    with pytest.raises(DataError, match=r"cannot read the DICOM header of .*1.2.3.dcm"):
        SIIMData(root=str(tmp_path)).labels_only()


def test_mixed_rows_warn_and_count_as_positive(tmp_path: Path, caplog) -> None:
    from chestx.data.datasets.siim import read_siim

    with caplog.at_level(logging.WARNING):
        table = read_siim(_csv(tmp_path / "m.csv", "ImageId, EncodedPixels\n1.2.3,-1\n1.2.3,4 2\n"))
    assert table.labels[:, 0].tolist() == [1.0] and "1 images have both -1 rows and masks" in caplog.text


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_train_on_the_dicom_tree(siim_tree, compose, tiny_overrides, tmp_path: Path) -> None:
    from chestx.core.run_folder import read_predictions
    from chestx.train import train

    root, _ = siim_tree
    cfg = compose([*tiny_overrides, "data=siim", f"data.root={root}", "model=resnet56v2", "data.image_size=32",
                   "subgroups=none"], tmp_path)
    metrics = train(cfg)
    assert metrics["status"] == "ok"
    ids, probs, labels, pathologies = read_predictions(tmp_path / "predictions.csv")
    assert pathologies == ["Pneumothorax"] and np.all((probs >= 0) & (probs <= 1))
    split = pd.read_csv(tmp_path / "split.csv", dtype=str)
    assert sorted(ids["image_id"]) == sorted(split.loc[split["split"] == "test", "image_id"])
    truth = pd.read_csv(root / "train-rle.csv", dtype=str)
    positive = set(truth.loc[truth[" EncodedPixels"].str.strip() != "-1", "ImageId"])
    np.testing.assert_array_equal(labels[:, 0], ids["image_id"].isin(positive).to_numpy(dtype=float))
