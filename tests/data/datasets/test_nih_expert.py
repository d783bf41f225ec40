"""NIH expert labels (Google 2019): cells of the real google2019 file and NIH's 2020 label file against a pandas
reference, for both label sets and finding lists; Google's split; chestx.evaluate and test_data on them; bad inputs.

Reference rule (Majkowska et al. 2020; torchxrayvision `NIH_Google_Dataset`): YES -> 1, NO -> 0; `Set Id` val /
test. Original labels, in Google's definitions: Pneumothorax = NIH Pneumothorax, Nodule or mass = NIH Nodule or
Mass, Airspace opacity and Fracture unknown. The findings `nih` are Pneumothorax, Nodule, Mass (both of the last
two "Nodule or mass"). Metadata from NIH's label file.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

GOOGLE = "google2019_nih-chest-xray-labels.csv.gz"
NIH_CSV = "Data_Entry_2017_v2020.csv"
FOUR = ["Fracture", "Pneumothorax", "Airspace opacity", "Nodule or mass"]


class Reference:
    """The expert file and NIH's labels of its images, read with pandas alone."""

    def __init__(self, nih_dir: Path) -> None:
        self.google = pd.read_csv(nih_dir / GOOGLE)
        nih = pd.read_csv(nih_dir / NIH_CSV).set_index("Image Index")
        self.nih = nih.loc[self.google["Image Index"]]
        self.tokens = self.nih["Finding Labels"].str.split("|")

    def expert(self, name: str) -> np.ndarray:
        column = {"Nodule": "Nodule or mass", "Mass": "Nodule or mass"}.get(name, name)
        return (self.google[column] == "YES").to_numpy(dtype=np.float32)

    def original(self, name: str) -> np.ndarray:
        wanted = {"Pneumothorax": {"Pneumothorax"}, "Nodule": {"Nodule", "Mass"}, "Mass": {"Nodule", "Mass"},
                  "Nodule or mass": {"Nodule", "Mass"}}.get(name)
        if wanted is None:
            return np.full(len(self.google), np.nan, dtype=np.float32)
        return self.tokens.apply(lambda t: bool(wanted & set(t))).to_numpy(dtype=np.float32)


@pytest.fixture(scope="module")
def ref(nih_dir: Path) -> Reference:
    if not (nih_dir / GOOGLE).is_file():
        pytest.skip(f"{nih_dir / GOOGLE} not found")
    return Reference(nih_dir)


def test_reference_matches_the_published_figures(ref: Reference, nih_dir: Path) -> None:
    g = ref.google
    assert len(g) == 4_376 and g["Set Id"].value_counts().to_dict() == {"val": 2_414, "test": 1_962}
    assert {c: int((g[c] == "YES").sum()) for c in FOUR} == {
        "Fracture": 186, "Pneumothorax": 238, "Airspace opacity": 2_166, "Nodule or mass": 605}
    test_list = set((nih_dir / "test_list.txt").read_text().split())
    assert g.loc[g["Set Id"] == "test", "Image Index"].isin(test_list).all()  # Google's test set: NIH's test list
    assert not g.loc[g["Set Id"] == "val", "Image Index"].isin(test_list).any()  # its val set: NIH's train_val
    assert g.groupby("Patient ID")["Set Id"].nunique().max() == 1


@pytest.mark.parametrize("labels", ["expert", "original"])
@pytest.mark.parametrize("findings", ["nih", "google"])
def test_cells_match_the_reference(labels: str, findings: str, ref: Reference, nih_dir: Path) -> None:
    from chestx.data.datasets.nih_expert import NIHExpertData

    table, split = NIHExpertData(root=str(nih_dir), label_source=labels, findings=findings).labels_only()
    names = ["Pneumothorax", "Nodule", "Mass"] if findings == "nih" else FOUR
    assert table.pathologies == names
    assert list(table.frame["image_id"]) == list(ref.google["Image Index"])
    for k, name in enumerate(names):
        expected = ref.expert(name) if labels == "expert" else ref.original(name)
        np.testing.assert_array_equal(table.labels[:, k], expected, err_msg=name)
    np.testing.assert_array_equal(split, ref.google["Set Id"].to_numpy())
    assert not table.uncertain.any()
    # metadata and the normal flag from NIH's 2020 label file, not the expert file's 2017 copy
    np.testing.assert_array_equal(table.frame["age"], ref.nih["Patient Age"].to_numpy(dtype=float))
    assert list(table.frame["sex"]) == list(ref.nih["Patient Gender"])
    assert list(table.frame["patient_id"]) == list(ref.nih["Patient ID"].astype(str))
    np.testing.assert_array_equal(table.frame["no_finding"], (ref.nih["Finding Labels"] == "No Finding").to_numpy())


