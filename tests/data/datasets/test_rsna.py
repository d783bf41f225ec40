"""RSNA Pneumonia: labels and boxes of the real stage_2_train_labels.csv(.zip) against a pandas reference,
sex / age / view from DICOM headers that mirror the real ones (torchxrayvision's header dump), bad inputs.

Reference rule (competition data page; Shih et al. 2019; torchxrayvision `RSNA_Pneumonia_Dataset`): one row
per box, an image without a box has one row with blank box and Target 0; Target is the image's label
(Pneumonia and Lung Opacity alike). The DICOM fixtures take each image's PatientSex, PatientAge (a plain
number string, as the dump shows), ViewPosition and PixelSpacing from the real header dump and the other tags
the dump lists (Modality CR, BodyPartExamined CHEST, ConversionType WSD, SeriesNumber / InstanceNumber 1,
SamplesPerPixel 1, blank PatientOrientation), JPEG Baseline pixel data from the embedded NIH sample (256 px
instead of 1024). `stage_2_detailed_class_info.csv` is not in shared/data: the fixture follows the competition's
format (patientId,class; one row per label row), Target-1 images "Lung Opacity", the Target-0 ones assigned
"Normal" / "No Lung Opacity / Not Normal" by the test.
"""
from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

LABELS_ZIP = "rsna/kaggle_stage_2_train_labels.csv.zip"
HEADERS_GZ = "rsna/kaggle_stage_2_train_images_dicom_headers.csv.gz"
CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")


@pytest.fixture(scope="module")
def rsna_files(shared_data: Path) -> tuple[Path, Path]:
    labels, headers = shared_data / LABELS_ZIP, shared_data / HEADERS_GZ
    if not labels.is_file() or not headers.is_file():
        pytest.skip(f"{labels} or {headers} not found")
    return labels, headers


@pytest.fixture(scope="module")
def raw(rsna_files) -> pd.DataFrame:
    return pd.read_csv(rsna_files[0])


@pytest.fixture(scope="module")
def dump(rsna_files) -> pd.DataFrame:
    return pd.read_csv(rsna_files[1], dtype=str).set_index("PatientID")


# ------------------------------------------------------------------------------------------------ DICOM fixtures
def write_rsna_dicom(path: Path, header: pd.Series, pixels: np.ndarray, patient: str | None = None) -> None:
    """A DICOM file with the real header values of one image (`header`: a row of the header dump)."""
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage

    uid = "1.2.276.0.7230010.3.1.4.8323329." + str(abs(hash(header.name)) % 10**5) + ".1517874485.775526"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "19010101", "000000.00", ""
    ds.Modality, ds.ConversionType, ds.ReferringPhysicianName = header["Modality"], header["ConversionType"], ""
    ds.SeriesDescription = f"view: {header['ViewPosition']}"
    ds.PatientName = ds.PatientID = patient or header.name
    ds.PatientBirthDate, ds.PatientSex = "", header["PatientSex"]
    with warnings.catch_warnings():  # a plain number is not a conformant Age String; the RSNA files store it so
        warnings.simplefilter("ignore")
        ds.PatientAge = header["PatientAge"]
    ds.BodyPartExamined, ds.ViewPosition = header["BodyPartExamined"], header["ViewPosition"]
    ds.StudyInstanceUID = uid.replace(".3.1.4.", ".3.1.2.")
    ds.SeriesInstanceUID = uid.replace(".3.1.4.", ".3.1.3.")
    ds.StudyID, ds.PatientOrientation = "", ""
    ds.SeriesNumber, ds.InstanceNumber = int(float(header["SeriesNumber"])), int(float(header["InstanceNumber"]))
    ds.SamplesPerPixel, ds.PhotometricInterpretation = int(float(header["SamplesPerPixel"])), "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [float(header["PixelSpacing"])] * 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def build_rsna_tree(labels_zip: Path, dump: pd.DataFrame, dest: Path, n_pos: int = 30, n_neg: int = 40,
                    detailed: bool = True) -> Path:
    """stage_2_train_labels.csv with the real lines of the first n_pos Target-1 and n_neg Target-0 patients (the
    file's own text, box rows included), their DICOM files in stage_2_train_images/, the detailed class file."""
    from PIL import Image

    with zipfile.ZipFile(labels_zip) as archive:
        lines = archive.read("stage_2_train_labels.csv").decode().splitlines()
    header, body = lines[0], lines[1:]
    order = list(dict.fromkeys(line.split(",", 1)[0] for line in body))
    positive = {line.split(",", 1)[0] for line in body if line.endswith(",1")}
    chosen = set([p for p in order if p in positive][:n_pos] + [p for p in order if p not in positive][:n_neg])
    kept = [line for line in body if line.split(",", 1)[0] in chosen]
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "stage_2_train_labels.csv").write_text("\n".join([header, *kept]) + "\n")
    if detailed:
        classes = []
        for line in kept:
            patient = line.split(",", 1)[0]
            k = order.index(patient)
            classes.append(f"{patient},{CLASSES[0] if patient in positive else CLASSES[1 + k % 2]}")
        (dest / "stage_2_detailed_class_info.csv").write_text("\n".join(["patientId,class", *classes]) + "\n")
    sample = sorted((Path(__file__).resolve().parents[3] / "data" / "nih_sample" / "images").glob("*.png"))
    for k, patient in enumerate(p for p in order if p in chosen):
        write_rsna_dicom(dest / "stage_2_train_images" / f"{patient}.dcm", dump.loc[patient],
                         np.array(Image.open(sample[k]).convert("L")))
    return dest


