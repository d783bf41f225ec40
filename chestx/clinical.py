"""Re-run the clinical read-out (thresholds, operating points, calibration, heatmaps) on a finished run.

    python -m chestx.clinical run=outputs/train/<date>/<time> [method=f1] [cams=0]

Reads the run's predictions_val.csv / predictions.csv and writes its files into the run folder (or
into `hydra.run.dir=<folder>`), subgroups.csv too at the new thresholds; the test images for the heatmaps
are found through the run's own data config (`config.yaml`). The library is `chestx.runs.clinical`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from chestx._hydra import CONFIG_DIR, hydra_run_dir, instantiate_optional
from chestx.core.checkpoint_io import TRUST_KEY, trust_setting
from chestx.core.handed_config import UnsafeConfigError, handed_node
from chestx.core.run_folder import CONFIG_FILE
from chestx.data.datasets import dataset_targets
from chestx.runs.clinical import run_clinical

log = logging.getLogger(__name__)


def _test_image_paths(run: Path, trust: bool = False) -> dict[str, Path] | None:
    """image_id -> file of the run's test images, through its saved data config (None when not found). A config.yaml
    is a file someone may hand you: its data node is instantiated only as `handed_node` checked it (chestx's dataset
    classes exactly, no interpolation; docs/security.md), unless `trust`."""
    path = run / CONFIG_FILE
    try:
        try:
            node = handed_node(path, "data", dataset_targets())
        except UnsafeConfigError as err:
            if not trust:
                log.warning("%s: no heatmaps (pass %s=true if you trust this run folder)", err, TRUST_KEY)
                return None
            log.warning("%s=true: calling what %s names although %s", TRUST_KEY, path, err)
            node = OmegaConf.load(path).data  # as Hydra reads it: interpolations resolved on instantiate
        data = instantiate(node)
        data.labels_only(find_images=True)
        return data.image_paths("test")
    except Exception as err:  # heatmaps are optional: say why they are skipped
        log.warning("Test images of %s not found (%s: %s): no heatmaps", run, type(err).__name__, err)
        return None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="clinical")
def main(cfg: DictConfig) -> None:
    run = Path(cfg.run).expanduser()
    trust = trust_setting(cfg.get("trust_checkpoint"))
    paths = _test_image_paths(run, trust) if cfg.cams > 0 else None
    summary = run_clinical(run, out_dir=hydra_run_dir(), method=cfg.method, target_sensitivity=cfg.target_sensitivity,
                           temperature_scaling=cfg.temperature_scaling, n_bins=cfg.n_bins, cams=cfg.cams,
                           max_cams_per_image=cfg.max_cams_per_image, target_layer=cfg.target_layer,
                           device=cfg.device, image_paths=paths, trust_checkpoint=trust)
    subgroups = instantiate_optional(cfg.get("subgroups"))
    if subgroups is not None:
        subgroups(run, out_dir=hydra_run_dir())
    print(summary)


if __name__ == "__main__":
    main()
