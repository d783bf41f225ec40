"""VinDr-CXR: the real Kaggle label file (67,914 rows) against an independent pandas reference, the PhysioNet layout
on a fixture built from its documentation, boxes, bad inputs, and a tiny run on DICOM files.

Sources of the rules restated here (not imported from chestx):
- Nguyen et al. 2022, "VinDr-CXR: An open dataset of chest X-rays with radiologist's annotations", Scientific Data:
  3 radiologists per training image, the test consensus of 5; 22 local and 6 global labels.
- The Kaggle competition's train.csv (image_id, class_name, class_id, rad_id, x_min, y_min, x_max, y_max; class 14
  "No finding" without a box); the PhysioNet page physionet.org/content/vindr-cxr/1.0.0/: annotations/
  image_labels_train.csv (image_id, rad_id, one 0/1 column per label), image_labels_test.csv (consensus, no rad_id,
  "Other disease"), annotations_{train,test}.csv (boxes), train/ and test/<image_id>.dicom.
- torchxrayvision `datasets.py` `VinBrain_Dataset`: class names of an image joined, a label is 1 when its name (or
  synonym) is a substring: restated literally in `xrv_labels`.
- chestx's rules (docs/datasets/vindr_cxr.md): `any` (>= 1 radiologist) / `majority` (more than half of the image's
  radiologists); each image its own patient; image-level random split for the Kaggle layout.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest

KAGGLE_FILE = "vinbigdata-train.csv.gz"
SPLIT_NAMES = np.array(["train", "val", "test"])
# the Kaggle classes in class_id order, and the chestx name each is compared under
REF_CLASSES = ["Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
               "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening",
               "Pneumothorax", "Pulmonary fibrosis"]
REF_NAMES = {"Aortic enlargement": "Aortic Enlargement", "Other lesion": "Other Lesion", "Pleural effusion": "Effusion",
             "Pleural thickening": "Pleural_Thickening", "Pulmonary fibrosis": "Fibrosis",
             "Clavicle fracture": "Clavicle Fracture", "Lung cavity": "Lung Cavity", "Lung cyst": "Lung Cyst",
             "Mediastinal shift": "Mediastinal Shift", "Rib fracture": "Rib Fracture", "Lung tumor": "Lung Tumor",
             "Other diseases": "Other Diseases"}
# PhysioNet label columns (after image_id, rad_id), paper order
PHYSIONET_COLUMNS = [
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
    "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst",
    "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD", "Lung tumor", "Pneumonia", "Tuberculosis",
    "Other diseases", "No finding",
]
# torchxrayvision VinBrain_Dataset, as written there, and the chestx name of each of its labels
XRV_PATHOLOGIES = sorted(np.unique(["Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly",
                                    "Consolidation", "ILD", "Infiltration", "Lung Opacity", "Nodule/Mass", "Lesion",
                                    "Effusion", "Pleural_Thickening", "Pneumothorax", "Pulmonary Fibrosis"]))
XRV_MAPPING = {"Pleural_Thickening": ["Pleural thickening"], "Effusion": ["Pleural effusion"]}
XRV_TO_CHESTX = {"Aortic enlargement": "Aortic Enlargement", "Lesion": "Other Lesion", "Pulmonary Fibrosis": "Fibrosis"}


def chestx_name(source: str) -> str:
    return REF_NAMES.get(source, source)


def ref_votes(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """(images, classes) radiologists marking each class (several boxes of one reader count once); readers per image."""
    marks = raw[["image_id", "class_name", "rad_id"]].drop_duplicates()
    votes = marks.groupby(["image_id", "class_name"]).size().unstack(fill_value=0)
    readers = raw.groupby("image_id")["rad_id"].nunique()
    return votes, readers


def ref_labels(raw: pd.DataFrame, aggregation: str) -> pd.DataFrame:
    votes, readers = ref_votes(raw)
    votes = votes.reindex(columns=REF_CLASSES, fill_value=0)
    positive = votes >= 1 if aggregation == "any" else votes.mul(2).gt(readers, axis=0)
    return positive.astype(np.float32).rename(columns=chestx_name)


def xrv_labels(raw: pd.DataFrame) -> pd.DataFrame:
    """torchxrayvision's rule, literally, renamed to chestx's names."""
    csv = pd.DataFrame(raw.groupby("image_id")["class_name"].apply(lambda x: "|".join(np.unique(x))))
    out = {}
    for pathology in XRV_PATHOLOGIES:
        mask = csv["class_name"].str.lower().str.contains(pathology.lower())
        for syn in XRV_MAPPING.get(pathology, []):
            mask |= csv["class_name"].str.lower().str.contains(syn.lower())
        out[XRV_TO_CHESTX.get(pathology, pathology)] = mask.to_numpy(dtype=np.float32)
    return pd.DataFrame(out, index=csv.index)


def ref_random_groups(patients: np.ndarray, ratios: tuple[float, ...], seed: int) -> np.ndarray:
    unique, row_patient = np.unique(patients.astype(str), return_inverse=True)
    rank = np.empty(len(unique), dtype=np.int64)
    rank[np.random.default_rng(seed).permutation(len(unique))] = np.arange(len(unique))
    bounds = np.cumsum([round(ratios[0] * len(unique)), round(ratios[1] * len(unique))])
    return np.searchsorted(bounds, rank, side="right")[row_patient]


@pytest.fixture(scope="module")
def vindr_dir(shared_data: Path) -> Path:
    folder = shared_data / "vindr"
    if not (folder / KAGGLE_FILE).is_file():
        pytest.skip(f"{folder / KAGGLE_FILE} not found")
    return folder


@pytest.fixture(scope="module")
def raw(vindr_dir: Path) -> pd.DataFrame:
    return pd.read_csv(vindr_dir / KAGGLE_FILE, dtype={"rad_id": str})


def _compare(table: Any, want: pd.DataFrame) -> list[str]:
    got = pd.DataFrame(table.labels, index=table.frame["image_id"], columns=table.pathologies)
    want = want.loc[got.index, got.columns]
    bad = ~((got.to_numpy() == want.to_numpy()) | (np.isnan(got.to_numpy()) & np.isnan(want.to_numpy())))
    return [f"{name}: {int(bad[:, k].sum())} cells differ, e.g. {got.index[bad[:, k]][:3].tolist()}"
            for k, name in enumerate(got.columns) if bad[:, k].any()]


# ------------------------------------------------------------------------------------------------ the real file
def test_reference_matches_the_published_figures(raw: pd.DataFrame) -> None:
    assert len(raw) == 67_914 and raw["image_id"].nunique() == 15_000  # data README; Nguyen et al.: 15,000 training
    votes, readers = ref_votes(raw)
    assert (readers == 3).all()  # each training image read by 3 radiologists
    assert sorted(raw["class_name"].unique()) == sorted([*REF_CLASSES, "No finding"])
    assert (raw.groupby("class_name")["class_id"].nunique() == 1).all()
    normal = (votes["No finding"] == 3).sum()
    assert normal == 10_606  # every reader said No finding
    assert raw.loc[raw["class_name"] == "No finding", ["x_min", "y_min", "x_max", "y_max"]].isna().all().all()


@pytest.mark.parametrize("aggregation", ["any", "majority"])
def test_kaggle_labels_conform(vindr_dir: Path, raw: pd.DataFrame, aggregation: str) -> None:
    from chestx.data.datasets.vindr_cxr import read_vindr

    table = read_vindr(vindr_dir / KAGGLE_FILE, aggregation=aggregation)
    want = ref_labels(raw, aggregation)
    assert list(table.pathologies) == [chestx_name(c) for c in REF_CLASSES]
    assert len(table.frame) == 15_000 and table.frame["image_id"].is_unique
    problems = _compare(table, want)
    assert not problems, "\n".join(problems)
    assert (table.frame["patient_id"] == table.frame["image_id"]).all() and (table.frame["view"] == "PA").all()
    normal = want.loc[table.frame["image_id"]].sum(axis=1).eq(0).to_numpy()
    np.testing.assert_array_equal(table.frame["no_finding"].to_numpy(dtype=bool), normal)
    assert table.labels.dtype == np.float32 and not table.uncertain.any()


def test_any_is_torchxrayvision_rule(vindr_dir: Path, raw: pd.DataFrame) -> None:
    from chestx.data.datasets.vindr_cxr import read_vindr

    table = read_vindr(vindr_dir / KAGGLE_FILE, aggregation="any")
    problems = _compare(table, xrv_labels(raw))
    assert not problems, "\n".join(problems)
    majority = read_vindr(vindr_dir / KAGGLE_FILE, aggregation="majority")
    assert (majority.labels <= table.labels).all() and majority.labels.sum() < table.labels.sum()


@pytest.mark.parametrize("seed, ratios", [(0, (0.7, 0.1, 0.2)), (3, (0.8, 0.1, 0.1))])
def test_kaggle_split_is_image_level_and_seeded(vindr_dir: Path, raw: pd.DataFrame, seed: int,
                                               ratios: tuple[float, ...]) -> None:
    from chestx.data.datasets.vindr_cxr import VinDrData

    data = VinDrData(root=str(vindr_dir), seed=seed, ratios=ratios)
    assert data.layout == "kaggle"
    table, split = data.labels_only()
    ids = table.frame["image_id"].to_numpy(dtype=object)
    np.testing.assert_array_equal(np.asarray(split), SPLIT_NAMES[ref_random_groups(ids, ratios, seed)])
    np.testing.assert_array_equal(ids, pd.unique(raw["image_id"]))  # file order of first appearance


def test_boxes_of_the_kaggle_file(vindr_dir: Path, raw: pd.DataFrame) -> None:
    from chestx.data.datasets.vindr_cxr import VinDrData, read_vindr_boxes

    boxes = read_vindr_boxes(vindr_dir / KAGGLE_FILE)
    want = raw[raw["class_name"] != "No finding"].reset_index(drop=True)
    assert len(boxes) == len(want) == 36_096
    np.testing.assert_array_equal(boxes["image_id"], want["image_id"])
    np.testing.assert_array_equal(boxes["rad_id"], want["rad_id"])
    np.testing.assert_array_equal(boxes["pathology"], want["class_name"].map(chestx_name))
    np.testing.assert_array_equal(boxes[["x_min", "y_min", "x_max", "y_max"]].to_numpy(),
                                  want[["x_min", "y_min", "x_max", "y_max"]].to_numpy())
    assert len(VinDrData(root=str(vindr_dir)).boxes()) == 36_096


# ------------------------------------------------------------------------------------------------ PhysioNet fixture
def _pixels(i: int, size: int = 64) -> np.ndarray:
    from PIL import Image

    sources = sorted((Path(__file__).resolve().parents[3] / "data" / "nih_sample" / "images").glob("*.png"))
    with Image.open(sources[i % len(sources)]) as image:
        return np.asarray(image.convert("L").resize((size, size)))


def write_dicom(path: Path, pixels: np.ndarray, sex: str, age: str, monochrome1: bool = False) -> None:
    """A DX image as the releases ship them: 16-bit storage, 12 bits stored, MONOCHROME2 (or MONOCHROME1),
    with the PatientSex / PatientAge tags VinDr's de-identification keeps."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientSex, ds.PatientAge = "DX", sex, age
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    stored = pixels.astype(np.uint16) * 16  # 8 -> 12 bits
    ds.PixelData = (4095 - stored if monochrome1 else stored).astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _per_reader(raw: pd.DataFrame) -> pd.DataFrame:
    """PhysioNet image_labels_train.csv rows from the real radiologists' marks (one row per image and reader).

    The 14 local labels are the readers' real marks; the PhysioNet-only labels, absent from the Kaggle file, are set
    from them (Pneumonia where Consolidation, Lung tumor where Nodule/Mass, the rest 0) so that they are not empty.
    """
    marks = raw.assign(one=1).pivot_table(index=["image_id", "rad_id"], columns="class_name", values="one",
                                          aggfunc="max", fill_value=0)
    out = pd.DataFrame(0, index=marks.index, columns=PHYSIONET_COLUMNS)
    for name in marks.columns:
        out[name] = marks[name]
    out["Pneumonia"] = marks.get("Consolidation", 0)
    out["Lung tumor"] = marks.get("Nodule/Mass", 0)
    order = pd.Index(pd.unique(raw["image_id"]))
    out = out.reset_index()
    out = out.iloc[np.argsort(order.get_indexer(out["image_id"]), kind="stable")]
    return out[["image_id", "rad_id", *PHYSIONET_COLUMNS]]


