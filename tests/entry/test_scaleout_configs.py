"""Scale-out configs on the existing engines: Lightning DDP + SLURM environment, Hydra's submitit
SLURM launcher (down to the sbatch script it would submit), and the Optuna sweeper (a real 2-trial
sweep on the embedded NIH sample)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

SLURM_TASK = {  # what srun sets for task 3 of a 2-node x 2-task job
    "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
    "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train",
    "SLURM_NODELIST": "gpu[01-02]", "SLURM_JOB_NUM_NODES": "2",
}


def test_trainer_ddp_multi_node_picks_up_slurm(compose, tmp_path: Path, monkeypatch) -> None:
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.pytorch.strategies import DDPStrategy

    cfg = compose(["trainer=ddp", "trainer.num_nodes=2", "trainer.devices=2", "logger=none"], tmp_path)
    for key, value in SLURM_TASK.items():
        monkeypatch.setenv(key, value)
    for key in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):  # Lightning's SLURMEnvironment writes these into
        monkeypatch.delenv(key, raising=False)  # os.environ; monkeypatch removes them again after the test
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
    from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero_only

    for function in (rank_zero_only, utils_rank_zero_only):  # the DDP strategy sets this process's rank (3 here)
        monkeypatch.setattr(function, "rank", function.rank)  # in both; restored after the test, or later tests in
        # this process would act as rank 3 (no MLflow params, no rank-zero logs: tests/runs/test_tracking.py)
    # no GPU here: the same config on CPU processes (gloo); a Trainer does not connect before fit()
    trainer = instantiate(cfg.trainer, accelerator="cpu", precision="32-true", sync_batchnorm=False,
                          callbacks=[], logger=False)
    env = trainer.strategy.cluster_environment
    assert isinstance(trainer.strategy, DDPStrategy) and isinstance(env, SLURMEnvironment)
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (4, 3, 1, 1)
    assert env.main_address == "gpu01"


def test_slurm_launcher_config_makes_a_valid_sbatch_script(compose, tmp_path: Path, monkeypatch) -> None:
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = compose(["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4",
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
    # the command-line values above, and the config's own cpus / time limit, each on its #SBATCH line
    for line in ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", f"#SBATCH --cpus-per-task={launcher['cpus_per_task']}",
                 f"#SBATCH --time={launcher['timeout_min']}"]:
        assert line in script, line


SEARCHED = {"optimizer.lr", "optimizer.weight_decay", "data.no_finding_fraction"}


def _search_space(cfg) -> dict:
    """The Optuna distributions the sweeper builds from `hydra.sweeper.params` (as the plugin parses them)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
    assert not fixed, f"fixed values in the search: {fixed}"
    return space


def test_optuna_search_space_acts_on_the_train_options(compose, tmp_path: Path) -> None:
    """The corners of the search box, given as a trial gets them, compose and reach the objects they tune:
    the optimizer's learning rate and weight decay, and the No Finding fraction the data accepts."""
    import torch

    cfg = compose(["hparams_search=optuna"], tmp_path, hydra_config=True)
    space = _search_space(cfg)
    assert set(space) == SEARCHED
    from optuna.distributions import LogUniformDistribution

    assert isinstance(space["optimizer.lr"], LogUniformDistribution)  # sampled on a log scale, as are decays
    assert isinstance(space["optimizer.weight_decay"], LogUniformDistribution)
    for corner in ("low", "high"):
        values = {key: getattr(dist, corner) for key, dist in space.items()}
        trial = compose(["hparams_search=optuna", *(f"{k}={v}" for k, v in values.items())], tmp_path)
        optimizer = instantiate(trial.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
        group = optimizer.param_groups[0]
        assert (group["lr"], group["weight_decay"]) == (values["optimizer.lr"], values["optimizer.weight_decay"])
        data = instantiate(trial.data)  # refuses a fraction outside (0, 1]
        assert data.no_finding_fraction == values["data.no_finding_fraction"]


@pytest.mark.slow
def test_optuna_two_trial_sweep_runs(compose, tiny_overrides, repo_root: Path, tmp_path: Path) -> None:
    """A real 2-trial sweep: each trial's options inside the search box, and Optuna's best trial the one with
    the highest validation mean AUROC of the trials' own metrics.json (direction and optimized_metric)."""
    tiny = [o for o in tiny_overrides if not o.startswith("clinical.")]  # these runs switch the clinical step off
    args = [sys.executable, "-m", "chestx.train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
            *tiny, "trainer.limit_train_batches=1", "model=timm", "model.name=test_resnet", "data.image_size=32",
            "clinical=none",
            f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.run(args, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    space = _search_space(compose(["hparams_search=optuna"], tmp_path / "space", hydra_config=True))
    trials = []
    for folder in (tmp_path / "0", tmp_path / "1"):
        config = OmegaConf.load(folder / "config.yaml")
        params = {key: OmegaConf.select(config, key) for key in SEARCHED}
        for key, value in params.items():
            assert space[key].low <= value <= space[key].high, (folder.name, key, value)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["status"] == "ok"
        trials.append((metrics["val/auroc_mean"], params))
    assert trials[0][1] != trials[1][1], "two trials, two points of the search space"
    best_value, best_params = max(trials, key=lambda t: t[0])
    assert results["best_value"] == pytest.approx(best_value, abs=1e-6)
    assert results["best_params"] == pytest.approx(best_params)
