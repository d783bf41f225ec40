"""What every dataset must support, on each dataset's own fixture tree (issues 17/18): patient-level k-fold
(`data.folds=2 data.fold=0|1`) over the train+val pool with the test split untouched, and the pixel cache that
`python -m chestx.prepare` builds (DICOM included), through the real composed config. No training runs.

The datasets are the registry's (`chestx.data.datasets.registry`): each gets a tree here or a reason in NO_TREE.
The trees are the ones the per-dataset test files build (their `build_*` functions, imported, smaller here);
label files come from ../shared/data, so a dataset whose file is absent is skipped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate

from chestx.data.datasets.registry import registered

# Every registered dataset (chestx.data.datasets.registry) gets a fixture tree below, or says here why it has none.
NO_TREE: dict[str, str] = {
    "merge": "a union of other datasets, tested on nih_sample + chexpert trees in test_merge.py",
    "nih_expert": "its rows are NIH images named by Google's file: needs NIH's full label file and those images "
                  "(test_nih_expert.py reads the real files)",
}
DATASETS = tuple(name for name in registered() if name not in NO_TREE)


def test_every_registered_dataset_has_a_tree_or_a_reason() -> None:
    assert set(NO_TREE) <= set(registered()), f"NO_TREE names datasets that are not registered: {set(NO_TREE)}"
    assert DATASETS and set(DATASETS) | set(NO_TREE) == set(registered())


def _shared_file(shared_data: Path, relative: str) -> Path:
    path = shared_data / relative
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def _build(name: str, dest: Path, shared_data: Path, request: pytest.FixtureRequest) -> list[str]:
    """Write `name`'s fixture tree under `dest`; returns the overrides that point its data config at it."""
    if name == "nih":
        return ["data=nih_sample"]  # the 621 real NIH images embedded in the repository
    if name == "chexpert":
        return ["data=chexpert", f"data.root={request.getfixturevalue('chexpert_tree')}"]
    if name == "openi":
        from test_openi import REPORTS, build_openi_tree

        openi = _shared_file(shared_data, f"openi/{REPORTS}").parent
        build_openi_tree(openi, dest, request.getfixturevalue("sample_root"), n_reports=40)
        return ["data=openi", f"data.root={dest}"]
    if name == "csv":
        from test_csv_dataset import _cli_options, build_user_folder

        build_user_folder(dest, n=45)
        return ["data=csv", *_cli_options(dest)]
    if name == "mimic_cxr":
        from test_mimic import build_mimic_tree

        build_mimic_tree(dest, n_subjects=12)
        return ["data=mimic_cxr", f"data.root={dest}"]
    if name == "padchest":
        from test_padchest import PADCHEST_FILE, build_padchest_tree

        build_padchest_tree(_shared_file(shared_data, f"padchest/{PADCHEST_FILE}").parent, dest, n=48)
        return ["data=padchest", f"data.root={dest}"]
    if name == "vindr_cxr":
        from test_vindr import KAGGLE_FILE, build_physionet_tree

        raw = pd.read_csv(_shared_file(shared_data, f"vindr/{KAGGLE_FILE}"), dtype={"rad_id": str})
        build_physionet_tree(raw, dest, n_train=24, n_test=8)
        return ["data=vindr_cxr", f"data.root={dest}", "data.val_fraction=0.2"]
    if name == "rsna_pneumonia":
        from test_rsna import HEADERS_GZ, LABELS_ZIP, build_rsna_tree

        dump = pd.read_csv(_shared_file(shared_data, HEADERS_GZ), dtype=str).set_index("PatientID")
        build_rsna_tree(_shared_file(shared_data, LABELS_ZIP), dump, dest, n_pos=10, n_neg=14)
        return ["data=rsna_pneumonia", f"data.root={dest}"]
    if name == "siim":
        from test_siim import SIIM_GZ, build_siim_tree

        raw = pd.read_csv(_shared_file(shared_data, SIIM_GZ), dtype=str)
        build_siim_tree(raw, dest, n_pos=10, n_neg=14)
        return ["data=siim", f"data.root={dest}"]
    raise ValueError(f"no fixture tree for data={name}: add one to _build, or say why in NO_TREE")


@pytest.fixture(scope="module")
def trees(shared_data: Path, tmp_path_factory, request: pytest.FixtureRequest) -> Callable[[str], list[str]]:
    """`trees(name)`: the overrides of `name`'s fixture tree, built once per module on first use."""
    built: dict[str, list[str]] = {}

    def get(name: str) -> list[str]:
        if name not in built:
            built[name] = _build(name, tmp_path_factory.mktemp(name), shared_data, request)
        return built[name]

    return get


