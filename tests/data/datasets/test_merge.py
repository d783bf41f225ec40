"""data=merge over real-format data: the embedded NIH sample and CheXpert's real label files (small JPEGs at their
paths). The union of findings under the vocabulary's names, masking of what a source does not label, per-source
splits, and a real training run scored on each source's own test split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate
from sklearn.metrics import roc_auc_score

from chestx.data.labels.table import CHEXPERT_PATHOLOGIES, NIH_PATHOLOGIES, DataError

MERGE = ["data=merge", "sources=[nih_sample,chexpert]", "data.sources.chexpert.findings=all"]


@pytest.fixture()
def merged(compose, chexpert_tree: Path, tmp_path: Path):
    cfg = compose([*MERGE, f"data.sources.chexpert.root={chexpert_tree}"], tmp_path)
    return instantiate(cfg.data), cfg


def test_union_of_findings_with_masking_and_source_splits(merged) -> None:
    data, _ = merged
    table, split = data.labels_only()
    nih, chexpert = data.sources["nih_sample"], data.sources["chexpert"]
    nih_table, nih_split = nih.labels_only()
    chx_table, chx_split = chexpert.labels_only()
    assert len(table) == len(nih_table) + len(chx_table)
    expected = ["Pleural Effusion" if p == "Effusion" else "Pleural Thickening" if p == "Pleural_Thickening" else p
                for p in NIH_PATHOLOGIES]
    expected += ["No Finding (chexpert)"] + [p for p in CHEXPERT_PATHOLOGIES[1:] if p not in expected]
    assert table.pathologies == expected
    rows = table.frame["source"].to_numpy()
    for name, own, own_split in (("nih_sample", nih_table, nih_split), ("chexpert", chx_table, chx_split)):
        mine = rows == name
        assert (table.frame.loc[mine, "image_id"] == name + "/" + own.frame["image_id"].astype(str).to_numpy()).all()
        assert (split[mine] == own_split).all(), "each source keeps its own patient-level split"
        for k, finding in enumerate(table.pathologies):  # a column the source labels is its column, else unknown
            column = {"Pleural Effusion": "Effusion", "Pleural Thickening": "Pleural_Thickening"}.get(finding, finding) \
                if name == "nih_sample" else ("No Finding" if finding == "No Finding (chexpert)" else finding)
            if column in own.pathologies:
                np.testing.assert_array_equal(table.labels[mine, k], own.labels[:, own.pathologies.index(column)])
            else:
                assert np.isnan(table.labels[mine, k]).all(), (name, finding)
    patients = table.frame["patient_id"]
    assert set(patients[rows == "nih_sample"]).isdisjoint(patients[rows == "chexpert"])
    assert data.multiclass == [False] * len(expected)


def test_no_sources_and_multiclass_source_stop_clearly(compose, chexpert_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"data=merge has no sources: list them with sources="):
        instantiate(compose(["data=merge"], tmp_path).data)
    cfg = compose([*MERGE, f"data.sources.chexpert.root={chexpert_tree}", "data.sources.chexpert.uncertainty=multiclass"],
                  tmp_path)
    with pytest.raises(DataError, match="sources.chexpert uses data.uncertainty=multiclass"):
        instantiate(cfg.data).labels_only()


@pytest.mark.slow
def test_training_on_the_merge_scores_each_source_on_its_own_findings(compose, tiny_overrides, chexpert_tree: Path,
                                                                      tmp_path: Path) -> None:
    from chestx.comparison import build_report
    from chestx.train import train

    metrics = train(compose([*tiny_overrides, *MERGE, f"data.sources.chexpert.root={chexpert_tree}",
                             "model=timm", "model.name=test_resnet", "data.image_size=32", "subgroups=none"], tmp_path))
    assert metrics["status"] == "ok" and metrics["sources"] == ["chexpert", "nih_sample"]
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    nih_rows = predictions["image_id"].str.startswith("nih_sample/")
    assert predictions.loc[nih_rows, "label_Lung Opacity"].isna().all(), "a finding NIH does not label is unknown"
    assert predictions.loc[~nih_rows, "label_Mass"].isna().all()
    auroc = pd.read_csv(tmp_path / "auroc.csv").set_index("pathology")["auroc"]
    known = predictions["label_Mass"].notna()
    assert auroc["Mass"] == pytest.approx(roc_auc_score(predictions.loc[known, "label_Mass"],
                                                        predictions.loc[known, "prob_Mass"]), abs=1e-6)
    for source, findings in (("nih_sample", 14), ("chexpert", 13)):  # each source on its own findings (not No Finding)
        own = pd.read_csv(tmp_path / "external" / source / "predictions.csv")
        assert len([c for c in own.columns if c.startswith("prob_")]) == findings
        ids = set(own["image_id"].astype(str))
        merged_ids = {i.split("/", 1)[1] for i in predictions["image_id"][predictions["image_id"].str.startswith(source)]}
        assert ids == merged_ids, "the source's test split"
    report = build_report([tmp_path], tmp_path / "report", n_resamples=20)
    matrix = pd.read_csv(report.out / "cross_dataset.csv")
    assert set(matrix["test_data"]) == {"nih_sample", "chexpert"} and matrix["internal"].all()


# ------------------------------------------------------------------------------------------ sources of one image pool
def test_docstring_command_composes(compose, tmp_path: Path) -> None:
    """The module docstring's command line (its overrides) composes as written."""
    from chestx.data.datasets import merge

    line = next(x for x in merge.__doc__.splitlines() if "python -m chestx.train data=merge" in x)
    overrides = [o.strip("'") for o in line.split("(")[0].split()[3:]]
    assert overrides[-1].startswith("data.sources.chexpert.root=")
    cfg = compose(overrides, tmp_path)
    assert cfg.data.sources.chexpert.root == overrides[-1].split("=", 1)[1]