def build_physionet_tree(raw: pd.DataFrame, dest: Path, n_train: int = 90, n_test: int = 30) -> Path:
    """annotations/image_labels_{train,test}.csv, annotations_{train,test}.csv and DICOM files train/, test/."""
    images = pd.unique(raw["image_id"])
    train_ids, test_ids = images[:n_train], images[n_train:n_train + n_test]
    (dest / "annotations").mkdir(parents=True, exist_ok=True)
    per_reader = _per_reader(raw[raw["image_id"].isin(train_ids)])
    per_reader.to_csv(dest / "annotations" / "image_labels_train.csv", index=False)
    test_rows = _per_reader(raw[raw["image_id"].isin(test_ids)])
    consensus = test_rows.groupby("image_id", sort=False)[PHYSIONET_COLUMNS[:-1]].sum().ge(2).astype(int)
    consensus["No finding"] = (consensus.sum(axis=1) == 0).astype(int)
    consensus = consensus.rename(columns={"Other diseases": "Other disease"}).reset_index()  # the test file's name
    consensus.to_csv(dest / "annotations" / "image_labels_test.csv", index=False)
    boxes = raw.drop(columns="class_id")
    boxes[boxes["image_id"].isin(train_ids)].to_csv(dest / "annotations" / "annotations_train.csv", index=False)
    boxes[boxes["image_id"].isin(test_ids)].to_csv(dest / "annotations" / "annotations_test.csv", index=False)
    for i, image_id in enumerate([*train_ids, *test_ids]):
        folder = "train" if i < n_train else "test"
        write_dicom(dest / folder / f"{image_id}.dicom", _pixels(i), sex="MF"[i % 2],
                    age="" if i % 7 == 0 else f"{30 + i % 50:03d}Y", monochrome1=i % 5 == 0)
    return dest