def _ids(table, split: np.ndarray, *names: str) -> set[str]:
    return set(table.frame["image_id"].astype(str)[np.isin(split, names)])


@pytest.mark.parametrize("name", DATASETS)
def test_kfold_is_patient_disjoint_over_the_same_pool(name: str, trees, compose, tmp_path: Path) -> None:
    overrides = trees(name)
    base_table, base_split = instantiate(compose(overrides, tmp_path / "base").data).labels_only()
    pool, test = _ids(base_table, base_split, "train", "val"), _ids(base_table, base_split, "test")
    assert pool and test, f"data={name}: the fixture needs a train+val pool and a test split"
    validated: list[set[str]] = []
    for fold in (0, 1):
        cfg = compose([*overrides, "data.folds=2", f"data.fold={fold}"], tmp_path / f"fold{fold}")
        table, split = instantiate(cfg.data).labels_only()
        patients = table.frame["patient_id"].astype(str).to_numpy()
        train, val = set(patients[split == "train"]), set(patients[split == "val"])
        assert train and val and train.isdisjoint(val), f"data={name} fold {fold}: a patient in train and val"
        assert _ids(table, split, "train", "val") == pool, f"data={name} fold {fold}: not the train+val pool"
        assert _ids(table, split, "test") == test, f"data={name} fold {fold}: the test split changed"
        assert (table.frame.loc[split == "test", "fold"] == -1).all()
        validated.append(_ids(table, split, "val"))
    assert validated[0].isdisjoint(validated[1]) and validated[0] | validated[1] == pool, "each image validates once"