def test_image_pools() -> None:
    from chestx.data.datasets.base import ChestXData
    from chestx.data.datasets.merge import NIH_CXR14, NIH_CXR14_ANONYMISED, ImagePool, image_pool
    from chestx.data.datasets.nih import NIHData
    from chestx.data.datasets.nih_expert import NIHExpertData
    from chestx.data.datasets.rsna_pneumonia import RSNAPneumoniaData
    from chestx.data.datasets.siim import SIIMData
    from chestx.data.datasets.chexpert import CheXpertData

    def pool(cls: type) -> ImagePool | None:
        return image_pool(cls.__new__(cls))

    assert pool(NIHData) == pool(NIHExpertData) == NIH_CXR14
    assert pool(RSNAPneumoniaData) == pool(SIIMData) == NIH_CXR14_ANONYMISED
    assert pool(CheXpertData) is None

    class Declared(ChestXData):
        image_pool = ImagePool("Somewhere", "somewhere", real_ids=True)

    assert pool(Declared) == Declared.image_pool


def _nih_pair(nih_dir: Path, sample_root: Path) -> list[str]:
    """nih (official split: NIH's lists) over the sample's 621 rows, and nih_expert (Google's val / test sets)."""
    return ["data=merge", "sources=[nih,nih_expert]", f"data.sources.nih.root={nih_dir}",
            f"data.sources.nih.csv={sample_root / 'Data_Entry_sample.csv'}", f"data.sources.nih_expert.root={nih_dir}"]


def _split_of_patient(table, split: np.ndarray) -> pd.Series:
    return pd.Series(split, index=table.frame["patient_id"].astype(str).to_numpy()).groupby(level=0).first()


def test_nih_patient_in_two_splits_stops_and_folds_settle_train_vs_val(compose, nih_dir: Path, sample_root: Path,
                                                                       tmp_path: Path) -> None:
    data = instantiate(compose(_nih_pair(nih_dir, sample_root), tmp_path).data)
    nih, expert = data.sources["nih"].labels_only(), data.sources["nih_expert"].labels_only()
    a, b = _split_of_patient(*nih), _split_of_patient(*expert)
    shared = a.index.intersection(b.index)
    conflicts = shared[(a[shared] != b[shared]).to_numpy()]
    assert len(conflicts) > 0 and set(a[conflicts]) | set(b[conflicts]) <= {"train", "val"}, \
        "NIH's official test list holds Google's test patients: only train vs val can disagree"
    with pytest.raises(DataError, match=rf"{len(conflicts)} NIH ChestX-ray14 patients are in different splits in "
                                        r"sources \['nih', 'nih_expert'\] \(e\.g\. nih-cxr14/\d+: nih (train|val), "
                                        r"nih_expert (train|val).*Fix: add data\.folds=K"):
        data.labels_only()

    folds = instantiate(compose([*_nih_pair(nih_dir, sample_root), "data.folds=2", "data.fold=0"], tmp_path).data)
    table, split = folds.labels_only()  # k-fold over the union: one patient id across both sources, one fold
    rows = table.frame["source"].to_numpy()
    assert table.frame["patient_id"].str.startswith("nih-cxr14/").all()
    pooled = _split_of_patient(table, split)
    for patient in shared:
        assert len(set(split[(table.frame["patient_id"] == f"nih-cxr14/{patient}").to_numpy()])) == 1
    assert (pooled[[f"nih-cxr14/{p}" for p in b.index[b == "test"]]] == "test").all(), "test untouched"
    assert set(table.frame.loc[rows == "nih", "source_image_id"]) == set(nih[0].frame["image_id"])


def test_nih_sample_and_nih_expert_test_vs_train_cannot_be_settled_by_folds(compose, nih_dir: Path,
                                                                             tmp_path: Path) -> None:
    overrides = ["data=merge", "sources=[nih_sample,nih_expert]", f"data.sources.nih_expert.root={nih_dir}",
                 "data.folds=2", "data.fold=0"]
    with pytest.raises(DataError, match=r"patients are in different splits .*nih_sample (train|val|test).* Fix: give "
                                        r"the sources split rules that agree .*test_data=\[<name>\]") as error:
        instantiate(compose(overrides, tmp_path).data).labels_only()
    assert "data.folds=K" not in str(error.value), "folds cannot settle a test patient"


def test_anonymised_nih_images_warn(compose, shared_data: Path, tmp_path: Path, caplog) -> None:
    rsna, siim = shared_data / "rsna", shared_data / "siim"
    if not rsna.is_dir() or not siim.is_dir():
        pytest.skip("RSNA / SIIM label files not in shared/data")
    cfg = compose(["data=merge", "sources=[nih_sample,rsna_pneumonia,siim]", f"data.sources.rsna_pneumonia.root={rsna}",
                   f"data.sources.siim.root={siim}"], tmp_path)
    with caplog.at_level("WARNING", logger="chestx.data.datasets.merge"):
        table, _ = instantiate(cfg.data).labels_only()
    warned = [r.getMessage() for r in caplog.records if "anonymised patient ids" in r.getMessage()]
    assert len(warned) == 1 and "['rsna_pneumonia', 'siim']" in warned[0] and "NIH ChestX-ray14" in warned[0]
    patients, sources = table.frame["patient_id"], table.frame["source"]
    assert patients[sources == "nih_sample"].str.startswith("nih-cxr14/").all()
    assert patients[sources == "rsna_pneumonia"].str.startswith("rsna_pneumonia/").all()
    assert patients[sources == "siim"].str.startswith("siim/").all()
