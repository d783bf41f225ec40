"""experiment=label_efficiency: the sweep it launches (model x module.freeze x data.train_fraction x seed) and the
config of one of its jobs, composed as `python -m chestx.train -m experiment=label_efficiency` composes it."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from hydra.utils import instantiate

from chestx.data.datasets.base import UNUSED


def _jobs(compose, out: Path, *extra: str) -> list[list[str]]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = compose(["experiment=label_efficiency", *extra], out, hydra_config=True)
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), max_batch_size=None)
    return [list(job) for batch in batches for job in batch]


def test_the_sweep_is_models_x_freeze_x_fractions_x_seeds(compose, tmp_path: Path) -> None:
    jobs = _jobs(compose, tmp_path)
    expected = [[f"model={m}", f"module.freeze={f}", f"data.train_fraction={t}", f"seed={s}"]
                for m, f, t, s in itertools.product(["resnet18", "mobilenetv2"], ["null", "backbone"],
                                                    ["0.1", "0.5", "1.0"], ["0", "1"])]
    assert sorted(map(sorted, jobs)) == sorted(map(sorted, expected))


def test_one_job_composes_to_a_tiny_offline_probe_on_a_fraction(compose, tmp_path: Path) -> None:
    job = ["model=mobilenetv2", "module.freeze=backbone", "data.train_fraction=0.1", "seed=1"]
    cfg = compose(["experiment=label_efficiency", *job], tmp_path)
    assert cfg.module.freeze == "backbone" and cfg.model.pretrained is False and cfg.seed == 1
    assert (cfg.data.image_size, cfg.trainer.max_epochs, cfg.data.split_method) == (64, 1, "stratified")
    data = instantiate(cfg.data)
    assert (data.train_fraction, data.seed, data.split_method) == (0.1, 1, "stratified")
    table, split = data.labels_only()
    patients = table.frame["patient_id"]
    assert patients[split == "train"].nunique() == round(0.1 * patients[np.isin(split, ["train", UNUSED])].nunique())


def test_the_model_list_is_overridable(compose, tmp_path: Path) -> None:
    jobs = _jobs(compose, tmp_path, "hydra.sweeper.params.model=resnet18")
    assert {j for job in jobs for j in job if j.startswith("model=")} == {"model=resnet18"} and len(jobs) == 12
