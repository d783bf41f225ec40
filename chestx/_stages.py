"""The two-stage recipe as one command: a config with a `stage_two` node (experiment=auc_margin_chexpert).

LibAUC's recipe for the AUC-margin loss (examples/scripts/05_optimizing_auroc_loss_with_densenet121_on_chexpert.py;
Yuan et al. 2021, ICCV): stage one trains with cross-entropy; stage two starts from stage one's best model with
the classifier reset and trains with AUC-M and PESG.

- Stage one is the config without `stage_two`, run into `<run>/stage_one/` (a complete run folder:
  checkpoints, predictions, metrics.json with "stage": "pretrain").
- Stage two is the config with `stage_two`'s nodes in place of the ones they name (a node with a `_target_`,
  e.g. `loss`, `optimizer`, `scheduler`, replaces the whole group; others such as `trainer` are merged), with
  `init_from` = stage one's best checkpoint (backbone weights, head reset: chestx.models.warm_start), run into the
  run folder itself (metrics.json "stage": "finetune", "init_from" naming stage one's checkpoint). The report
  (chestx.runs.discover) shows both, labelled by their stage.
- Resume after a kill in either stage: the same command with `ckpt_path=last hydra.run.dir=<run>`. A finished
  stage one (its metrics.json says ok) is not run again; an unfinished one goes on from its last.ckpt; then stage
  two goes on from its own last.ckpt, or starts from stage one's best when it had not saved one yet.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf, open_dict

from chestx._hydra import run_dir_of
from chestx.core.run_folder import METRICS_FILE, STAGE_ONE_DIR, read_metrics

log = logging.getLogger(__name__)

STAGES = ("pretrain", "finetune")  # metrics.json "stage" of stage one and stage two (the report's labels)


def stage_configs(cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, DictConfig]:
    """(stage one, stage two) configs of a config with `stage_two`, their folders set (`paths.output_dir`)."""
    ckpt = cfg.get("ckpt_path")
    if ckpt not in (None, "last"):
        raise ValueError(f"ckpt_path={ckpt} with a two-stage recipe: use ckpt_path=last hydra.run.dir=<the run folder> "
                         "to resume whichever stage was interrupted")
    if cfg.get("init_from"):
        raise ValueError(f"init_from={cfg.init_from} with a two-stage recipe: stage two starts from stage one's best "
                         "checkpoint; to start stage one from weights use model.weights=<file>")
    base = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(base):
        second = base.pop("stage_two")
    one = base.copy()
    two = base.copy()
    with open_dict(one), open_dict(two):
        one.paths.output_dir, one.stage = str(run_dir / STAGE_ONE_DIR), STAGES[0]
        two.paths.output_dir, two.stage = str(run_dir), STAGES[1]
        for key, node in second.items():
            if OmegaConf.is_dict(node) and "_target_" in node:  # a whole object (loss, optimizer, scheduler)
                two[key] = node
            elif OmegaConf.is_dict(node) and OmegaConf.is_dict(two.get(key)):
                two[key] = OmegaConf.merge(two[key], node)
            else:
                two[key] = node
    return one, two


def _finished(folder: Path) -> dict[str, Any] | None:
    """metrics.json of a stage that ran to the end (status ok, its best checkpoint there), else None."""
    path = folder / METRICS_FILE
    if not path.is_file():
        return None
    metrics = read_metrics(path)
    best = metrics.get("best_checkpoint")
    return metrics if metrics.get("status") == "ok" and best and Path(best).is_file() else None


def train_two_stages(cfg: DictConfig, train: Callable[[DictConfig], dict[str, Any]]) -> dict[str, Any]:
    """Stage one (unless finished), then stage two from its best checkpoint; returns stage two's metrics."""
    run_dir = run_dir_of(cfg)
    one, two = stage_configs(cfg, run_dir)
    first = _finished(run_dir / STAGE_ONE_DIR)
    if first is not None:
        log.info("Stage one (%s) finished earlier in %s: going on with stage two", STAGES[0], run_dir / STAGE_ONE_DIR)
    else:
        log.info("Stage one (%s) into %s", STAGES[0], run_dir / STAGE_ONE_DIR)
        first = train(one)
    best = first.get("best_checkpoint")
    if not best:
        raise RuntimeError(f"stage one saved no checkpoint in {run_dir / STAGE_ONE_DIR}, so stage two cannot start "
                           "from it: keep callbacks.model_checkpoint (and no trainer.fast_dev_run)")
    with open_dict(two):
        two.init_from = str(best)
    log.info("Stage two (%s) from %s, head reset, into %s", STAGES[1], best, run_dir)
    return train(two)
