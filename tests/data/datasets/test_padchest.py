"""PadChest on its real label file (160,861 rows) against an independent pandas reference, bad inputs, and a tiny run.

Sources of the rules restated here (not imported from chestx):
- Bustos et al. 2020, "PadChest: A large chest x-ray image dataset with multi-label annotated reports", Medical Image
  Analysis; the authors' hierarchy of terms (github.com/auriml/Rx-thorax-automatic-captioning, tree_term_CUI_counts):
  `REF_FINDING_TERMS` (a subtype counts for its parent).
- torchxrayvision `datasets.py` `PC_Dataset`: `XRV_PATHOLOGIES`, `XRV_MAPPING` and its loop of `str.contains` over
  the `Labels` text (restated literally in `xrv_labels`), its list of missing / broken images, "AP_horizontal" ->
  "AP Supine".
- chestx's rules for PadChest (docs/datasets/padchest.md): rows without `Labels` left out; a row whose only terms are
  empty items or "exclude" has unknown labels under the table; no_finding = terms exactly {"normal"}; age = study
  year - birth year; patient-level random split (the rule of tests/data/datasets/test_label_conformance.py).

The reference uses only pandas, numpy and ast; chestx is imported inside the test bodies, to get what is compared.
"""
from __future__ import annotations

import ast
import csv
import gzip
import io
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest

PADCHEST_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
SPLIT_NAMES = np.array(["train", "val", "test"])
REF_VIEWS = {"PA": "PA", "AP": "AP", "AP_horizontal": "AP Supine", "L": "LATERAL", "COSTAL": "COSTAL",
             "EXCLUDE": "EXCLUDE", "UNK": "UNK"}
REF_TUBES = ("endotracheal tube", "tracheostomy tube", "NSG tube", "chest drain tube",
             "ventriculoperitoneal drain tube", "gastrostomy tube", "nephrostomy tube", "double J stent")
REF_FINDING_TERMS: dict[str, tuple[str, ...]] = {
    "Air Trapping": ("air trapping",),
    "Aortic Atheromatosis": ("aortic atheromatosis",),
    "Aortic Elongation": ("aortic elongation", "descendent aortic elongation", "ascendent aortic elongation",
                          "supra aortic elongation", "aortic button enlargement"),
    "Atelectasis": ("atelectasis", "atelectasis basal", "laminar atelectasis", "lobar atelectasis", "round atelectasis",
                    "segmental atelectasis", "total atelectasis"),
    "Bronchiectasis": ("bronchiectasis",),
    "Cardiomegaly": ("cardiomegaly",),
    "Consolidation": ("consolidation", "air bronchogram"),
    "Costophrenic Angle Blunting": ("costophrenic angle blunting",),
    "Edema": ("pulmonary edema",),
    "Effusion": ("pleural effusion", "loculated pleural effusion", "loculated fissural effusion", "hydropneumothorax",
                 "empyema"),
    "Emphysema": ("emphysema",),
    "Fibrosis": ("pulmonary fibrosis", "post radiotherapy changes", "asbestosis signs"),
    "Flattened Diaphragm": ("flattened diaphragm",),
    "Fracture": ("fracture", "rib fracture", "callus rib fracture", "clavicle fracture", "humeral fracture",
                 "vertebral fracture"),
    "Granuloma": ("granuloma", "calcified granuloma"),
    "Hemidiaphragm Elevation": ("hemidiaphragm elevation",),
    "Hernia": ("hiatal hernia",),
    "Hilar Enlargement": ("hilar enlargement", "vascular hilar enlargement", "pulmonary artery enlargement",
                          "adenopathy", "calcified adenopathy", "calcified mediastinal adenopathy"),
    "Infiltration": ("infiltrates", "interstitial pattern", "ground glass pattern", "reticular interstitial pattern",
                     "reticulonodular interstitial pattern", "miliary opacities", "alveolar pattern", "consolidation",
                     "air bronchogram"),
    "Mass": ("mass", "pulmonary mass", "mediastinal mass", "pleural mass", "breast mass", "soft tissue mass"),
    "Nodule": ("nodule", "multiple nodules"),
    "Pleural_Thickening": ("pleural thickening", "apical pleural thickening", "calcified pleural thickening"),
    "Pneumonia": ("pneumonia", "atypical pneumonia"),
    "Pneumothorax": ("pneumothorax", "hydropneumothorax"),
    "Scoliosis": ("scoliosis",),
    "Support Devices": ("electrical device", "pacemaker", "dual chamber device", "single chamber device", "dai",
                        "catheter", "central venous catheter", "central venous catheter via jugular vein",
                        "central venous catheter via subclavian vein", "central venous catheter via umbilical vein",
                        "reservoir central venous catheter", *REF_TUBES),
    "Tube": REF_TUBES,
    "Tuberculosis": ("tuberculosis", "tuberculosis sequelae"),
}
# torchxrayvision PC_Dataset, as written there
XRV_PATHOLOGIES = sorted(["Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema",
                          "Fibrosis", "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass",
                          "Hernia", "Fracture", "Granuloma", "Flattened Diaphragm", "Bronchiectasis",
                          "Aortic Elongation", "Scoliosis", "Hilar Enlargement", "Tuberculosis", "Air Trapping",
                          "Costophrenic Angle Blunting", "Aortic Atheromatosis", "Hemidiaphragm Elevation",
                          "Support Devices", "Tube'"])
