"""A run folder's config.yaml is a file someone may hand you: chestx.clinical instantiates its data node (to find the
test images), so what Hydra would call is decided on exactly the tree that is instantiated (chestx.core.handed_config).

Every payload here is a pickle in the run folder whose unpickling creates a marker file; `pandas.read_pickle` of it
is what each config tries to reach. The marker must never exist. The two bypasses of issue 25 (a `_target_` that
starts with `chestx.data.datasets.` but names pandas.read_pickle through a module attribute, and `root: ${payload}`
pointing at a top-level node) and their variants are each refused, naming the file, the key path and the target.
"""
from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path

import pytest
import yaml

from chestx.core.handed_config import UnsafeConfigError, handed_node, refusals
from chestx.data.datasets import dataset_targets

READ_PICKLE = "pandas.read_pickle"


class _Touch:
    """Unpickling this creates `marker` (builtins.open(marker, "w")): the payload's visible effect."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _payload(run: Path) -> tuple[dict, Path]:
    marker = run.parent / f"{run.name}.ran"
    (run / "payload.pkl").write_bytes(pickle.dumps(_Touch(marker)))
    return {"_target_": READ_PICKLE, "filepath_or_buffer": str(run / "payload.pkl")}, marker


def _variants(data: dict, call: dict) -> dict[str, tuple[dict, str, str]]:
    """name -> (whole config.yaml, the key path named, the target named) of each way to reach `call`."""
    prefix = dict(call, _target_="chestx.data.datasets.csv.pd.read_pickle")
    return {
        # issue 25, bypass 1: a prefix of chestx's dataset modules, then an attribute path to pandas
        "prefix": ({"data": prefix}, "data._target_", "chestx.data.datasets.csv.pd.read_pickle"),
        # issue 25, bypass 2: an interpolation to a top-level node that the unresolved check never saw
        "interpolation": ({"payload": call, "data": {**data, "root": "${payload}"}}, "data.root", "${payload}"),
        "nested_node": ({"data": {**data, "root": {"inner": call}}}, "data.root.inner._target_", READ_PICKLE),
        "list_item": ({"data": {**data, "views": ["PA", call]}}, "data.views[1]._target_", READ_PICKLE),
        "args": ({"data": {**data, "_args_": [call]}}, "data._args_[0]._target_", READ_PICKLE),
        "partial": ({"data": {**data, "root": {**call, "_partial_": True}}}, "data.root._target_", READ_PICKLE),
        "merge_source": ({"data": {"_target_": "chestx.data.datasets.merge.MergedData", "sources": {"x": call}}},
                         "data.sources.x._target_", READ_PICKLE),
        "resolver_env": ({"data": {**data, "root": "${oc.env:HOME}"}}, "data.root", "${oc.env:HOME}"),
        "resolver_decode": ({"data": {**data, "root": "${oc.decode:'{_target_: pandas.read_pickle}'}"}},
                            "data.root", "oc.decode"),
        "escaped": ({"payload": call, "data": {**data, "root": "\\${payload}"}}, "data.root", "${payload}"),
        "key_interpolation": ({"payload": call, "data": {**data, "${payload}": 1}}, "data.${payload}", "${payload}"),
        "target_interpolation": ({"t": READ_PICKLE, "data": {**data, "_target_": "${t}"}}, "data._target_", "${t}"),
        "target_not_text": ({"data": {**data, "_target_": [READ_PICKLE]}}, "data._target_", READ_PICKLE),
    }


@pytest.fixture
def run(clinical_run_dir: Path, tmp_path: Path) -> Path:
    """A folder holding a copy of a real run's config.yaml (all `_test_image_paths` reads) to tamper with."""
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(clinical_run_dir / "config.yaml", out / "config.yaml")
    return out


def _data(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())["data"]


@pytest.mark.parametrize("name", ["prefix", "interpolation", "nested_node", "list_item", "args", "partial",
                                  "merge_source", "resolver_env", "resolver_decode", "escaped", "key_interpolation",
                                  "target_interpolation", "target_not_text"])
def test_handed_run_config_never_runs_the_payload(run: Path, name: str, caplog) -> None:
    from chestx.clinical import _test_image_paths

    call, marker = _payload(run)
    config, key, target = _variants(_data(run), call)[name]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with caplog.at_level(logging.WARNING):
        assert _test_image_paths(run) is None
    assert not marker.exists(), f"{name}: the payload ran"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert str(run / "config.yaml") in text and key in text and target in text, text
    assert "trust_checkpoint=true" in text