def build_kaggle_tree(raw: pd.DataFrame, dest: Path, n: int = 60) -> Path:
    """train.csv (the real rows of the file's first n images, as the competition shipped it) and train/*.dicom."""
    ids = pd.unique(raw["image_id"])[:n]
    dest.mkdir(parents=True, exist_ok=True)
    raw[raw["image_id"].isin(ids)].to_csv(dest / "train.csv", index=False)
    for i, image_id in enumerate(ids):
        write_dicom(dest / "train" / f"{image_id}.dicom", _pixels(i), sex="MF"[i % 2], age="050Y")
    return dest


@pytest.fixture(scope="module")
def physionet_tree(raw: pd.DataFrame, tmp_path_factory) -> Path:
    return build_physionet_tree(raw, tmp_path_factory.mktemp("vindr_physionet"))


@pytest.mark.parametrize("aggregation", ["any", "majority"])
def test_physionet_layout_conforms(physionet_tree: Path, aggregation: str) -> None:
    from chestx.data.datasets.vindr_cxr import VinDrData

    data = VinDrData(root=str(physionet_tree), findings="all", aggregation=aggregation, val_fraction=0.2, seed=1)
    assert data.layout == "physionet"
    table, split = data.labels_only()
    train = pd.read_csv(physionet_tree / "annotations" / "image_labels_train.csv")
    test = pd.read_csv(physionet_tree / "annotations" / "image_labels_test.csv").set_index("image_id")
    votes = train.groupby("image_id", sort=False)[PHYSIONET_COLUMNS[:-1]].sum()
    readers = train.groupby("image_id", sort=False).size()
    want_train = (votes >= 1) if aggregation == "any" else votes.mul(2).gt(readers, axis=0)
    want_test = test.rename(columns={"Other disease": "Other diseases"})[PHYSIONET_COLUMNS[:-1]]
    want = pd.concat([want_train.astype(np.float32), want_test.astype(np.float32)]).rename(columns=chestx_name)
    assert len(table.pathologies) == 27 and set(table.pathologies) == set(want.columns)
    problems = _compare(table, want)
    assert not problems, "\n".join(problems)
    ids = table.frame["image_id"].to_numpy(dtype=object)
    n_train = len(votes)
    assert (np.asarray(split)[n_train:] == "test").all() and list(ids[n_train:]) == list(test.index)
    inner = SPLIT_NAMES[ref_random_groups(ids[:n_train], (0.8, 0.2, 0.0), 1)]
    np.testing.assert_array_equal(np.asarray(split)[:n_train], inner)
    assert table.frame["path"].iloc[0] == f"train/{ids[0]}.dicom"
    assert table.frame["path"].iloc[-1] == f"test/{ids[-1]}.dicom"
    np.testing.assert_array_equal(table.frame["no_finding"].to_numpy(dtype=bool), want.loc[ids].sum(axis=1).eq(0))
    kaggle_only = VinDrData(root=str(physionet_tree)).labels_only()[0]
    assert list(kaggle_only.pathologies) == [chestx_name(c) for c in REF_CLASSES]