XRV_MAPPING = {
    "Infiltration": ["infiltrates", "interstitial pattern", "ground glass pattern", "reticular interstitial pattern",
                     "reticulonodular interstitial pattern", "alveolar pattern", "consolidation", "air bronchogram"],
    "Pleural_Thickening": ["pleural thickening"],
    "Consolidation": ["air bronchogram"],
    "Hilar Enlargement": ["adenopathy", "pulmonary artery enlargement"],
    "Support Devices": ["device", "pacemaker"],
    "Tube'": ["stent'"],
}
XRV_MISSING = [
    "216840111366964012819207061112010307142602253_04-014-084.png",
    "216840111366964012989926673512011074122523403_00-163-058.png",
    "216840111366964012959786098432011033083840143_00-176-115.png",
    "216840111366964012558082906712009327122220177_00-102-064.png",
    "216840111366964012339356563862009072111404053_00-043-192.png",
    "216840111366964013076187734852011291090445391_00-196-188.png",
    "216840111366964012373310883942009117084022290_00-064-025.png",
    "216840111366964012283393834152009033102258826_00-059-087.png",
    "216840111366964012373310883942009170084120009_00-097-074.png",
    "216840111366964012819207061112010315104455352_04-024-184.png",
    "216840111366964012819207061112010306085429121_04-020-102.png",
    "216840111366964012989926673512011083134050913_00-168-009.png",
    "216840111366964012373310883942009152114636712_00-102-045.png",
    "216840111366964012819207061112010281134410801_00-129-131.png",
    "216840111366964012487858717522009280135853083_00-075-001.png",
    "216840111366964012989926673512011151082430686_00-157-045.png",
    "216840111366964013686042548532013208193054515_02-026-007.png",
    "216840111366964013590140476722013058110301622_02-056-111.png",
    "216840111366964013590140476722013043111952381_02-065-198.png",
    "216840111366964013829543166512013353113303615_02-092-190.png",
    "216840111366964013962490064942014134093945580_01-178-104.png",
]


def ref_terms(text: str) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in ast.literal_eval(text) if t.strip()))


def xrv_labels(labels_text: pd.Series) -> np.ndarray:
    """torchxrayvision's loop, literally: (N, 28) in its sorted order, Tube' included."""
    out = []
    for pathology in XRV_PATHOLOGIES:
        mask = labels_text.str.contains(pathology.lower())
        for syn in XRV_MAPPING.get(pathology, []):
            mask |= labels_text.str.contains(syn.lower())
        out.append(mask.to_numpy())
    return np.asarray(out).T.astype(np.float32)


