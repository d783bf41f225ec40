"""A checkpoint someone hands you must not run code (issue 20): every reader refuses a payload, chestx's own load.

The payload is what the issue tried: a real chestx checkpoint with one more entry whose `__reduce__` calls
`os.system("touch <marker>")`; loading it with torch.load(weights_only=False) runs the command (the trusted tests
prove it does), so a marker file that does not exist afterwards means nothing ran. The entry points are also run as
a user runs them (`python -m chestx.<name> ...`), in one interpreter for all of them (runpy, as `python -m` does),
to pay the torch / Lightning import once.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
from enum import IntEnum
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from chestx.core.checkpoint_io import (
    CheckpointError, lightning_weights_only, load_checkpoint, plain, trust_setting, unsafe_entries,
)
from chestx.core.run_folder import read_predictions

TINY_RUN = ("data.image_size=96", "loader.num_workers=0", "loader.batch_size=8", "loader.eval_batch_size=64",
            "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.accelerator=cpu", "logger=none",
            "model=resnet18")  # as conftest's clinical_run_dir, whose checkpoint the payloads carry


class Payload:
    """Unpickled, it runs `touch <marker>` through os.system (the attack of the issue)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def _with_payload(source: Path, dest: Path, marker: Path, **save_kwargs) -> Path:
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    checkpoint["notes"] = Payload(marker)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, dest, **save_kwargs)
    return dest


def _assert_refusal(message: str, path: Path) -> None:
    assert str(path) in message and "refused" in message and "could run code" in message, message
    assert "trust_checkpoint=true" in message, message


@pytest.fixture(scope="module")
def best(clinical_run_dir: Path) -> Path:
    return clinical_run_dir / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def payload(best: Path, tmp_path_factory) -> tuple[Path, Path]:
    """(payload checkpoint inside a copy of the run folder, its marker file)."""
    folder = tmp_path_factory.mktemp("payload")
    marker = folder / "payload_ran"
    return _with_payload(best, folder / "run" / "checkpoints" / "best.ckpt", marker), marker