def test_python_tags_are_refused_before_anything_is_built(run: Path, caplog) -> None:
    """yaml.safe_load reads the file: a !!python tag is an error naming the file, never an object."""
    from chestx.clinical import _test_image_paths

    marker = run.parent / "tag.ran"
    (run / "config.yaml").write_text(f"data: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    with caplog.at_level(logging.WARNING):
        assert _test_image_paths(run) is None
    assert not marker.exists()
    assert str(run / "config.yaml") in caplog.text


@pytest.mark.parametrize("text", ["a: &a [x, x]\nb: &b [*a, *a, *a]\ndata: &d [*b, *b, *b]\n",
                                  "data: &d {_target_: chestx.data.datasets.nih.NIHData, root: [*d]}\n"])
def test_yaml_aliases_are_refused(tmp_path: Path, text: str) -> None:
    """Aliases expand exponentially (a 'billion laughs' file) or forever (a node inside itself): refused unread."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(UnsafeConfigError, match=r"config\.yaml: uses YAML aliases"):
        handed_node(path, "data", dataset_targets())


def test_oversized_config_is_not_read(tmp_path: Path) -> None:
    from chestx.core.handed_config import MAX_CONFIG_BYTES

    path = tmp_path / "config.yaml"
    path.write_text("data: {}\n" + "#" * MAX_CONFIG_BYTES)
    with pytest.raises(UnsafeConfigError, match=r"config\.yaml: 1,048,58\d bytes.*not read"):
        handed_node(path, "data", dataset_targets())


def test_trusted_run_config_is_called_and_says_what(run: Path, caplog) -> None:
    """trust_checkpoint=true: the refusals become a WARNING naming what is called, and it is called."""
    from chestx.clinical import _test_image_paths

    call, marker = _payload(run)
    config, _, _ = _variants(_data(run), call)["interpolation"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with caplog.at_level(logging.WARNING):
        assert _test_image_paths(run, trust=True) is None  # called: a DataFrame is no dataset, so no images
    assert marker.exists()
    assert "trust_checkpoint=true" in caplog.text and "data.root" in caplog.text


@pytest.mark.slow
def test_normal_run_folder_still_gives_heatmaps(clinical_run_dir: Path, tmp_path: Path) -> None:
    """A real run's own config.yaml passes unchanged: its test images are found and chestx.clinical draws heatmaps
    (the run folder is only read; the files go to `out`)."""
    import pandas as pd

    from chestx.clinical import _test_image_paths
    from chestx.runs.clinical import run_clinical

    run = clinical_run_dir
    assert refusals(_data(run), dataset_targets()) == []
    paths = _test_image_paths(run)
    assert paths and all(Path(p).is_file() for p in paths.values())
    out = tmp_path / "out"
    out.mkdir()
    run_clinical(run, out_dir=out, method="youden", cams=1, max_cams_per_image=1, image_paths=paths)
    drawn = pd.read_csv(out / "heatmaps" / "heatmaps.csv")
    assert len(drawn) >= 1 and all((out / "heatmaps" / f).is_file() for f in drawn["file"])


def test_refusal_names_every_offence_with_its_key_path() -> None:
    allowed = dataset_targets()
    nih = "chestx.data.datasets.nih.NIHData"
    assert refusals({"_target_": nih, "root": "/data/nih"}, allowed) == []
    found = refusals({"_target_": nih, "a": [{"_target_": "os.system"}], "_partial_": False,
                      "b": {"_recursive_": False}}, allowed, where="data")
    assert any(r.startswith("data.a[0]._target_") and "os.system" in r for r in found)
    assert any(r.startswith("data._partial_") for r in found) and any(r.startswith("data.b._recursive_") for r in found)
    for near in ("chestx.data.datasets.nih", "chestx.data.datasets.nih.NIHData.__init__", "chestx.data.datasets.",
                 " chestx.data.datasets.nih.NIHData", "chestx.data.datasets.nih.os.system"):
        assert refusals({"_target_": near}, allowed), near  # exact classes only, never a prefix


def test_handed_node_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data": {"_target_": "chestx.data.datasets.nih.NIHData", "root": "/x"}}))
    assert handed_node(path, "data", dataset_targets()) == {"_target_": "chestx.data.datasets.nih.NIHData",
                                                              "root": "/x"}
    path.write_text(yaml.safe_dump({"data": {"_target_": "shutil.copyfile"}}))
    with pytest.raises(UnsafeConfigError, match=r"config\.yaml.*data\._target_.*shutil\.copyfile"):
        handed_node(path, "data", dataset_targets())
    path.write_text(yaml.safe_dump({"model": {}}))
    with pytest.raises(UnsafeConfigError, match=r"config\.yaml.*no 'data' node"):
        handed_node(path, "data", dataset_targets())


def test_allow_list_is_exactly_chestx_dataset_classes(repo_root: Path) -> None:
    """dataset_targets() = the `_target_`s of conf/data/*.yaml = the ChestXData subclasses of chestx.data.datasets,
    each the exact dotted path of its class (so a new dataset, or a moved one, shows up here)."""
    import importlib
    import inspect
    import pkgutil

    import chestx.data.datasets as package
    from chestx.data.datasets.base import ChestXData

    in_conf = {yaml.safe_load(p.read_text()).get("_target_") for p in (repo_root / "conf" / "data").glob("*.yaml")}
    classes = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        classes |= {f"{cls.__module__}.{cls.__qualname__}" for _, cls in inspect.getmembers(module, inspect.isclass)
                    if issubclass(cls, ChestXData) and cls is not ChestXData and cls.__module__ == module.__name__}
    assert dataset_targets() == in_conf - {None} == classes
