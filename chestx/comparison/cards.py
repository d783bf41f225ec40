"""The report's "Model cards" section: where each run's model_card.md is (chestx.runs.card), or how to write it."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from chestx.comparison.tables import Cell, Section, Table
from chestx.core.run_folder import MODEL_CARD_FILE
from chestx.runs.discover import Run

MODEL_CARDS_CSV = "model_cards.csv"


def model_cards_section(runs: list[Run], out: Path) -> Section:
    """One row per finished run: its label, replicate and card path ('' when the folder has no card)."""
    rows = [{"label": r.label, "replicate": r.replicate, "run": str(r.path),
             "model_card": str(r.path / MODEL_CARD_FILE) if (r.path / MODEL_CARD_FILE).is_file() else ""}
            for r in runs if r.status == "ok"]
    frame = pd.DataFrame(rows, columns=["label", "replicate", "run", "model_card"])
    heading = "Model cards"
    if frame.empty:
        return Section(heading, ["No run finished: no model card to link."])
    frame.to_csv(out / MODEL_CARDS_CSV, index=False)
    missing = frame["model_card"] == ""
    notes = [f"Each training run's {MODEL_CARD_FILE} (model, recipe and command, data digests, label policy, metrics "
             "with intervals, calibration, subgroup gaps, cost, comparable published results, intended use and "
             "limitations), rendered from the run folder's own files."]
    if missing.any():
        notes.append(f"No card in {int(missing.sum())} folder(s) (chestx.evaluate folders, or runs older than the "
                     "card): `python -m chestx.card run=<folder>` writes one.")
    table = Table(["run", "replicate", MODEL_CARD_FILE],
                  [[Cell(str(r["label"])), Cell(str(r["replicate"])), Cell(r["model_card"] or "none")]
                   for r in frame.to_dict("records")])
    return Section(heading, notes, table, MODEL_CARDS_CSV, files={MODEL_CARDS_CSV: out / MODEL_CARDS_CSV},
                   latex_label="tab:model_cards")