# ------------------------------------------------------------------ chestx's own checkpoints
def test_chestx_checkpoints_hold_only_what_weights_only_loads(clinical_run_dir: Path, best: Path) -> None:
    for path in (best, clinical_run_dir / "checkpoints" / "last.ckpt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert {"state_dict", "loops", "callbacks", "optimizer_states", "hyper_parameters", "chestx"} <= set(checkpoint)
        assert unsafe_entries(checkpoint) == []
    metrics = json.loads((clinical_run_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] == torch.load(best, weights_only=True)["epoch"]


def test_run_checkpoint_predicts_the_runs_own_probabilities(clinical_run_dir: Path, best: Path,
                                                             sample_root: Path) -> None:
    """Loaded the safe way, the model gives the test probabilities training wrote into predictions.csv."""
    from chestx.inference.predictor import load_for_inference, load_images

    ids, probs, _, names = read_predictions(clinical_run_dir / "predictions.csv")
    predictor = load_for_inference(best)
    assert predictor.pathologies == names
    rows = np.arange(0, len(ids), max(1, len(ids) // 12))  # a dozen test images
    _, images, failed = load_images([sample_root / "images" / str(i) for i in ids["image_id"].iloc[rows]])
    assert not failed
    np.testing.assert_allclose(predictor.probabilities(predictor.preprocess(images)), probs[rows], atol=1e-5)


# ------------------------------------------------------------------ the payload, in process
@pytest.mark.parametrize("reader", ["load_checkpoint", "load_checkpoint_mmap", "load_for_inference",
                                    "checkpoint_epoch"])
def test_payload_refused_before_it_runs(payload: tuple[Path, Path], reader: str) -> None:
    from chestx.inference.predictor import load_for_inference
    from chestx.models.module import checkpoint_epoch

    path, marker = payload
    call = {"load_checkpoint": lambda: load_checkpoint(path),
            "load_checkpoint_mmap": lambda: load_checkpoint(path, mmap=True),
            "load_for_inference": lambda: load_for_inference(path),
            "checkpoint_epoch": lambda: checkpoint_epoch(path)}[reader]
    with pytest.raises(CheckpointError) as err:
        call()
    _assert_refusal(str(err.value), path)
    assert "posix.system" in str(err.value)  # the global it wanted, found by torch's scan without running it
    assert not marker.exists()


def test_trusted_payload_is_loaded_and_logged(best: Path, tmp_path: Path, caplog) -> None:
    """trust_checkpoint=true: the file is loaded with weights_only=False, so its code runs (the payload is real),
    with a WARNING naming the file; the model is the run's."""
    from chestx.inference.predictor import load_for_inference

    marker = tmp_path / "ran"
    path = _with_payload(best, tmp_path / "model.ckpt", marker)
    with caplog.at_level(logging.WARNING, logger="chestx.core.checkpoint_io"):
        predictor = load_for_inference(path, trust=True)
    assert marker.exists()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(path) in m and "trust_checkpoint=true" in m and "posix.system" in m for m in warned), warned
    reference = load_for_inference(best)
    x = torch.rand(2, 3, predictor.image_size, predictor.image_size)
    np.testing.assert_array_equal(predictor.probabilities(x), reference.probabilities(x))


def test_lightning_gets_weights_only_unless_trusted(payload: tuple[Path, Path], best: Path, caplog) -> None:
    path, marker = payload
    assert lightning_weights_only(path, trust=False) is True
    assert lightning_weights_only(best, trust=True) is True  # plain file: the opt-in is not needed
    with caplog.at_level(logging.WARNING, logger="chestx.core.checkpoint_io"):
        assert lightning_weights_only(path, trust=True) is False
    assert any(str(path) in r.getMessage() and "posix.system" in r.getMessage() for r in caplog.records)
    assert not marker.exists()  # scanned, not run


def test_model_weights_file_with_a_payload_is_refused(tmp_path: Path) -> None:
    """`model.weights=<file>`: timm reads it weights_only; chestx names the file."""
    from chestx.models.backbones import create_backbone

    marker = tmp_path / "ran"
    weights = tmp_path / "resnet18.pth"
    state = create_backbone("resnet18", 14).state_dict()
    torch.save({**state, "notes": Payload(marker)}, weights)
    with pytest.raises(ValueError, match="weights-only") as err:
        create_backbone("resnet18", 14, weights=weights)
    assert str(weights) in str(err.value)
    assert not marker.exists()


# ------------------------------------------------------------------ other files and formats
def test_legacy_format_loads_and_its_payload_is_refused(tmp_path: Path) -> None:
    """Files written by torch.save(_use_new_zipfile_serialization=False) (older tools): read the same way."""
    from chestx.models.module import checkpoint_epoch

    plain_file = tmp_path / "plain_legacy.ckpt"
    torch.save({"epoch": 3, "state_dict": {"net.w": torch.ones(2)}}, plain_file, _use_new_zipfile_serialization=False)
    assert checkpoint_epoch(plain_file) == 3  # mmap is not possible there: read whole
    marker = tmp_path / "ran"
    evil = tmp_path / "evil_legacy.ckpt"
    torch.save({"epoch": 3, "notes": Payload(marker)}, evil, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(evil)
    _assert_refusal(str(err.value), evil)
    assert "posix.system" in str(err.value)
    evil4 = tmp_path / "evil_protocol4.ckpt"  # an opcode torch's scan does not know: still refused
    torch.save({"notes": Payload(marker)}, evil4, pickle_protocol=4)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(evil4)
    _assert_refusal(str(err.value), evil4)
    assert not marker.exists()


def test_unusable_files_are_named(best: Path, clinical_run_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    truncated = tmp_path / "truncated.ckpt"
    with open(best, "rb") as f:
        truncated.write_bytes(f.read(1_000_000))
    cases = {tmp_path / "missing.ckpt": "does not exist", tmp_path: "is not a file", empty: "is empty",
             truncated: "not a readable torch checkpoint", clinical_run_dir / "config.yaml": "not a readable torch"}
    for path, reason in cases.items():
        with pytest.raises(CheckpointError, match=reason) as err:
            load_checkpoint(path)
        assert str(path) in str(err.value)


@pytest.mark.parametrize("value, expected", [(None, False), (False, False), (True, True)])
def test_trust_setting_accepts_booleans(value, expected: bool) -> None:
    assert trust_setting(value) is expected


@pytest.mark.parametrize("value", ["no", "yes", "true", 1, 0])
def test_trust_setting_refuses_anything_else(value) -> None:
    with pytest.raises(ValueError, match="trust_checkpoint=true"):
        trust_setting(value)


# ------------------------------------------------------------------ what chestx writes
class Level(IntEnum):
    HIGH = 2


def test_plain_turns_config_and_numpy_values_into_weights_only_types(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    info = {"model": OmegaConf.create({"name": "resnet18", "in_chans": 3}), "mean": (np.float32(0.5),) * 3,
            "image_size": np.int64(96), "pathologies": OmegaConf.create(["Edema"]), "root": tmp_path,
            "flags": np.array([True, False]), "level": Level.HIGH, "std": None}
    out = plain(info)
    assert out == {"model": {"name": "resnet18", "in_chans": 3}, "mean": (0.5, 0.5, 0.5), "image_size": 96,
                   "pathologies": ["Edema"], "root": str(tmp_path), "flags": [True, False], "level": 2, "std": None}
    assert type(out["level"]) is int and type(out["mean"][0]) is float
    torch.save(out, tmp_path / "info.pt")
    assert torch.load(tmp_path / "info.pt", weights_only=True) == out
    with pytest.raises(TypeError, match=r"value\['bad'\]\[0\] is a builtins.object"):
        plain({"bad": [object()]})


def test_module_saves_plain_info_and_refuses_an_unloadable_checkpoint() -> None:
    from chestx.models.module import ChestXModule

    module = SimpleNamespace(checkpoint_info={"mean": (np.float32(0.25),), "seed": np.int64(0)})
    checkpoint = {"state_dict": {"net.w": torch.zeros(2)}, "callbacks": {"Ok": {"best": torch.tensor(1.0)}}}
    ChestXModule.on_save_checkpoint(module, checkpoint)
    assert checkpoint["chestx"] == {"mean": (0.25,), "seed": 0} and unsafe_entries(checkpoint) == []
    checkpoint["callbacks"]["Bad"] = {"scores": np.zeros(3)}  # a callback state torch's weights_only refuses
    with pytest.raises(CheckpointError, match=r"checkpoint\['callbacks'\]\['Bad'\]\['scores'\]: numpy.ndarray"):
        ChestXModule.on_save_checkpoint(module, checkpoint)


def test_run_config_with_a_foreign_target_is_not_called(clinical_run_dir: Path, tmp_path: Path, caplog) -> None:
    """chestx.clinical instantiates a run folder's data config to find its images: only chestx dataset classes.
    (Hydra 1.3.8 blocks some targets itself, e.g. subprocess.run, "best-effort, not a complete security boundary"
    in its own words; shutil.copyfile, which could overwrite ~/.bashrc with a file of the run folder, it lets through.)"""
    from chestx.clinical import _test_image_paths

    marker = tmp_path / "ran"
    run = tmp_path / "run"
    run.mkdir()
    config = (clinical_run_dir / "config.yaml").read_text()
    evil = {"data": {"_target_": "shutil.copyfile", "src": str(run / "config.yaml"), "dst": str(marker)}}
    (run / "config.yaml").write_text(json.dumps(evil))  # YAML is a superset of JSON
    with caplog.at_level(logging.WARNING, logger="chestx.clinical"):
        assert _test_image_paths(run) is None
    assert not marker.exists()
    assert any("shutil.copyfile" in r.getMessage() and "trust_checkpoint=true" in r.getMessage() for r in caplog.records)
    assert _test_image_paths(run, trust=True) is None  # trusted: called (it is no dataset, so no images after all)
    assert marker.exists()
    (run / "config.yaml").write_text(config)  # the run's own config: a chestx dataset, its test images found
    assert len(_test_image_paths(run)) > 0


# ------------------------------------------------------------------ train (Lightning loads the file), in process
@pytest.mark.slow
@pytest.mark.parametrize("fit", [False, True], ids=["fit=false", "resume"])
def test_train_refuses_a_payload_ckpt_path(payload: tuple[Path, Path], compose, tmp_path: Path, fit: bool) -> None:
    from chestx.train import train

    path, marker = payload
    cfg = compose([*TINY_RUN, "clinical=none", "subgroups=none", f"ckpt_path={path}", f"fit={str(fit).lower()}"],
                  tmp_path)
    with pytest.raises(CheckpointError) as err:
        train(cfg)
    _assert_refusal(str(err.value), path)
    assert not marker.exists()


@pytest.mark.slow
def test_rescoring_the_runs_checkpoint_gives_the_same_predictions(clinical_run_dir: Path, best: Path, compose,
                                                                   tmp_path: Path) -> None:
    """fit=false ckpt_path=<best.ckpt>: Lightning reads it weights_only and scores the test split as training did."""
    from chestx.train import train

    metrics = train(compose([*TINY_RUN, "clinical=none", "subgroups=none", f"ckpt_path={best}", "fit=false"],
                            tmp_path))
    before = read_predictions(clinical_run_dir / "predictions.csv")
    after = read_predictions(tmp_path / "predictions.csv")
    assert after[0]["image_id"].tolist() == before[0]["image_id"].tolist()
    np.testing.assert_allclose(after[1], before[1], atol=1e-6)
    original = json.loads((clinical_run_dir / "metrics.json").read_text())
    assert metrics["test/auroc_mean"] == pytest.approx(original["test/auroc_mean"], abs=1e-6)
    assert metrics["best_epoch"] == original["best_epoch"]


@pytest.mark.slow
def test_train_with_trust_loads_the_payload_and_says_so(best: Path, compose, tmp_path: Path, caplog) -> None:
    from chestx.train import train

    marker = tmp_path / "ran"
    path = _with_payload(best, tmp_path / "given" / "model.ckpt", marker)
    cfg = compose([*TINY_RUN, "clinical=none", "subgroups=none", f"ckpt_path={path}", "fit=false",
                   "trust_checkpoint=true"], tmp_path / "out")
    with caplog.at_level(logging.WARNING, logger="chestx.core.checkpoint_io"):
        metrics = train(cfg)
    assert marker.exists() and metrics["status"] == "ok"
    assert any(str(path) in r.getMessage() and "weights_only=False" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ every entry point, as a user runs it
_DRIVER = """
import json, os, runpy, sys
from hydra.core.global_hydra import GlobalHydra
commands, marker = json.loads(sys.argv[1]), sys.argv[2]
for module, args in commands:
    print("\\n=== " + module + " " + " ".join(args), flush=True)
    sys.argv, code = [module, *args], 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    GlobalHydra.instance().clear()
    print("=== exit %s marker %s" % (code, os.path.exists(marker)), flush=True)
"""


@pytest.mark.slow
def test_every_entry_point_refuses_the_payload(payload: tuple[Path, Path], clinical_run_dir: Path, sample_root: Path,
                                               repo_root: Path, tmp_path: Path) -> None:
    """predict, evaluate ckpt=, export, clinical (the run folder's checkpoint), train fit=false and resume: the
    payload never runs and each names the file and the opt-in; then predict with trust_checkpoint=true runs it."""
    path, marker = payload
    run = path.parent.parent  # the payload's run folder: the real run's files, the payload as its best.ckpt
    for item in clinical_run_dir.iterdir():
        if item.is_file():
            shutil.copy(item, run / item.name)
    image = sorted((sample_root / "images").glob("*.png"))[0]
    train_args = [*TINY_RUN, "clinical=none", "subgroups=none", f"ckpt_path={path}"]
    commands = [
        ("chestx.predict", [f"ckpt={path}", f"inputs={image}", f"hydra.run.dir={tmp_path / 'predict'}"]),
        ("chestx.evaluate", [f"ckpt={path}", f"hydra.run.dir={tmp_path / 'evaluate'}"]),
        ("chestx.export", [f"ckpt={path}", f"hydra.run.dir={tmp_path / 'export'}"]),
        ("chestx.clinical", [f"run={run}", "cams=2"]),
        ("chestx.train", [*train_args, "fit=false", f"hydra.run.dir={tmp_path / 'rescore'}"]),
        ("chestx.train", [*train_args, f"hydra.run.dir={tmp_path / 'resume'}"]),
        ("chestx.predict", [f"ckpt={path}", f"inputs={image}", f"hydra.run.dir={tmp_path / 'trusted'}",
                            "trust_checkpoint=true"]),
    ]
    done = subprocess.run([sys.executable, "-u", "-c", _DRIVER, json.dumps(commands), str(marker)], cwd=repo_root,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    parts = done.stdout.split("\n=== chestx.")[1:]  # one per command: its output, then "=== exit <code> marker <bool>"
    assert len(parts) == len(commands), done.stdout[-3000:]
    *refused, trusted = [(module, text, text.rstrip().splitlines()[-1]) for (module, _), text in zip(commands, parts)]
    for module, text, last in refused:
        assert last.startswith("=== exit"), text[-2000:]
        assert last.endswith("marker False"), f"{module} ran the payload:\n{text[-3000:]}"
        assert str(path) in text and "refused" in text and "trust_checkpoint=true" in text, text[-3000:]
        # clinical finishes its tables and only skips the heatmaps; the others stop with the error
        assert last.startswith("=== exit 0" if module == "chestx.clinical" else "=== exit 1"), text[-3000:]
    metrics = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and str(path) in metrics["error"]
    _, text, last = trusted
    assert last == "=== exit 0 marker True", text[-3000:]  # the opt-in: loaded, so the payload ran
    assert "trust_checkpoint=true: loading" in text and str(path) in text