def test_physionet_boxes_and_dicom_demographics(physionet_tree: Path, raw: pd.DataFrame) -> None:
    from chestx.data.datasets.vindr_cxr import VinDrData

    data = VinDrData(root=str(physionet_tree), dicom_demographics=True)
    boxes = data.boxes()
    ids = pd.unique(raw["image_id"])[:120]
    want = raw[raw["image_id"].isin(ids) & (raw["class_name"] != "No finding")]
    assert len(boxes) == len(want) and set(boxes["image_id"]) == set(want["image_id"])
    table, _ = data.labels_only()
    assert len(table.frame) == 120
    order = pd.Index(ids).get_indexer(table.frame["image_id"])  # the fixture wrote image k with these tags
    np.testing.assert_array_equal(table.frame["sex"].to_numpy(dtype=object), np.array(["MF"[k % 2] for k in order]))
    want_age = np.where(order % 7 == 0, np.nan, 30 + order % 50).astype(float)
    np.testing.assert_array_equal(table.frame["age"].to_numpy(), want_age)


# ------------------------------------------------------------------------------------------------ bad inputs
def test_bad_inputs_are_named(vindr_dir: Path, raw: pd.DataFrame, physionet_tree: Path, shared_data: Path,
                              tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError, DataFileNotFoundError
    from chestx.data.datasets.vindr_cxr import VinDrData, read_vindr, read_vindr_boxes

    few = raw.head(40)
    with pytest.raises(DataFileNotFoundError, match="VinDr-CXR label file not found"):
        read_vindr(tmp_path / "train.csv")
    with pytest.raises(DataError, match="no image_id column"):
        read_vindr(shared_data / "nih" / "sample256" / "Data_Entry_sample.csv")  # the wrong dataset's file
    few.drop(columns="rad_id").to_csv(tmp_path / "norad.csv", index=False)
    with pytest.raises(DataError, match=r"lacks columns \['rad_id'\]"):
        read_vindr(tmp_path / "norad.csv")
    odd = few.copy()
    odd.loc[7, "class_name"] = "Lung nodule"
    odd.to_csv(tmp_path / "odd.csv", index=False)
    with pytest.raises(DataError, match=r"unknown class_name values \['Lung nodule'\] \(e.g. row 7\)"):
        read_vindr(tmp_path / "odd.csv")
    with pytest.raises(DataError, match=r"unknown class_name values \['Lung nodule'\]"):
        read_vindr_boxes(tmp_path / "odd.csv")
    wrong = few.copy()
    wrong.loc[2, "class_id"] = 5
    wrong.to_csv(tmp_path / "wrong_id.csv", index=False)
    with pytest.raises(DataError, match="class_id that is not their class_name's .*row 2"):
        read_vindr(tmp_path / "wrong_id.csv")
    labels = pd.read_csv(physionet_tree / "annotations" / "image_labels_train.csv").head(12)
    labels.rename(columns={"Edema": "Oedema"}).to_csv(tmp_path / "renamed.csv", index=False)
    with pytest.raises(DataError, match=r"unknown columns \['Oedema'\]"):
        read_vindr(tmp_path / "renamed.csv")
    labels.drop(columns="COPD").to_csv(tmp_path / "nocopd.csv", index=False)
    with pytest.raises(DataError, match=r"lacks label columns \['COPD'\]"):
        read_vindr(tmp_path / "nocopd.csv")
    bad_cell = labels.copy()
    bad_cell.loc[4, "Edema"] = 2
    bad_cell.to_csv(tmp_path / "cell.csv", index=False)
    with pytest.raises(DataError, match=r"not 0 / 1, e.g. 'Edema'=.*row 4"):
        read_vindr(tmp_path / "cell.csv")
    with pytest.raises(DataError, match="data.aggregation='vote'"):
        read_vindr(vindr_dir / KAGGLE_FILE, aggregation="vote")
    with pytest.raises(DataError, match="data.layout='nih'"):
        VinDrData(root=str(tmp_path), layout="nih")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds neither annotations/image_labels_train.csv"):
        VinDrData(root=str(empty)).layout
    with pytest.raises(DataError, match=r"unknown VinDr-CXR pathologies \['Pleural Effusion'\]"):
        read_vindr(vindr_dir / KAGGLE_FILE, findings=["Pleural Effusion"])
    with pytest.raises(DataError, match="data.findings='local'"):
        read_vindr(vindr_dir / KAGGLE_FILE, findings="local")


def test_blank_ids_and_class_names_are_named(raw: pd.DataFrame, physionet_tree: Path, tmp_path: Path) -> None:
    """A blank image_id in a PhysioNet file stops naming the file and lines (not dropped by groupby, not an image
    "nan"); a blank class_name beside an unknown one names both (no TypeError sorting NaN with text)."""
    from chestx.data.labels.table import DataError
    from chestx.data.datasets.vindr_cxr import read_vindr, read_vindr_boxes

    for name, blank_rows in (("image_labels_train.csv", [3, 10]), ("image_labels_test.csv", [5])):
        labels = pd.read_csv(physionet_tree / "annotations" / name, dtype={"image_id": str, "rad_id": str})
        labels.loc[blank_rows, "image_id"] = np.nan if name.endswith("train.csv") else " "
        path = tmp_path / name
        labels.to_csv(path, index=False)
        lines = [r + 2 for r in blank_rows]
        with pytest.raises(DataError, match=rf"{len(blank_rows)} rows have a blank image_id.* \(first at lines "
                                            rf"\[{', '.join(map(str, lines))}\]\)") as error:
            read_vindr(path)
        assert str(path) in str(error.value)
    odd = raw.head(40).copy()
    odd.loc[7, "class_name"] = "Lung nodule"
    odd.loc[[2, 11], "class_name"] = np.nan
    odd.to_csv(tmp_path / "odd.csv", index=False)
    want = r"unknown class_name values \['Lung nodule'\] \(e.g. row 7\); 2 rows have a blank class_name \(first at " \
           r"lines \[4, 13\]\)"
    with pytest.raises(DataError, match=want):
        read_vindr(tmp_path / "odd.csv")
    with pytest.raises(DataError, match=want):
        read_vindr_boxes(tmp_path / "odd.csv")


# ------------------------------------------------------------------------------------------------ a run
@pytest.mark.slow
def test_explore_train_evaluate_on_dicom_trees(raw: pd.DataFrame, physionet_tree: Path, compose: Callable,
                                              tiny_overrides, tmp_path: Path) -> None:
    """Kaggle layout: explore and every image found; PhysioNet layout: chestx.train (the test split is the
    consensus file) and chestx.evaluate on its predictions."""
    from hydra.utils import instantiate

    from chestx.data.labels.stats import explore
    from chestx.core.run_folder import read_predictions
    from chestx.runs.scoring import evaluate
    from chestx.train import train

    kaggle = build_kaggle_tree(raw, tmp_path / "kaggle")
    data = instantiate(compose(["data=vindr_cxr", f"data.root={kaggle}"], tmp_path / "k").data)
    data.prepare()
    assert data.layout == "kaggle" and len(data.paths) == 60
    result = explore(data.table, data.split, tmp_path / "explore", figures=False)
    counts = result["label_counts"].set_index(["split", "pathology"])
    want = ref_labels(raw[raw["image_id"].isin(pd.unique(raw["image_id"])[:60])], "any")
    for name in data.pathologies:
        assert counts.loc[("all", name), "positive"] == int(want[name].sum()), name

    cfg = compose([*tiny_overrides, "data=vindr_cxr", f"data.root={physionet_tree}", "model=resnet56v2",
                   "data.image_size=32", "data.val_fraction=0.2"], tmp_path / "run")
    table, split = instantiate(cfg.data).labels_only()
    metrics = train(cfg)
    assert metrics["status"] == "ok"
    ids, probs, labels, pathologies = read_predictions(tmp_path / "run" / "predictions.csv")
    consensus = pd.read_csv(physionet_tree / "annotations" / "image_labels_test.csv").set_index("image_id")
    assert ids["image_id"].tolist() == consensus.index.tolist()
    np.testing.assert_array_equal(labels, consensus[REF_CLASSES].to_numpy(dtype=float))
    assert pathologies == [chestx_name(c) for c in REF_CLASSES] and np.all((probs >= 0) & (probs <= 1))
    scored = evaluate(tmp_path / "run" / "predictions.csv", table, split, tmp_path / "evaluate")
    assert scored["test/auroc_mean"] == pytest.approx(metrics["test/auroc_mean"], nan_ok=True)