@pytest.fixture(scope="module")
def rsna_tree(rsna_files, dump: pd.DataFrame, tmp_path_factory) -> Path:
    return build_rsna_tree(rsna_files[0], dump, tmp_path_factory.mktemp("rsna"))


# -------------------------------------------------------------------------------------------- real label file
def test_labels_of_the_real_file_match_the_reference(raw: pd.DataFrame, rsna_files) -> None:
    from chestx.data.datasets.rsna_pneumonia import read_rsna

    per = raw.groupby("patientId", sort=False).agg(target=("Target", "max"), boxes=("x", "count"))
    assert len(raw) == 30_227 and len(per) == 26_684 and int(per["target"].sum()) == 6_012  # README figures
    assert int(per["boxes"].sum()) == 9_555
    table = read_rsna(rsna_files[0], ["Pneumonia", "Lung Opacity"])  # the .zip, read as it is
    assert table.pathologies == ["Pneumonia", "Lung Opacity"]
    assert list(table.frame["image_id"]) == list(per.index) and (table.frame["patient_id"] == per.index).all()
    for k in range(2):
        np.testing.assert_array_equal(table.labels[:, k], per["target"].to_numpy(dtype=np.float32))
    np.testing.assert_array_equal(table.frame["n_boxes"], per["boxes"])
    assert not table.uncertain.any() and not table.frame["no_finding"].any()  # no detailed file: no "normal" flag
    assert table.frame["path"].iloc[0] == f"stage_2_train_images/{per.index[0]}.dcm"


def test_boxes_match_the_reference(raw: pd.DataFrame, rsna_files) -> None:
    from chestx.data.datasets.rsna_pneumonia import read_rsna_boxes

    boxed = raw[raw["Target"] == 1]
    boxes = read_rsna_boxes(rsna_files[0])
    assert len(boxes) == 2 * 9_555 and list(boxes.columns) == ["image_id", "pathology", "x", "y", "w", "h"]
    first = boxes[boxes["pathology"] == "Pneumonia"]
    assert (first["image_id"].to_numpy() == (boxed["patientId"] + ".dcm").to_numpy()).all()
    np.testing.assert_array_equal(first[["x", "y", "w", "h"]].to_numpy(),
                                  boxed[["x", "y", "width", "height"]].to_numpy())
    assert ((first[["x", "y"]].to_numpy() + first[["w", "h"]].to_numpy()) <= 1024).all()  # 1024 px coordinates


def test_metadata_from_the_header_dump_and_random_split(raw: pd.DataFrame, dump: pd.DataFrame, rsna_files) -> None:
    from chestx.data.datasets.rsna_pneumonia import RSNAPneumoniaData

    data = RSNAPneumoniaData(root=str(rsna_files[0].parent), headers=str(rsna_files[1]), seed=0)
    table, split = data.labels_only()
    ids = table.frame["image_id"]
    assert list(table.frame["sex"]) == list(dump.loc[ids, "PatientSex"])
    assert list(table.frame["view"]) == list(dump.loc[ids, "ViewPosition"])
    np.testing.assert_array_equal(table.frame["age"], dump.loc[ids, "PatientAge"].astype(float))
    assert table.frame["sex"].value_counts().to_dict() == {"M": 15_166, "F": 11_518}
    assert table.frame["view"].value_counts().to_dict() == {"PA": 14_511, "AP": 12_173}
    # patient-level random split: the reference draws over the sorted unique ids
    patients = np.sort(ids.unique())
    rank = np.empty(len(patients), dtype=np.int64)
    rank[np.random.default_rng(0).permutation(len(patients))] = np.arange(len(patients))
    bounds = np.cumsum([round(0.7 * len(patients)), round(0.1 * len(patients))])
    expected = np.array(["train", "val", "test"])[np.searchsorted(bounds, rank, side="right")]
    np.testing.assert_array_equal(split, expected[np.searchsorted(patients, ids.to_numpy())])
    pa, _ = RSNAPneumoniaData(root=str(rsna_files[0].parent), headers=str(rsna_files[1]), views=["PA"]).labels_only()
    assert len(pa) == 14_511 and (pa.frame["view"] == "PA").all()