def ref_random_groups(patients: np.ndarray, ratios: tuple[float, ...], seed: int) -> np.ndarray:
    unique, row_patient = np.unique(patients.astype(str), return_inverse=True)
    rank = np.empty(len(unique), dtype=np.int64)
    rank[np.random.default_rng(seed).permutation(len(unique))] = np.arange(len(unique))
    bounds = np.cumsum([round(ratios[0] * len(unique)), round(ratios[1] * len(unique))])
    return np.searchsorted(bounds, rank, side="right")[row_patient]


class PadChestReference:
    """The label file read with pandas; the rows that have `Labels`, their terms and the reference's columns."""

    def __init__(self, csv_path: Path) -> None:
        self.raw = pd.read_csv(csv_path, low_memory=False, dtype={"PatientID": str, "ImageID": str})
        labelled = self.raw[self.raw["Labels"].notna()].reset_index(drop=True)
        self.rows = labelled
        self.ids = labelled["ImageID"].to_numpy(dtype=object)
        self.patients = labelled["PatientID"].astype(str).to_numpy(dtype=object)
        self.views = labelled["Projection"].map(REF_VIEWS).to_numpy(dtype=object)
        self.terms = [ref_terms(t) for t in labelled["Labels"]]
        self.unlabelled = np.array([not (set(t) - {"exclude"}) for t in self.terms])
        self.normal = np.array([t == ["normal"] for t in self.terms])
        year = labelled["StudyDate_DICOM"].astype(str).str[:4].astype(float).to_numpy()
        self.age = year - labelled["PatientBirth"].to_numpy(dtype=float)

    def table_labels(self, names: list[str]) -> np.ndarray:
        column = {name: k for k, name in enumerate(names)}
        columns_of_term: dict[str, list[int]] = {}
        for name, terms in REF_FINDING_TERMS.items():
            for term in terms:
                if name in column:
                    columns_of_term.setdefault(term, []).append(column[name])
        out = np.zeros((len(self.terms), len(names)), dtype=np.float32)
        for i, terms in enumerate(self.terms):
            for term in terms:
                out[i, columns_of_term.get(term, [])] = 1.0
        out[self.unlabelled] = np.nan
        return out


@pytest.fixture(scope="module")
def padchest_dir(shared_data: Path) -> Path:
    folder = shared_data / "padchest"
    if not (folder / PADCHEST_FILE).is_file():
        pytest.skip(f"{folder / PADCHEST_FILE} not found")
    return folder


@pytest.fixture(scope="module")
def ref(padchest_dir: Path) -> PadChestReference:
    return PadChestReference(padchest_dir / PADCHEST_FILE)


@pytest.fixture(scope="module")
def table_all(padchest_dir: Path) -> Any:
    from chestx.data.datasets.padchest import read_padchest

    return read_padchest(padchest_dir / PADCHEST_FILE)


def _cells(got: np.ndarray, want: np.ndarray, names: list[str], ids: np.ndarray) -> list[str]:
    bad = ~((got == want) | (np.isnan(got) & np.isnan(want)))
    return [f"{names[k]}: {int(bad[:, k].sum())} cells differ, e.g. {ids[np.flatnonzero(bad[:, k])[:3]].tolist()}"
            for k in np.flatnonzero(bad.any(axis=0))]


# ------------------------------------------------------------------------------------------------ the real file
def test_reference_matches_the_published_figures(ref: PadChestReference) -> None:
    assert len(ref.raw) == 160_861 and ref.raw["PatientID"].nunique() == 67_625  # Bustos et al.; data README
    assert ref.raw.shape[1] == 36 and ref.raw.columns[0] == "Unnamed: 0"  # an unnamed index column, then 35
    assert int(ref.raw["Labels"].isna().sum()) == 103
    assert sorted(ref.raw["ImageDir"].unique())[0] == 0 and ref.raw["ImageDir"].max() == 54
    assert set(ref.raw["Projection"]) == set(REF_VIEWS)
    distinct = {t for terms in ref.terms for t in terms}
    assert len(distinct) == 193  # after stripping stray spaces; the paper's 174 findings + 19 diagnoses
    assert int(ref.unlabelled.sum()) == 2_061 and int(ref.normal.sum()) == 50_390