@pytest.mark.parametrize("name", DATASETS)
def test_prepare_builds_the_pixel_cache(name: str, trees, compose, tmp_path: Path) -> None:
    """`chestx.prepare`'s steps on its composed config (its main minus the backbone-size lookup, whose import of
    timm alone takes ~10 s): one cache of every image, equal to decoding each file (DICOM by data.dicom_window)."""
    from chestx.data.images.cache import CachedPixels, build_cache
    from chestx.data.images.read import load_grayscale, resize_square

    size = 24
    cfg = compose([*trees(name), f"data.image_size={size}", f"data.cache_dir={tmp_path / 'cache'}"], tmp_path,
                  config_name="prepare")
    data = instantiate(cfg.data)
    data.prepare()
    folder = build_cache(data.paths, data.image_size, data.cache_dir, data.root, dicom_window=data.dicom_window,
                         workers=1)
    assert [p for p in (tmp_path / "cache").iterdir() if p.is_dir()] == [folder]
    pixels = CachedPixels(folder)
    assert len(pixels) == len(data.paths) > 0 and pixels.array.shape == (len(data.paths), size, size)
    for i in sorted({0, len(data.paths) // 2, len(data.paths) - 1}):
        want = resize_square(load_grayscale(data.paths[i], dicom_window=data.dicom_window), size)
        np.testing.assert_array_equal(pixels(i), want, err_msg=f"data={name}: {data.paths[i]}")
    assert pixels.array.std() > 0, f"data={name}: the cache holds blank images"
    assert build_cache(data.paths, size, data.cache_dir, data.root, dicom_window=data.dicom_window) == folder


@pytest.mark.parametrize("old, new", [
    ("data.tasks=all", "data.findings"), ("data.pathologies=[Edema]", "data.findings"),
    ("data.labels=[Edema]", "data.findings"), ("data.batch_size=8", "loader.batch_size"),
    ("data.num_workers=2", "loader.num_workers")])
def test_renamed_keys_are_refused_naming_the_new_key(old: str, new: str, compose, tmp_path: Path) -> None:
    from chestx.data.errors import DataError

    cfg = compose([old], tmp_path)  # data=nih_sample: every dataset config shares conf/data_common.yaml
    with pytest.raises(Exception) as caught:
        instantiate(cfg.data)
    error = caught.value.__cause__ if caught.value.__cause__ is not None else caught.value
    assert isinstance(error, DataError) and f"{old.split('=')[0]}=" in str(error) and f"is now {new}" in str(error)


def test_loader_group_fills_the_datamodule(compose, tmp_path: Path) -> None:
    from chestx.data.loading.datamodule import ChestXDataModule

    cfg = compose(["loader.batch_size=4", "loader.eval_batch_size=null", "loader.num_workers=0",
                   "loader.pin_memory=false"], tmp_path)
    module = ChestXDataModule(instantiate(cfg.data), 32, loader=instantiate(cfg.loader))
    assert (module.batch_size, module.eval_batch_size, module.num_workers) == (4, 4, 0)


def test_one_name_everywhere() -> None:
    """Registry name = config name = run-folder name (from a config's _target_ or a checkpoint's class name); the
    names older run folders wrote (`chestx.data.datasets.vindr.VinDrData`, `VinDrData` -> `vindr`) read back."""
    from chestx.core.run_folder import dataset_name
    from chestx.data.datasets.vocabulary import DATASET_FINDINGS

    conf = Path(__file__).resolve().parents[3] / "conf" / "data"
    for name, info in registered().items():
        assert (conf / f"{name}.yaml").is_file(), f"dataset {name} has no conf/data/{name}.yaml"
        assert dataset_name(f"{info.cls.__module__}.{info.cls.__name__}") == name
        assert dataset_name(info.cls.__name__) == name and info.cls.name == name
    assert set(DATASET_FINDINGS) == {n for n, i in registered().items() if i.findings}
    for old, new in [("chestx.data.datasets.vindr.VinDrData", "vindr_cxr"), ("VinDrData", "vindr_cxr"),
                     ("chestx.data.datasets.mimic.MIMIC_CXRData", "mimic_cxr"), ("RSNAPneumoniaData", "rsna_pneumonia"),
                     ("chestx.data.datasets.csv_folder.CSVData", "csv"), ("NIHExpertData", "nih_expert")]:
        assert dataset_name(old) == new


def _regroup(overrides: list[str], name: str, prefix: str) -> list[str]:
    """The tree's `data=<name> data.<key>=...` overrides as keys of `<prefix>.<name>` (test_data / data.sources)."""
    return [f"{prefix}.{name}.{o.removeprefix('data.')}" for o in overrides if o.startswith("data.")]


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_is_a_test_set_and_a_merge_source(name: str, trees, compose, tmp_path: Path) -> None:
    """`test_data=[<name>]` and `data=merge sources=[<name>]` need no file in conf/test_data or conf/sources
    (chestx._hydra.register_dataset_groups): both read the dataset's own config, so they read the same rows."""
    overrides = trees(name)
    name = next(o.removeprefix("data=") for o in overrides if o.startswith("data="))  # nih: its tree is nih_sample
    own, own_split = instantiate(compose(overrides, tmp_path / "own").data).labels_only()
    cfg = compose(["test_data=[" + name + "]", *_regroup(overrides, name, "test_data")], tmp_path / "test_data")
    assert list(cfg.test_data) == [name]
    table, split = instantiate(cfg.test_data[name]).labels_only()
    pd.testing.assert_frame_equal(table.frame, own.frame)
    np.testing.assert_array_equal(split, own_split)
    cfg = compose(["data=merge", f"sources=[{name}]", *_regroup(overrides, name, "data.sources")], tmp_path / "merge")
    merged, _ = instantiate(cfg.data).labels_only()
    assert (merged.frame["source"] == name).sum() == len(own), f"sources=[{name}] lost rows"
    assert sorted(merged.frame["source_image_id"].astype(str)) == sorted(own.frame["image_id"].astype(str))


@pytest.mark.parametrize("name", DATASETS)
def test_label_files_and_images_are_declared_through_the_base_class(name: str, trees, compose,
                                                                    tmp_path: Path) -> None:
    """Each dataset declares its label file(s) (`label_files`) and its image finder (`images`), and writes no
    resolve_paths of its own: the file it reads is the first that `label_paths()` (what the model card digests)
    names, every named file exists, and the finder finds every image of its tree."""
    from chestx.data.datasets.base import ChestXData
    from chestx.data.datasets.image_finders import ByIndex, InFolders, UnderRoot

    data = instantiate(compose(trees(name), tmp_path).data)
    cls = type(data)
    assert cls.resolve_paths is ChestXData.resolve_paths, f"data={name}: resolve_paths is the base class's"
    assert isinstance(data.images, (UnderRoot, InFolders, ByIndex))
    table, _ = data.labels_only()
    files = data.label_paths()
    assert files and all(path.is_file() for path in files.values()), files
    assert data.label_path == next(iter(files.values())), f"data={name}: read {data.label_path}, declares {files}"
    paths, missing = data.resolve_paths(table)
    assert missing == [] and len(paths) == len(table) and all(p is not None and p.is_file() for p in paths)
