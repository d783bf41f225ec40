"""Hydra glue shared by the entry points (the only non-entry module that imports Hydra): config path,
resolvers, the run folder, writing config.yaml, instantiating callback / logger groups."""
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


def hydra_run_dir() -> Path:
    """The running command's output folder: `hydra.run.dir` (or the job's folder of a sweep), created by Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    """The resolved config as config.yaml in the run folder (what chestx.report reads back)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def instantiate_all(group: DictConfig | None) -> list:
    """Instantiate every non-null entry of a config mapping (callbacks, loggers), in order."""
    from hydra.utils import instantiate

    return [instantiate(node) for node in (group or {}).values() if node is not None]