def test_test_set_positives_under_both_label_sets(nih_dir: Path) -> None:
    from chestx.data.datasets.nih_expert import NIHExpertData

    counts = {}
    for labels in ("expert", "original"):
        table, split = NIHExpertData(root=str(nih_dir), label_source=labels).labels_only()
        counts[labels] = np.nansum(table.labels[split == "test"], axis=0).astype(int).tolist()
    assert counts == {"expert": [195, 295, 295], "original": [200, 237, 237]}


def test_one_file_per_set_and_the_random_split(ref: Reference, nih_dir: Path, tmp_path: Path) -> None:
    from chestx.data.datasets.nih_expert import NIHExpertData

    files = {}
    for set_id in ("val", "test"):
        files[set_id] = tmp_path / f"{set_id}_labels.csv"
        ref.google[ref.google["Set Id"] == set_id].drop(columns="Set Id").to_csv(files[set_id], index=False)
    combined, split = NIHExpertData(root=str(nih_dir), findings="google").labels_only()
    separate, split2 = NIHExpertData(root=str(nih_dir), findings="google",
                                     expert_csv={k: str(v) for k, v in files.items()}).labels_only()
    order = pd.Series(np.arange(len(separate)), index=separate.frame["image_id"]).loc[combined.frame["image_id"]]
    np.testing.assert_array_equal(combined.labels, separate.labels[order.to_numpy()])  # rows in file order
    np.testing.assert_array_equal(split, split2[order.to_numpy()])
    randomly = NIHExpertData(root=str(nih_dir), split="random", seed=3)
    table, random = randomly.labels_only()
    assert {s: int((random == s).sum()) > 0 for s in ("train", "val", "test")} == {"train": True, "val": True, "test": True}
    assert len(randomly.train_labels()) == int((random == "train").sum())
    folds = NIHExpertData(root=str(nih_dir), folds=4, fold=1)
    table, split = folds.labels_only()
    assert int((split == "test").sum()) == 1_962 and int((split == "train").sum()) > 1_500  # folds of Google's val
    assert table.frame.loc[split == "test", "fold"].eq(-1).all()


