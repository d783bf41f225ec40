"""The literature recipes in conf/experiment/: their values, and a fast_dev_run of each on real data.

NIH recipes run on the embedded sample and on the *full* NIH label file and split lists (with the
real NIH images that are here: the 621 of the sample; `data.missing_images=drop`); CheXpert recipes
on the real CheXpert CSV rows with small real X-ray JPEGs at their paths (conftest.chexpert_tree).
Image size and evaluation batch are cut to 64 px / 16 so that a CPU run takes seconds; the recipes'
own sizes are checked on the composed config.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chestx._hydra import CONFIG_DIR
from conftest import SAMPLE_ROOT, compose_train

EXPERIMENTS = Path(CONFIG_DIR) / "experiment"
FAST = ["trainer.fast_dev_run=true", "trainer.accelerator=cpu", "data.image_size=64", "data.eval_batch_size=16",
        "data.num_workers=0", "data.pin_memory=false", "logger=none", "clinical=none"]


def _sweep_params(name: str) -> dict:
    return yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text())["hydra"]["sweeper"]["params"]


def test_chexnet_is_the_reproduction_recipe(tmp_path: Path) -> None:
    cfg = compose_train(["experiment=chexnet"], tmp_path)
    assert cfg.model.name == "densenet121" and cfg.data.image_size == 224 and cfg.data.batch_size == 16
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == 0.01
    assert cfg.optimizer.momentum == 0.9 and cfg.optimizer.weight_decay == 0.0
    assert cfg.scheduler._target_.endswith("ReduceLROnPlateau") and cfg.scheduler.factor == 0.1
    assert cfg.module.scheduler_monitor == "val/loss" and (cfg.monitor, cfg.monitor_mode) == ("val/loss", "min")
    assert cfg.data.normalization == "imagenet" and cfg.data.augment.hflip == 0.5
    assert cfg.data.augment.rotate == 0.0 and list(cfg.data.augment.scale) == [1.0, 1.0]
    assert cfg.loss._target_.endswith("MaskedBCELoss")
    cfg15 = compose_train(["experiment=chexnet15"], tmp_path)
    assert cfg15.data.include_no_finding is True and cfg15.optimizer.weight_decay == 1e-4


def test_other_recipes_values(tmp_path: Path) -> None:
    cfg = compose_train(["experiment=chexpert_backbones", "data.root=/x"], tmp_path)
    assert cfg.data._target_.endswith("CheXpertData") and cfg.data.uncertainty == "zeros"
    assert (cfg.data.image_size, cfg.data.batch_size, cfg.optimizer.lr) == (128, 64, 2e-4)
    assert _sweep_params("chexpert_backbones")["model"].split(",") == ["densenet121", "mobilenetv2", "inceptionv3", "vgg16"]
    cfg = compose_train(["experiment=uncertainty_policies", "data.root=/x"], tmp_path)
    assert (cfg.data.image_size, cfg.data.batch_size, cfg.optimizer.lr, cfg.trainer.max_epochs) == (320, 16, 1e-4, 3)
    assert not cfg.get("scheduler"), "CheXpert trains at a constant learning rate"
    assert set(_sweep_params("uncertainty_policies")["data.uncertainty"].split(",")) == {
        "ignore", "zeros", "ones", "multiclass", "lsr_ones"}
    cfg = compose_train(["experiment=resnet56_undersample"], tmp_path)
    assert cfg.model.name == "resnet56v2" and cfg.data.no_finding_fraction == 0.2 and cfg.loss._target_.endswith("weighted_bce")
    cfg = compose_train(["experiment=densenet512"], tmp_path)
    assert (cfg.data.image_size, cfg.data.batch_size) == (512, 8)
    assert _sweep_params("benchmark")["model"].split(",") == ["densenet121", "resnet50", "mobilenetv2", "inceptionv3", "vgg16"]
    cfg = compose_train(["experiment=benchmark_sample"], tmp_path)
    assert (cfg.data.image_size, cfg.trainer.max_epochs, cfg.trainer.limit_train_batches) == (112, 3, None)
    assert not cfg.get("logger")


def test_chexpert_recipe_on_nih_sample_drops_the_policy(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_train(["experiment=chexpert_backbones", "data=nih_sample", "~data.uncertainty"], tmp_path)
    assert instantiate(cfg.data).pathologies[0] == "Atelectasis"


@pytest.fixture(scope="module")
def full_nih_root(nih_dir: Path, tmp_path_factory) -> Path:
    """The full NIH label file and split lists, with the real images that exist here (symlinks)."""
    root = tmp_path_factory.mktemp("nih_full")
    for name in ["Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt", "chexnet_split"]:
        (root / name).symlink_to(nih_dir / name)
    (root / "images").symlink_to(SAMPLE_ROOT / "images")
    return root


def _run(overrides: list[str], out: Path) -> dict:
    from chestx.train import train

    metrics = train(compose_train([*overrides, *FAST], out))
    assert metrics["status"] == "ok" and (out / "predictions.csv").is_file()
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["chexnet15", "densenet512"])
def test_nih_recipe_runs_on_the_sample(experiment: str, tmp_path: Path) -> None:
    metrics = _run([f"experiment={experiment}"], tmp_path)
    assert metrics["model"] == "densenet121"
    header = (tmp_path / "predictions.csv").read_text().splitlines()[0]
    assert ("prob_No Finding" in header) == (experiment == "chexnet15")


def test_chexnet_split_lists_on_the_full_label_file(nih_dir: Path, tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_train(["experiment=chexnet", "data=nih", f"data.root={nih_dir}", "data.split=chexnet"], tmp_path)
    _, split = instantiate(cfg.data).labels_only()
    assert {s: int((split == s).sum()) for s in ("train", "val", "test")} == {"train": 78_468, "val": 11_219, "test": 22_433}


@pytest.mark.slow
@pytest.mark.parametrize("experiment, dropped", [
    ("chexnet", "Dropping 111499 of 112120 rows"),
    # undersampling (no_finding_fraction=0.2) draws over the whole label file first, then missing images go
    ("resnet56_undersample", "Dropping 75114 of 75668 rows"),
])
def test_nih_recipe_runs_on_the_full_label_file(experiment: str, dropped: str, full_nih_root: Path, tmp_path: Path,
                                                caplog) -> None:
    """Official split of the full label file (all 621 sample images are in the chexnet test list)."""
    with caplog.at_level("INFO"):
        _run([f"experiment={experiment}", "data=nih", f"data.root={full_nih_root}", "data.missing_images=drop"], tmp_path)
    assert "Read 112120 NIH images" in caplog.text and dropped in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("experiment,extra", [("chexpert_backbones", []),
                                              ("uncertainty_policies", ["data.uncertainty=multiclass"])])
def test_chexpert_recipe_runs(experiment: str, extra: list[str], chexpert_tree: Path, tmp_path: Path) -> None:
    metrics = _run([f"experiment={experiment}", f"data.root={chexpert_tree}", *extra], tmp_path)
    assert "test/auroc/Edema" in metrics