def test_table_lists_every_term_of_the_file_once(ref: PadChestReference) -> None:
    from chestx.data.datasets.padchest import FINDING_TERMS, NOT_MAPPED, PADCHEST_FINDINGS, PADCHEST_TERMS

    distinct = {t for terms in ref.terms for t in terms}
    mapped = {t for terms in FINDING_TERMS.values() for t in terms}
    assert mapped | set(NOT_MAPPED) == distinct, (sorted(distinct - mapped - set(NOT_MAPPED)),
                                                  sorted((mapped | set(NOT_MAPPED)) - distinct))
    assert not mapped & set(NOT_MAPPED) and len(NOT_MAPPED) == len(set(NOT_MAPPED))
    assert list(FINDING_TERMS) == list(PADCHEST_FINDINGS) and set(PADCHEST_TERMS) == distinct
    assert list(PADCHEST_FINDINGS) == [p.replace("Tube'", "Tube") for p in XRV_PATHOLOGIES]


def test_table_labels_conform(ref: PadChestReference, table_all: Any) -> None:
    names = list(table_all.pathologies)
    assert names == list(REF_FINDING_TERMS)
    frame = table_all.frame
    np.testing.assert_array_equal(frame["image_id"].to_numpy(dtype=object), ref.ids)
    np.testing.assert_array_equal(frame["patient_id"].to_numpy(dtype=object), ref.patients)
    problems = _cells(table_all.labels, ref.table_labels(names), names, ref.ids)
    assert not problems, "\n".join(problems)
    assert table_all.labels.dtype == np.float32 and not table_all.uncertain.any()
    np.testing.assert_array_equal(frame["no_finding"].to_numpy(dtype=bool), ref.normal)
    np.testing.assert_array_equal(frame["view"].to_numpy(dtype=object), ref.views)
    np.testing.assert_array_equal(frame["age"].to_numpy(), ref.age)
    sex = ref.rows["PatientSex_DICOM"]
    assert frame["sex"].isna().sum() == sex.isna().sum() == 4
    assert (frame["sex"][sex.notna()].to_numpy() == sex.dropna().to_numpy()).all()
    frontal = np.isin(ref.views, ["PA", "AP", "AP Supine"])
    assert (frame["frontal_lateral"][frontal] == "Frontal").all()
    assert (frame["frontal_lateral"][ref.views == "LATERAL"] == "Lateral").all()
    assert frame["frontal_lateral"][~frontal & (ref.views != "LATERAL")].isna().all()
    # issue figures: Effusion 10,021 positives; the table's Nodule leaves pseudonodule out
    assert int(np.nansum(table_all.labels[:, names.index("Effusion")])) == 10_021


@pytest.mark.parametrize("views", [["PA"], ["PA", "AP", "AP_horizontal"], ["L"]], ids=["PA", "frontal", "L"])
def test_views_select_projection_rows(padchest_dir: Path, ref: PadChestReference, views: list[str]) -> None:
    from chestx.data.datasets.padchest import read_padchest

    table = read_padchest(padchest_dir / PADCHEST_FILE, ["Effusion", "Nodule"], views=views)
    keep = np.isin(ref.views, [REF_VIEWS[v] for v in views])
    np.testing.assert_array_equal(table.frame["image_id"].to_numpy(dtype=object), ref.ids[keep])
    names = ["Effusion", "Nodule"]
    problems = _cells(table.labels, ref.table_labels(names)[keep], names, ref.ids[keep])
    assert not problems, "\n".join(problems)


