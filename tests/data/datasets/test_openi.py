"""data=openi on the real Open-i label files (../shared/data/openi: NLM's report archive, torchxrayvision's header
dump): every image's labels checked against an independent reference of torchxrayvision's `Openi_Dataset` rule
(the XML read with regular expressions, not ElementTree; the label rule as xrv writes it, pandas `str.contains` on
the `|`-joined terms), the counts of the release, the view filter's blank-view rule, and a patient-level split."""
from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

REPORTS = "NLMCXR_reports.tgz"
METADATA = "nlmcxr_dicom_metadata.csv.gz"
# torchxrayvision 1.5.x Openi_Dataset: its pathology names (sorted), its synonyms, its two renames
XRV_NAMES = sorted(["Atelectasis", "Fibrosis", "Pneumonia", "Effusion", "Lesion", "Cardiomegaly", "Calcified Granuloma",
                    "Fracture", "Edema", "Granuloma", "Emphysema", "Hernia", "Mass", "Nodule", "Opacity",
                    "Infiltration", "Pleural_Thickening", "Pneumothorax"])
XRV_SYNONYMS = {"Pleural_Thickening": ["pleural thickening"], "Infiltration": ["Infiltrate"],
                "Atelectasis": ["Atelectases"]}
XRV_RENAMES = {"Opacity": "Lung Opacity", "Lesion": "Lung Lesion"}


@pytest.fixture(scope="module")
def openi_dir(shared_data: Path) -> Path:
    folder = shared_data / "openi"
    if not (folder / REPORTS).is_file():
        pytest.skip(f"{folder / REPORTS} not found")
    return folder


def reference(reports: Path) -> pd.DataFrame:
    """One row per image (archive order): image id, report, and xrv's 18 labels, from the raw XML text."""
    rows = []
    with tarfile.open(reports, "r:gz") as archive:
        for member in archive.getmembers():
            if not member.name.endswith(".xml"):
                continue
            text = archive.extractfile(member).read().decode("utf-8")
            uid = re.search(r'<uId id="([^"]+)"', text).group(1)
            automatic = "|".join(np.unique([t.lower() for t in re.findall(r"<automatic>(.*?)</automatic>", text)]))
            for image in re.findall(r'<parentImage id="([^"]+)"', text):
                rows.append({"imageid": image, "uid": uid, "labels_automatic": automatic})
    frame = pd.DataFrame(rows)
    for name in XRV_NAMES:  # xrv: mask = str.contains(name.lower()) | str.contains(synonym.lower()) ...
        mask = frame["labels_automatic"].str.contains(name.lower())
        for synonym in XRV_SYNONYMS.get(name, []):
            mask |= frame["labels_automatic"].str.contains(synonym.lower())
        frame[XRV_RENAMES.get(name, name)] = mask.to_numpy(dtype=np.float32)
    return frame


def test_labels_match_torchxrayvision_rule_on_every_image(openi_dir: Path) -> None:
    from chestx.data.datasets.openi import OPENI_FINDINGS, read_openi

    table = read_openi(openi_dir / REPORTS, openi_dir / METADATA)
    ref = reference(openi_dir / REPORTS)
    assert len(table) == len(ref) == 7_470  # the release: 7,470 images (Demner-Fushman et al. 2016)
    assert table.frame["patient_id"].nunique() == ref["uid"].nunique() == 3_851  # reports with an image
    assert table.frame["image_id"].tolist() == ref["imageid"].tolist()
    assert table.frame["patient_id"].tolist() == ref["uid"].tolist()
    assert table.pathologies == list(OPENI_FINDINGS) and sorted(OPENI_FINDINGS) == sorted(ref.columns[3:])
    for k, name in enumerate(table.pathologies):
        np.testing.assert_array_equal(table.labels[:, k], ref[name].to_numpy(), err_msg=name)
    assert not table.uncertain.any() and not np.isnan(table.labels).any()
    assert int(table.labels[:, table.pathologies.index("Cardiomegaly")].sum()) == 493
    views = pd.read_csv(openi_dir / METADATA, usecols=["imageid", "View Position"], dtype=str).set_index("imageid")
    want = views["View Position"].reindex(table.frame["image_id"]).to_numpy()
    np.testing.assert_array_equal(table.frame["view"].fillna("<blank>").to_numpy(dtype=str),
                                  pd.Series(want).fillna("<blank>").to_numpy(dtype=str))
    assert int((table.frame["view"] == "PA").sum()) == 3_591 and int(table.frame["view"].isna().sum()) == 2_589


def test_data_openi_views_and_patient_split(openi_dir: Path, compose, tmp_path: Path, caplog) -> None:
    from hydra.utils import instantiate

    cfg = compose(["data=openi", f"data.root={openi_dir}"], tmp_path)
    data = instantiate(cfg.data)
    assert data.name == "openi"
    with caplog.at_level("WARNING"):
        table, split = data.labels_only()
    assert "leaves out 2589 rows with a blank view" in caplog.text  # the base class's one blank-view rule
    assert len(table) == 3_591 and set(table.frame["view"]) == {"PA"}
    patients = table.frame["patient_id"].to_numpy()
    assert set(patients[split == "train"]).isdisjoint(patients[split == "test"])
    again, split2 = instantiate(cfg.data).labels_only()
    np.testing.assert_array_equal(split, split2)
    counts = {s: int((split == s).sum()) for s in ("train", "val", "test")}
    assert counts == {"train": 2_508, "val": 356, "test": 727}
    with pytest.raises(Exception, match="data.views=\\['XX'\\] keeps no row"):
        instantiate(compose(["data=openi", f"data.root={openi_dir}", "data.views=[XX]"], tmp_path).data).labels_only()


def build_openi_tree(openi_dir: Path, dest: Path, sample_root: Path, n_reports: int = 40, size: int = 32) -> Path:
    """The first `n_reports` reports with images of the real archive, the real header dump, and a small PNG (a real
    NIH sample image, resized) at each image's path."""
    dest.mkdir(parents=True, exist_ok=True)
    sample = sorted((sample_root / "images").glob("*.png"))
    (dest / "images").mkdir(exist_ok=True)
    kept = 0
    with tarfile.open(openi_dir / REPORTS, "r:gz") as source, tarfile.open(dest / REPORTS, "w:gz") as out:
        for member in source.getmembers():
            if not member.name.endswith(".xml") or kept >= n_reports:
                continue
            data = source.extractfile(member).read()
            images = re.findall(r'<parentImage id="([^"]+)"', data.decode("utf-8"))
            if not images:
                continue
            out.addfile(member, io.BytesIO(data))
            for image in images:
                pixels = cv2.imread(str(sample[kept % len(sample)]), cv2.IMREAD_GRAYSCALE)
                cv2.imwrite(str(dest / "images" / f"{image}.png"), cv2.resize(pixels, (size, size)))
            kept += 1
    (dest / METADATA).write_bytes((openi_dir / METADATA).read_bytes())
    return dest