def test_bad_inputs_are_named(ref: Reference, nih_dir: Path, tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError, DataFileNotFoundError
    from chestx.data.datasets.nih_expert import NIHExpertData

    def expert_file(frame: pd.DataFrame) -> str:
        path = tmp_path / f"expert{len(list(tmp_path.iterdir()))}.csv"
        frame.to_csv(path, index=False)
        return str(path)

    def load(frame: pd.DataFrame, **options) -> None:
        NIHExpertData(root=str(nih_dir), expert_csv=expert_file(frame), **options).labels_only()

    g = ref.google
    with pytest.raises(DataError, match=r"column 'Fracture' must be YES or NO; found \['MAYBE'\] in 1 rows"):
        load(g.assign(Fracture=np.where(np.arange(len(g)) == 5, "MAYBE", g["Fracture"])))
    with pytest.raises(DataError, match=r"'Set Id' must be \['val', 'test'\]; found \['validation'\]"):
        load(g.assign(**{"Set Id": g["Set Id"].replace("val", "validation")}))
    with pytest.raises(DataError, match=r"lacks columns \['Nodule or mass'\]"):
        load(g.drop(columns="Nodule or mass"))
    with pytest.raises(DataError, match=r"images \['00000013_008.png'\] appear twice"):
        load(pd.concat([g, g.head(1)]))
    with pytest.raises(DataError, match=r"1 images of the expert labels are not in the NIH label file .*99999999_000.png"):
        load(g.assign(**{"Image Index": g["Image Index"].where(g.index != 0, "99999999_000.png")}))
    with pytest.raises(DataError, match=r"data.findings=\['Nodules'\]"):
        NIHExpertData(root=str(nih_dir), findings=["Nodules"])
    with pytest.raises(DataError, match=r"data.findings='all'"):
        NIHExpertData(root=str(nih_dir), findings="all")
    with pytest.raises(DataError, match=r"data.label_source='nlp'"):
        NIHExpertData(root=str(nih_dir), label_source="nlp")
    with pytest.raises(DataError, match=r"data.split='official'"):
        NIHExpertData(root=str(nih_dir), split="official")
    with pytest.raises(DataFileNotFoundError, match=r"none of the label files \['google2019_nih-chest-xray-labels"):
        NIHExpertData(root=str(tmp_path)).labels_only()
    (tmp_path / "google2019_nih-chest-xray-labels.csv").write_bytes(g.to_csv(index=False).encode())
    with pytest.raises(DataFileNotFoundError, match=r"none of the label files \['Data_Entry_2017_v2020.csv'"):
        NIHExpertData(root=str(tmp_path)).labels_only()
    data = NIHExpertData(root=str(nih_dir))
    data.labels_only()
    with pytest.raises(DataError, match="no training images .* data.folds=K .* data.split=random"):
        data.train_labels()


# ------------------------------------------------------------------------------------- evaluate and test_data
def _scores(truth: np.ndarray, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=truth.shape) + 2.0 * np.nan_to_num(truth)
    return 1.0 / (1.0 + np.exp(-logits))


def test_evaluate_an_nih_models_predictions(ref: Reference, nih_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """`python -m chestx.evaluate predictions=<an NIH run's predictions.csv> data=nih_expert` (in-process): the
    CSV covers NIH's whole official test list (25,596 images), 1,962 of which Google relabelled."""
    from chestx.data.labels.table import NIH_PATHOLOGIES
    from chestx.evaluate import main

    test_ids = (nih_dir / "test_list.txt").read_text().split()
    expert_test = ref.google[ref.google["Set Id"] == "test"]
    nih = pd.read_csv(nih_dir / NIH_CSV).set_index("Image Index").loc[test_ids]
    truth = np.stack([nih["Finding Labels"].str.contains(p, regex=False) for p in NIH_PATHOLOGIES], 1).astype(float)
    probs = _scores(truth, 0)  # (25_596, 14): scores that follow NIH's own labels
    csv = tmp_path / "nih_run_predictions.csv"
    pd.DataFrame({"image_id": test_ids} | {f"prob_{p}": probs[:, k] for k, p in enumerate(NIH_PATHOLOGIES)}).to_csv(
        csv, index=False, float_format="%.9g")
    row = pd.Series(np.arange(len(test_ids)), index=test_ids).loc[expert_test["Image Index"]].to_numpy()
    for labels in ("expert", "original"):
        run = tmp_path / labels
        monkeypatch.setattr(sys, "argv", ["chestx.evaluate", f"predictions={csv}", "data=nih_expert",
                                          f"data.root={nih_dir}", f"data.label_source={labels}",
                                          f"hydra.run.dir={run}"])
        main()
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["n_test"] == 1_962 and metrics["data"] == "NIHExpertData"
        subset = ref.google.set_index("Image Index").loc[expert_test["Image Index"]]
        for name in ("Pneumothorax", "Nodule", "Mass"):
            if labels == "expert":
                y = (subset["Nodule or mass" if name != "Pneumothorax" else name] == "YES").to_numpy()
            else:
                y = ref.original(name)[ref.google["Set Id"].to_numpy() == "test"]
            p = probs[row, NIH_PATHOLOGIES.index(name)]
            assert abs(metrics[f"test/auroc/{name}"] - roc_auc_score(y, p)) < 1e-9, (labels, name)
        assert (run / "subgroups.csv").is_file() and not (run / "predictions_val.csv").exists()


@pytest.fixture(scope="module")
def expert_tree(nih_dir: Path, ref: Reference, tmp_path_factory) -> Path:
    """The expert file and NIH's label file, with a small real X-ray PNG at the name of each of the 4,376 images."""
    import cv2

    root = tmp_path_factory.mktemp("nih_expert")
    for name in (GOOGLE, NIH_CSV):
        (root / name).symlink_to(nih_dir / name)
    sample = sorted((Path(__file__).resolve().parents[3] / "data" / "nih_sample" / "images").glob("*.png"))
    pixels = [cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (32, 32), interpolation=cv2.INTER_AREA)
              for p in sample[:50]]
    (root / "images").mkdir()
    for k, name in enumerate(ref.google["Image Index"]):
        cv2.imwrite(str(root / "images" / name), pixels[k % len(pixels)])
    return root


@pytest.mark.slow
def test_test_data_scores_a_trained_model_on_both_label_sets(expert_tree: Path, ref: Reference, compose,
                                                            tiny_overrides, tmp_path: Path) -> None:
    from chestx.core.run_folder import read_predictions
    from chestx.train import train

    cfg = compose([*tiny_overrides, "model=timm", "model.name=test_resnet", "data.image_size=32", "subgroups=none",
                   "test_data=[nih_expert,nih_expert_original]", f"test_data.nih_expert.root={expert_tree}",
                   f"test_data.nih_expert_original.root={expert_tree}"], tmp_path)
    metrics = train(cfg)
    assert metrics["status"] == "ok"
    test = ref.google["Set Id"].to_numpy() == "test"
    runs = {}
    for name in ("nih_expert", "nih_expert_original"):
        ids, probs, labels, pathologies = read_predictions(tmp_path / "external" / name / "predictions.csv")
        assert pathologies == ["Mass", "Nodule", "Pneumothorax"] and len(ids) == 1_962  # the model's order
        assert list(ids["image_id"]) == list(ref.google.loc[test, "Image Index"])
        source = ref.expert if name == "nih_expert" else ref.original
        for k, finding in enumerate(pathologies):
            np.testing.assert_array_equal(labels[:, k], source(finding)[test], err_msg=f"{name} {finding}")
        runs[name] = probs
        assert f"external_{name}/auroc/Nodule" in metrics
    np.testing.assert_allclose(runs["nih_expert"], runs["nih_expert_original"])  # same model, same images