def test_torchxrayvision_matching_reproduces_its_rule_row_for_row(padchest_dir: Path, ref: PadChestReference) -> None:
    """Every labelled row (all views), then torchxrayvision's own selection (PA, missing images out)."""
    from chestx.data.datasets.padchest import read_padchest

    table = read_padchest(padchest_dir / PADCHEST_FILE, matching="torchxrayvision")
    want = xrv_labels(ref.rows["Labels"])
    assert list(table.pathologies) == [p.replace("Tube'", "Tube") for p in XRV_PATHOLOGIES]
    problems = _cells(table.labels, want, list(table.pathologies), ref.ids)
    assert not problems, "\n".join(problems)
    # where the table differs from the substring rule (docs): e.g. pseudonodule is no Nodule, pericardial effusion
    # no Effusion, subcutaneous emphysema no Emphysema
    table_rule = ref.table_labels(list(table.pathologies))
    for name, term in (("Nodule", "pseudonodule"), ("Effusion", "pericardial effusion"),
                       ("Emphysema", "subcutaneous emphysema")):
        k = list(table.pathologies).index(name)
        only = np.array([t == [term] for t in ref.terms])
        assert only.any() and (want[only, k] == 1).all() and (table_rule[only, k] == 0).all(), name
    # torchxrayvision's rows: PA, Labels present, its missing / broken images left out (unique_patients=False)
    xrv = ref.raw.copy()
    xrv.loc[xrv["Projection"].isin(["AP_horizontal"]), "Projection"] = "AP Supine"
    xrv = xrv[xrv["Projection"].isin(["PA"]) & xrv["Labels"].notna() & ~xrv["ImageID"].isin(XRV_MISSING)]
    assert len(xrv) == 91_728 - 65 - int(np.isin(ref.ids[ref.views == "PA"], XRV_MISSING).sum())  # PA, no Labels
    mine = pd.Index(table.frame["image_id"]).get_indexer(xrv["ImageID"])
    assert (mine >= 0).all() and (table.frame["view"].to_numpy()[mine] == "PA").all()
    np.testing.assert_array_equal(table.labels[mine], want[pd.Index(ref.ids).get_indexer(xrv["ImageID"])])


@pytest.mark.parametrize("seed, ratios", [(0, (0.7, 0.1, 0.2)), (5, (0.6, 0.2, 0.2))])
def test_padchest_data_split_and_rows_conform(padchest_dir: Path, ref: PadChestReference, seed: int,
                                              ratios: tuple[float, ...]) -> None:
    from chestx.data.datasets.padchest import PadChestData

    data = PadChestData(root=str(padchest_dir), views=["PA", "AP", "AP_horizontal"], ratios=ratios, seed=seed)
    table, split = data.labels_only()
    keep = np.isin(ref.views, ["PA", "AP", "AP Supine"]) & ~np.isin(ref.ids, XRV_MISSING)
    np.testing.assert_array_equal(table.frame["image_id"].to_numpy(dtype=object), ref.ids[keep])
    want = SPLIT_NAMES[ref_random_groups(ref.patients[keep], ratios, seed)]
    np.testing.assert_array_equal(np.asarray(split), want)
    assert data.pathologies == list(REF_FINDING_TERMS)