# ------------------------------------------------------------------------------------------------ DICOM tree
def test_dicom_headers_give_the_dump_values(rsna_tree: Path, dump: pd.DataFrame) -> None:
    from chestx.data.images.read import load_grayscale
    from chestx.data.datasets.rsna_pneumonia import RSNAPneumoniaData

    data = RSNAPneumoniaData(root=str(rsna_tree), findings=["Pneumonia", "Lung Opacity", "No Finding"])
    data.prepare()
    table = data.table
    assert len(table) == 70 and int(table.labels[:, 0].sum()) == 30
    ids = table.frame["image_id"]
    assert list(table.frame["sex"]) == list(dump.loc[ids, "PatientSex"])
    assert list(table.frame["view"]) == list(dump.loc[ids, "ViewPosition"])
    np.testing.assert_array_equal(table.frame["age"], dump.loc[ids, "PatientAge"].astype(float))
    detailed = pd.read_csv(rsna_tree / "stage_2_detailed_class_info.csv").drop_duplicates().set_index("patientId")
    normal = (detailed.loc[ids, "class"] == "Normal").to_numpy()
    np.testing.assert_array_equal(table.labels[:, 2], normal.astype(np.float32))
    np.testing.assert_array_equal(table.frame["no_finding"], normal)
    assert list(table.frame["detailed_class"]) == list(detailed.loc[ids, "class"])
    path = next(iter(data.image_paths("test").values()))
    assert path.parent.name == "stage_2_train_images" and load_grayscale(path).shape == (256, 256)


def test_views_filter_and_missing_images(rsna_tree: Path, tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError
    from chestx.data.datasets.rsna_pneumonia import RSNAPneumoniaData

    table, _ = RSNAPneumoniaData(root=str(rsna_tree), views=["ap"], ratios=(0.6, 0.2, 0.2)).labels_only()
    assert len(table) > 0 and (table.frame["view"] == "AP").all()
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "stage_2_train_labels.csv").symlink_to(rsna_tree / "stage_2_train_labels.csv")
    labels_only, _ = RSNAPneumoniaData(root=str(bare)).labels_only()  # chestx.evaluate / explore need no image
    assert len(labels_only) == 70 and labels_only.frame["sex"].isna().all()
    with pytest.raises(DataError, match=r"70 of 70 images .* not found .*missing_images=drop"):
        RSNAPneumoniaData(root=str(bare)).prepare()
    with pytest.raises(DataError, match=r"data.views=\['PA'\] needs the view of every RSNA image, but 70"):
        RSNAPneumoniaData(root=str(bare), views=["PA"]).labels_only()


@pytest.mark.slow
def test_train_on_the_dicom_tree(rsna_tree: Path, compose, tiny_overrides, tmp_path: Path) -> None:
    from chestx.core.run_folder import read_predictions
    from chestx.train import train

    cfg = compose([*tiny_overrides, "data=rsna_pneumonia", f"data.root={rsna_tree}", "model=resnet56v2",
                   "data.image_size=32"], tmp_path)
    metrics = train(cfg)
    assert metrics["status"] == "ok"
    ids, probs, labels, pathologies = read_predictions(tmp_path / "predictions.csv")
    assert pathologies == ["Pneumonia"] and np.all((probs >= 0) & (probs <= 1))
    truth = pd.read_csv(rsna_tree / "stage_2_train_labels.csv").groupby("patientId")["Target"].max()
    np.testing.assert_array_equal(labels[:, 0], truth.loc[ids["image_id"]].to_numpy(dtype=float))
    assert set(ids["sex"]) <= {"M", "F"} and set(ids["view"]) <= {"PA", "AP"}  # subgroups get the headers' values
    assert (tmp_path / "subgroups.csv").is_file()


# ------------------------------------------------------------------------------------------------ bad inputs
def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


