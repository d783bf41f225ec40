"""Hydra helpers shared by the entry points: config path, resolvers, friendly composition errors."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
CONFIG_DIR = str(REPO_DIR / "conf")


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("chestx_repo"):
        OmegaConf.register_new_resolver("chestx_repo", lambda: str(REPO_DIR))


_register_resolvers()


# keys of a model config that describe the model's defaults rather than arguments of its factory
MODEL_CONFIG_ONLY_KEYS = ("input_size",)


def instantiate_net(model_cfg, num_outputs: int):
    """Build the backbone from `cfg.model` (a DictConfig or dict) with `num_outputs` logits."""
    from hydra.utils import instantiate

    args = {k: v for k, v in OmegaConf.to_container(OmegaConf.create(model_cfg), resolve=True).items()
            if k not in MODEL_CONFIG_ONLY_KEYS}
    return instantiate(args, num_outputs=num_outputs)


def hydra_run_dir() -> Path:
    """The running command's output folder: `hydra.run.dir` (or the job's folder of a sweep), created by Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    """The resolved config as config.yaml in the run folder (what chestx.report reads back)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
