"""Write a run folder's model_card.md from the folder's own files (`chestx.runs.card`).

    python -m chestx.card run=outputs/train/2026-12-07/10-00-00

`chestx.train` writes the card itself at the end of every run; this command regenerates it (e.g. for a run
that predates the card, or after the published registry grew). Prints the card's path. Exit status 2 when the
folder is not a run folder.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from chestx._hydra import CONFIG_DIR
from chestx.core.run_folder import METRICS_FILE
from chestx.runs.card import write_card

log = logging.getLogger("chestx.card")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="card")
def main(cfg: DictConfig) -> None:
    run = Path(str(cfg.run)).expanduser()
    if not (run / METRICS_FILE).is_file():
        log.error("run=%s: no %s there; pass a chestx.train run folder (outputs/train/<date>/<time>)", run,
                  METRICS_FILE)
        raise SystemExit(2)
    print(write_card(run))


if __name__ == "__main__":
    main()