# ------------------------------------------------------------------------------------------------ bad inputs
def _records(csv_path: Path, n: int) -> tuple[list[str], list[list[str]]]:
    """Header and the first n records of the real gzip CSV (csv module: Report cells span lines)."""
    with gzip.open(csv_path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [next(reader) for _ in range(n)]


def _write_records(path: Path, header: list[str], records: list[list[str]]) -> Path:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(records)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as handle:
        handle.write(text.getvalue())
    return path


def test_bad_inputs_are_named(padchest_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError, DataFileNotFoundError
    from chestx.data.datasets.padchest import PadChestData, read_padchest

    header, records = _records(padchest_dir / PADCHEST_FILE, 6)
    labels_at, projection_at = header.index("Labels"), header.index("Projection")
    with pytest.raises(DataFileNotFoundError, match="PadChest label file not found"):
        read_padchest(tmp_path / "absent.csv.gz")
    nih = shared_data / "nih" / "Data_Entry_2017_v2020.csv"
    with pytest.raises(DataError, match=r"lacks columns \['ImageID'"):
        read_padchest(nih)  # the wrong dataset's file
    cut = [h for h in header if h != "Labels"]
    short = _write_records(tmp_path / "short.csv", cut,
                           [[v for h, v in zip(header, r) if h != "Labels"] for r in records])
    with pytest.raises(DataError, match=r"lacks columns \['Labels'\]"):
        read_padchest(short)
    odd = [list(r) for r in records]
    odd[3][labels_at] = "['pleural effusion', 'mystery sign']"
    with pytest.raises(DataError) as caught:
        read_padchest(_write_records(tmp_path / "term.csv", header, odd))
    message = str(caught.value)
    assert "'mystery sign'" in message and "row 3" in message and odd[3][header.index("ImageID")] in message
    assert "FINDING_TERMS" in message and "matching=torchxrayvision" in message
    table = read_padchest(tmp_path / "term.csv", matching="torchxrayvision")  # the substring rule needs no table
    assert table.labels[3, table.pathologies.index("Effusion")] == 1
    broken = [list(r) for r in records]
    broken[1][labels_at] = "['pleural effusion'"
    with pytest.raises(DataError, match="row 1 .*not a Python list literal"):
        read_padchest(_write_records(tmp_path / "literal.csv", header, broken))
    nobody = [list(r) for r in records]
    nobody[4][header.index("PatientID")] = ""
    with pytest.raises(DataError, match="1 rows have a blank ImageID, PatientID or ImageDir .*row 4"):
        read_padchest(_write_records(tmp_path / "nobody.csv", header, nobody))
    view = [list(r) for r in records]
    view[2][projection_at] = "OBLIQUE"
    with pytest.raises(DataError, match=r"unknown 'Projection' values \['OBLIQUE'\]"):
        read_padchest(_write_records(tmp_path / "view.csv", header, view))
    with pytest.raises(DataError, match="data.matching='substring'"):
        read_padchest(padchest_dir / PADCHEST_FILE, matching="substring")
    with pytest.raises(DataError, match="'Pleural Effusion'"):
        read_padchest(tmp_path / "term.csv", ["Pleural Effusion"], matching="torchxrayvision")
    with pytest.raises(DataError, match="data.views: 'OBLIQUE'"):
        PadChestData(root=str(tmp_path), views=["OBLIQUE"])
    with pytest.raises(DataError, match="none of .*PADCHEST"):
        PadChestData(root=str(tmp_path)).labels_only()


def test_nan_rows_and_empty_items_are_counted(padchest_dir: Path, tmp_path: Path, caplog) -> None:
    from chestx.data.datasets.padchest import read_padchest

    header, records = _records(padchest_dir / PADCHEST_FILE, 5)
    labels_at = header.index("Labels")
    rows = [list(r) for r in records]
    rows[0][labels_at] = ""  # no Labels value
    rows[1][labels_at] = "['', ' ']"  # empty items only
    rows[2][labels_at] = "['exclude', '']"
    rows[3][labels_at] = "[' pneumonia', '', 'pneumonia']"
    with caplog.at_level(logging.INFO):
        table = read_padchest(_write_records(tmp_path / "few.csv", header, rows), ["Pneumonia", "Effusion"])
    assert table.frame["image_id"].tolist() == [r[header.index("ImageID")] for r in rows[1:]]
    assert np.isnan(table.labels[:2]).all() and table.labels[2].tolist() == [1.0, 0.0]
    assert table.frame["terms"].tolist()[:3] == ["", "exclude", "pneumonia"]
    text = caplog.text
    assert "1 rows have no 'Labels' value" in text and "4 empty items and 1 terms with stray spaces" in text
    assert "2 rows have no term" in text


# ------------------------------------------------------------------------------------------------ images and a run
def _pixels(i: int, size: int = 64) -> np.ndarray:
    from PIL import Image

    sources = sorted((Path(__file__).resolve().parents[3] / "data" / "nih_sample" / "images").glob("*.png"))
    with Image.open(sources[i % len(sources)]) as image:
        return np.asarray(image.convert("L").resize((size, size)))


def _write_png(path: Path, pixels: np.ndarray, sixteen_bit: bool) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), pixels.astype(np.uint16) * 257 if sixteen_bit else pixels)


