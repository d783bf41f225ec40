"""chestx.train end to end on the embedded real NIH sample: files written, numbers consistent, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from chestx._hydra import CONFIG_DIR
from chestx.data.labels.table import DataError
from chestx.models.module import NaNLossError
from chestx.core.run_folder import read_predictions
from chestx.train import train

# every model config (conf/model/*.yaml): the choices an unknown model= must list
MODEL_CONFIGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_run(compose, tiny_overrides, tmp_path_factory) -> tuple[Path, dict]:
    """One real (tiny) training run shared by the checks below."""
    out = tmp_path_factory.mktemp("run")
    cfg = compose([*tiny_overrides, "model=resnet18", "trainer.max_epochs=2"], out)
    metrics = train(cfg)
    return out, metrics


def test_run_writes_every_file(tiny_run) -> None:
    out, metrics = tiny_run
    for name in ["config.yaml", "split.csv", "predictions.csv", "predictions_val.csv", "auroc.csv", "metrics.json"]:
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "best.ckpt").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["status"] == "ok" and saved["model"] == "resnet18"


def _conv_linear_macs(net: torch.nn.Module, size: int) -> int:
    """Multiply-accumulates of the convolutions and linear layers of one forward pass, from their shapes."""
    macs = []

    def count(module, inputs, output) -> None:
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            macs.append(output.numel() * (module.in_channels // module.groups) * kh * kw)
        else:
            macs.append(output.numel() * module.in_features)

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return sum(macs)


def test_cost_figures_are_consistent_with_the_run(tiny_run) -> None:
    """metrics.json's cost columns against the network and the run: counted independently or bounded by
    the run's own timings (no wall-clock threshold)."""
    from chestx.models import create_backbone
    from chestx.models.callbacks import lifetime_peak_rss_mb

    out, _ = tiny_run
    saved = json.loads((out / "metrics.json").read_text())
    net = create_backbone("resnet18", 14)  # what model=resnet18 builds for the 14 NIH pathologies
    assert saved["params"] == sum(p.numel() for p in net.parameters()) == 11_183_694
    assert saved["image_size"] == 64 and saved["macs"] == _conv_linear_macs(net, 64)
    # 2 epochs of 2 training batches of 8; the first batch of each epoch is warm-up and not timed
    assert saved["epochs"] == 2 and saved["fit_seconds"] <= saved["wall_time_s"]
    assert saved["train_images_per_s"] * saved["fit_seconds"] >= 2 * 8
    # the test split (eval batches of 64) is timed after fitting, its first batch is warm-up
    assert saved["infer_images_per_s"] * (saved["wall_time_s"] - saved["fit_seconds"]) >= saved["n_test"] - 64
    # the peak resident memory of the run holds at least the float32 weights, and this process's peak bounds it
    assert saved["params"] * 4 / 2**20 <= saved["peak_memory_mb"] <= lifetime_peak_rss_mb()
    # the best checkpoint is the one written at best_epoch, and it scores val/auroc_mean as metrics.json says
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert saved["best_epoch"] == best["epoch"] and saved["best_checkpoint"] == str(out / "checkpoints" / "best.ckpt")
    state = next(v for k, v in best["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert saved["monitor"] == "val/auroc_mean" and float(state["best_model_score"]) == pytest.approx(
        saved["val/auroc_mean"], abs=1e-6)


def test_split_is_patient_disjoint_and_covers_predictions(tiny_run) -> None:
    out, _ = tiny_run
    split = pd.read_csv(out / "split.csv", dtype=str)
    assert set(split["split"]) == {"train", "val", "test"}
    owners = split.groupby("patient_id")["split"].nunique()
    assert (owners == 1).all(), "a patient appears in two splits"
    ids, probs, labels, pathologies = read_predictions(out / "predictions.csv")
    test_ids = split.loc[split["split"] == "test", "image_id"]
    assert sorted(ids["image_id"]) == sorted(test_ids), "predictions.csv must hold every test image exactly once"
    assert len(pathologies) == 14 and np.all((probs >= 0) & (probs <= 1))


def test_saved_auroc_matches_sklearn_on_saved_predictions(tiny_run) -> None:
    out, metrics = tiny_run
    _, probs, labels, pathologies = read_predictions(out / "predictions.csv")
    table = pd.read_csv(out / "auroc.csv").set_index("pathology")
    aucs = []
    for k, name in enumerate(pathologies):
        seen = ~np.isnan(labels[:, k])
        y = labels[seen, k]
        if len(np.unique(y)) < 2:
            assert np.isnan(table.loc[name, "auroc"])
            continue
        expected = roc_auc_score(y, probs[seen, k])
        aucs.append(expected)
        assert table.loc[name, "auroc"] == pytest.approx(expected, abs=1e-5)
        assert metrics[f"test/auroc/{name}"] == pytest.approx(expected, abs=1e-5)
    assert metrics["test/auroc_mean"] == pytest.approx(np.mean(aucs), abs=1e-5)


def test_resume_from_last_checkpoint(compose, tiny_run, tiny_overrides) -> None:
    out, _ = tiny_run
    cfg = compose([*tiny_overrides, "model=resnet18", "trainer.max_epochs=3", "ckpt_path=last"], out)
    metrics = train(cfg)
    assert metrics["epochs"] == 3


def test_missing_root_names_the_key(compose, tmp_path: Path, tiny_overrides) -> None:
    cfg = compose([*tiny_overrides, "data=nih", f"data.root={tmp_path / 'nowhere'}"], tmp_path)
    with pytest.raises(DataError, match="data.root"):
        train(cfg)


def _partial_sample(sample_root: Path, tmp_path: Path, keep: int) -> Path:
    root = tmp_path / "sample"
    (root / "images").mkdir(parents=True)
    shutil.copy(sample_root / "Data_Entry_sample.csv", root)
    for path in sorted((sample_root / "images").glob("*.png"))[:keep]:
        shutil.copy(path, root / "images")
    return root


def test_missing_images_error_then_drop(compose, sample_root: Path, tmp_path: Path, tiny_overrides, caplog) -> None:
    root = _partial_sample(sample_root, tmp_path, keep=600)
    cfg = compose([*tiny_overrides, f"data.root={root}", "trainer.fast_dev_run=true"], tmp_path / "a")
    with pytest.raises(DataError, match=r"21 of 621 images .* data.missing_images=drop"):
        train(cfg)
    cfg = compose(
        [*tiny_overrides, f"data.root={root}", "data.missing_images=drop", "trainer.fast_dev_run=true"], tmp_path / "b"
    )
    with caplog.at_level("WARNING"):
        train(cfg)
    assert "Dropping 21 of 621 rows" in caplog.text
    assert len(pd.read_csv(tmp_path / "b" / "split.csv")) == 600


def test_truncated_image_names_its_path(compose, sample_root: Path, tmp_path: Path, tiny_overrides) -> None:
    from chestx.data.images.read import ImageReadError

    root = _partial_sample(sample_root, tmp_path, keep=621)
    for path in (root / "images").glob("*.png"):  # truncate every image: the first batch hits one
        path.write_bytes(path.read_bytes()[:200])
    cfg = compose([*tiny_overrides, f"data.root={root}", "trainer.fast_dev_run=true"], tmp_path / "run")
    with pytest.raises(ImageReadError, match=r"images/.*\.png"):
        train(cfg)


def test_nan_loss_stops_and_says_where(compose, tmp_path: Path, tiny_overrides, monkeypatch) -> None:
    from chestx.models import losses

    def nan_loss(self, logits, target, uncertain):
        return logits.sum() * torch.tensor(float("nan"))

    monkeypatch.setattr(losses.MaskedBCELoss, "forward", nan_loss)
    cfg = compose([*tiny_overrides, "model=resnet56v2"], tmp_path)
    with pytest.raises(NaNLossError, match="global step 0"):
        train(cfg)


def test_unknown_model_lists_choices(compose, tmp_path: Path) -> None:
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as error:
        compose(["model=nosuchnet"], tmp_path)
    assert "nosuchnet" in str(error.value)
    assert len(MODEL_CONFIGS) >= 7 and all(name in str(error.value) for name in MODEL_CONFIGS), \
        "the message lists every model config"


# A `-m` multirun over several backbones through the real CLI: the sweep fixture of tests/comparison/test_report.py
# (chestx.benchmark runs `python -m chestx.train -m model=...`); one seed twice and another seed:
# tests/entry/test_reproducibility.py.