HEADER = "patientId,x,y,width,height,Target\n"


@pytest.mark.parametrize("text, message", [
    ("ImageId, EncodedPixels\n1.2.3,-1\n", r"lacks columns \['patientId', 'x', 'y', 'width', 'height', 'Target'\]"),
    (HEADER + "a,,,,,2\n", r"'Target' must be 0 or 1; 1 rows are not \(\['line 2 \(a\)'\]"),
    (HEADER + "a,1.0,2.0,3.0,4.0,0\n", r"a box .* on every Target 1 row and on no Target 0 row.*line 2 \(a\)"),
    (HEADER + "a,,,,,1\n", r"on every Target 1 row.*line 2 \(a\)"),
    (HEADER + "a,1.0,,3.0,4.0,1\n", r"on every Target 1 row.*line 2 \(a\)"),
    (HEADER + "a,1.0,2.0,3.0,4.0,1\na,,,,,0\n", r"patientIds \['a'\] have rows with Target 0 and 1"),
    (HEADER + ",,,,,0\n", r"1 rows have no patientId"),
])
def test_bad_label_files_are_named(text: str, message: str, tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError
    from chestx.data.datasets.rsna_pneumonia import read_rsna

    with pytest.raises(DataError, match=message):
        read_rsna(_write(tmp_path / "labels.csv", text))


@pytest.mark.parametrize("classes, message", [
    ("patientId,class\na,Lung Opacity\nb,Abnormal\n", r"unknown classes \['Abnormal'\] .*line 3 \(b\)"),
    ("patientId,class\na,Lung Opacity\nb,Lung Opacity\n", r"must be exactly the Target 1 images .*\['b'\]"),
    ("patientId,class\na,Lung Opacity\n", r"no class for 1 patientIds .*\['b'\]"),
    ("patientId,class\na,Lung Opacity\nb,Normal\nb,No Lung Opacity / Not Normal\n", r"\['b'\] have two classes"),
    ("patientId,label\na,Normal\n", r"lacks columns \['class'\]"),
])
def test_bad_detailed_files_are_named(classes: str, message: str, tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError
    from chestx.data.datasets.rsna_pneumonia import read_rsna

    labels = _write(tmp_path / "labels.csv", HEADER + "a,1.0,2.0,3.0,4.0,1\nb,,,,,0\n")
    with pytest.raises(DataError, match=message):
        read_rsna(labels, detailed_csv=_write(tmp_path / "detailed.csv", classes))


def test_bad_options_and_files(rsna_files, rsna_tree: Path, dump: pd.DataFrame, tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError, DataFileNotFoundError
    from chestx.data.datasets.rsna_pneumonia import RSNAPneumoniaData, read_rsna

    labels = _write(tmp_path / "labels.csv", HEADER + "a,1.0,2.0,3.0,4.0,1\nb,,,,,0\n")
    with pytest.raises(DataError, match=r"data.findings=\['Pneumonitis'\]: list each at most once, from"):
        read_rsna(labels, ["Pneumonitis"])
    with pytest.raises(DataFileNotFoundError, match="'No Finding' .* needs stage_2_detailed_class_info.csv"):
        read_rsna(labels, ["No Finding"])
    with pytest.raises(DataFileNotFoundError, match=r"none of the label files \['stage_2_train_labels.csv'"):
        RSNAPneumoniaData(root=str(tmp_path)).labels_only()
    with pytest.raises(DataError, match=r"data.headers=.* lacks columns \['PatientID', 'PatientSex'"):
        RSNAPneumoniaData(root=str(rsna_tree), headers=str(labels)).labels_only()
    wrong = tmp_path / "wrong"
    build_rsna_tree(rsna_files[0], dump, wrong, 1, 1, detailed=False)
    one = next((wrong / "stage_2_train_images").glob("*.dcm"))
    write_rsna_dicom(one, dump.loc[one.stem], np.zeros((8, 8), dtype=np.uint8), patient="someone-else")
    with pytest.raises(DataError, match=r"1 RSNA images have a DICOM PatientID other than their file name"):
        RSNAPneumoniaData(root=str(wrong), ratios=(0.5, 0.5, 0.0)).labels_only()
    one.write_bytes(b"\x89PNG\r\n\x1a\n not a DICOM file")
    with pytest.raises(DataError, match=rf"cannot read the DICOM header of .*{one.name}"):
        RSNAPneumoniaData(root=str(wrong), ratios=(0.5, 0.5, 0.0)).labels_only()