def build_padchest_tree(padchest_dir: Path, dest: Path, n: int = 160, flat: bool = False) -> Path:
    """The label file's first n records (gzip, as distributed) and small PNGs at <ImageDir>/<ImageID> (or flat);
    every 4th image 16-bit, as PadChest ships them."""
    header, records = _records(padchest_dir / PADCHEST_FILE, n)
    dest.mkdir(parents=True, exist_ok=True)
    _write_records(dest / PADCHEST_FILE, header, records)
    at_id, at_dir = header.index("ImageID"), header.index("ImageDir")
    for i, record in enumerate(records):
        folder = dest if flat else dest / record[at_dir]
        _write_png(folder / record[at_id], _pixels(i), sixteen_bit=i % 4 == 0)
    return dest


def test_images_are_found_in_both_layouts_and_16_bit_decodes(padchest_dir: Path, tmp_path: Path) -> None:
    import cv2

    from chestx.data.images.read import load_grayscale
    from chestx.data.datasets.padchest import PadChestData

    for flat in (False, True):
        root = build_padchest_tree(padchest_dir, tmp_path / ("flat" if flat else "dirs"), n=40, flat=flat)
        data = PadChestData(root=str(root), views=None)
        data.prepare()
        paths = data.image_paths("train") | data.image_paths("val") | data.image_paths("test")
        assert len(paths) == 40 and all(p.is_file() for p in paths.values())
        assert all(p.parent == (root if flat else root / "0") for p in paths.values())
    sixteen = next(p for p in paths.values() if cv2.imread(str(p), cv2.IMREAD_UNCHANGED).dtype == np.uint16)
    stored = cv2.imread(str(sixteen), cv2.IMREAD_UNCHANGED).astype(np.float64)  # (H, W) 16-bit, as written
    want = np.rint((stored - stored.min()) / (stored.max() - stored.min()) * 255)  # images.py: 16-bit is min-max
    got = load_grayscale(sixteen)
    assert got.dtype == np.uint8 and got.shape == stored.shape and np.abs(got - want).max() <= 1


@pytest.mark.slow
def test_explore_train_evaluate_on_real_rows(padchest_dir: Path, compose: Callable, tiny_overrides, tmp_path: Path,
                                            ref: PadChestReference) -> None:
    """chestx.explore's tables, chestx.train (PadChest's default frontal views), chestx.evaluate on its predictions."""
    from hydra.utils import instantiate

    from chestx.data.labels.stats import explore
    from chestx.core.run_folder import read_predictions
    from chestx.runs.scoring import evaluate
    from chestx.train import train

    root = build_padchest_tree(padchest_dir, tmp_path / "padchest")
    cfg = compose([*tiny_overrides, "data=padchest", f"data.root={root}", "model=resnet56v2", "data.image_size=32",
                   "data.findings=[Effusion,Cardiomegaly,Pneumonia,Infiltration,'Support Devices']"],
                  tmp_path / "run")
    table, split = instantiate(cfg.data).labels_only()
    result = explore(table, split, tmp_path / "explore", figures=False)
    counts = result["label_counts"].set_index(["split", "pathology"])
    rows = pd.Index(ref.ids).get_indexer(table.frame["image_id"])
    want = ref.table_labels(list(table.pathologies))[rows]
    for k, name in enumerate(table.pathologies):
        assert counts.loc[("all", name), "positive"] == int(np.nansum(want[:, k])), name
    assert set(table.frame["view"]) <= {"PA", "AP", "AP Supine"}

    metrics = train(cfg)
    assert metrics["status"] == "ok"
    ids, probs, labels, pathologies = read_predictions(tmp_path / "run" / "predictions.csv")
    test_ids = table.frame["image_id"][np.asarray(split) == "test"].tolist()
    assert ids["image_id"].tolist() == test_ids and pathologies == list(table.pathologies)
    test_labels = want[np.asarray(split) == "test"]
    np.testing.assert_array_equal(np.nan_to_num(labels, nan=-1), np.nan_to_num(test_labels, nan=-1))
    scored = evaluate(tmp_path / "run" / "predictions.csv", table, split, tmp_path / "evaluate")
    assert scored["test/auroc_mean"] == pytest.approx(metrics["test/auroc_mean"], nan_ok=True)
