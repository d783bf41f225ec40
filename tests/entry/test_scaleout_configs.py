"""Scale-out configs on the existing engines: Lightning DDP + SLURM environment, Hydra's submitit
SLURM launcher (down to the sbatch script it would submit), and the Optuna sweeper (a real 2-trial
sweep on the embedded NIH sample)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from chestx._hydra import CONFIG_DIR
from conftest import REPO, TINY

TINY = [o for o in TINY if not o.startswith("clinical.")]  # these runs switch the clinical step off

SLURM_TASK = {  # what srun sets for task 3 of a 2-node x 2-task job
    "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
    "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train",
    "SLURM_NODELIST": "gpu[01-02]", "SLURM_JOB_NUM_NODES": "2",
}


def _compose(overrides: list[str], tmp_path: Path, hydra_config: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides], return_hydra_config=hydra_config)


def test_trainer_ddp_multi_node_picks_up_slurm(tmp_path: Path, monkeypatch) -> None:
    from lightning.fabric.plugins.environments import SLURMEnvironment

    cfg = _compose(["trainer=ddp", "trainer.num_nodes=2", "trainer.devices=2", "logger=none"], tmp_path)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.num_nodes == 2 and cfg.trainer.use_distributed_sampler
    for key, value in SLURM_TASK.items():
        monkeypatch.setenv(key, value)
    # no GPU here: the same config on CPU processes (gloo); a Trainer does not connect before fit()
    trainer = instantiate(cfg.trainer, accelerator="cpu", precision="32-true", sync_batchnorm=False,
                          callbacks=[], logger=False)
    env = trainer.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment)
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (4, 3, 1, 1)
    assert env.main_address == "gpu01"


def test_slurm_launcher_config_makes_a_valid_sbatch_script(tmp_path: Path, monkeypatch) -> None:
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = _compose(["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4",
                    "hydra.launcher.gpus_per_node=4", "hydra.launcher.tasks_per_node=4",
                    "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}/sweep", "hydra.job.name=train"],
                   tmp_path, hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher.pop("_target_").endswith("submitit_launcher.SlurmLauncher")
    assert launcher["nodes"] == 2, "nodes follows trainer.num_nodes"
    # build the executor exactly as hydra_submitit_launcher does, with a stand-in `srun` on PATH
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    folder = launcher.pop("submitit_folder")
    executor = submitit.AutoExecutor(cluster="slurm", folder=folder, slurm_max_num_timeout=launcher.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in launcher.items()})
    script = executor._executor._make_submission_file_text("python -m chestx.train", "0")
    for line in ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --cpus-per-task=8", "#SBATCH --time=720"]:
        assert line in script, line


def test_optuna_search_config_composes(tmp_path: Path) -> None:
    cfg = _compose(["hparams_search=optuna"], tmp_path, hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"optimizer.lr", "optimizer.weight_decay", "data.no_finding_fraction"}
    assert cfg.optimized_metric == "val/auroc_mean"


@pytest.mark.slow
def test_optuna_two_trial_sweep_runs(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "chestx.train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
            *TINY, "trainer.limit_train_batches=1", "model=resnet56v2", "clinical=none",
            f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "data.no_finding_fraction"}
    assert 0.0 <= results["best_value"] <= 1.0
    assert (tmp_path / "0" / "metrics.json").is_file() and (tmp_path / "1" / "metrics.json").is_file()
