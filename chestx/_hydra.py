"""Hydra glue shared by the entry points (the only non-entry module that imports Hydra): config path,
resolvers, the run folder, writing config.yaml, instantiating callback / logger groups and optional groups."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from chestx.core.run_folder import CONFIG_FILE, dataset_name

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
CONFIG_DIR = str(REPO_DIR / "conf")


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("chestx_repo"):
        OmegaConf.register_new_resolver("chestx_repo", lambda: str(REPO_DIR))


_register_resolvers()

DATASET_GROUPS = {"test_data": "test_data", "sources": "data.sources"}  # group -> package prefix of its entries
NOT_A_SOURCE = ("merge",)  # data configs that cannot be a test set or a merge source (merge of merges)


def register_dataset_groups(config_dir: str | Path = CONFIG_DIR) -> list[tuple[str, str]]:
    """Make every data config `conf/data/<name>.yaml` a choice of the `test_data` and `sources` groups.

    `test_data=[<name>]` (an extra test set) and `sources=[<name>]` (a source of data=merge) are the dataset's own
    config under `test_data.<name>` / `data.sources.<name>`. A file `conf/test_data/<name>.yaml` or
    `conf/sources/<name>.yaml` is needed only where that use changes a key (e.g. test_data=chexpert scores all
    findings); every other dataset gets the entry from Hydra's ConfigStore here, so a new dataset needs no file in
    either group. Returns the (group, name) pairs registered."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    conf = Path(config_dir)
    added = []
    for data_file in sorted((conf / "data").glob("*.yaml")):
        name = data_file.stem
        if name in NOT_A_SOURCE:
            continue
        for group, prefix in DATASET_GROUPS.items():
            if (conf / group / f"{name}.yaml").is_file():
                continue
            store.store(group=group, name=name, package=f"{prefix}.{name}",
                        node={"defaults": [f"/data/{name}@_here_", "_self_"]})
            added.append((group, name))
    return added


register_dataset_groups()


def hydra_run_dir() -> Path:
    """The running command's output folder: `hydra.run.dir` (or the job's folder of a sweep), created by Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def run_dir_of(cfg: DictConfig) -> Path:
    """The run's folder: `paths.output_dir`, which is the Hydra run folder unless it is set otherwise (the stage
    folders of a two-stage recipe, chestx._stages; tests calling an entry point's function without Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    output_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
    return Path(output_dir) if output_dir or not HydraConfig.initialized() else hydra_run_dir()


def data_config_name(cfg: DictConfig) -> str:
    """The name of the dataset a command reads: its `data=` choice (`nih_sample`, `chexpert`, ...) under Hydra,
    else the data class's name (`chestx.core.run_folder.dataset_name`). It names external/<dataset>/ folders and the
    report's cross-dataset rows and columns (`test_data=[<name>]` keys name theirs)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("data")
        if choice:
            return str(choice)
    return dataset_name(str(cfg.data.get("_target_", "")))


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    """The resolved config as config.yaml in the run folder (what chestx.report reads back)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))


def instantiate_all(group: DictConfig | None) -> list:
    """Instantiate every non-null entry of a config mapping (callbacks, loggers), in order."""
    from hydra.utils import instantiate

    return [instantiate(node) for node in (group or {}).values() if node is not None]


def instantiate_optional(node: DictConfig | None) -> Any:
    """An optional group (`clinical`, `subgroups`): its object, or None when switched off (`clinical=none` leaves
    a node without `_target_`, `~clinical` none at all)."""
    from hydra.utils import instantiate

    return instantiate(node) if node and node.get("_target_") else None
