"""Find run folders under sweep folders and read each one back (status, config, overrides, predictions).

A run folder is one `chestx.train` / `chestx.evaluate` job (docs/design.md, "Run folder"). Its
status for the report:

- ``ok``: metrics.json says ok and predictions.csv is there;
- ``failed``: metrics.json says failed (its ``error`` is the reason);
- ``incomplete``: no metrics.json or no predictions.csv (killed mid-way, or still running).

A finished run with a test-time-augmentation pass (predictions_tta.csv, `tta=hflip|tencrop`) also yields that pass as
a `Run` of its own (`tta_pass`): the same folder, its `predictions_file` predictions_tta.csv, labelled
`<run's label> tta=<mode>`, so the report's metric tables list it beside the plain pass.

The keys a sweep varied are found from each run's `.hydra/overrides.yaml`; the value of a key a
run did not override is looked up in its resolved `config.yaml`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from chestx.core.run_folder import (
    EXTERNAL_DIR, HYDRA_DIR, METRICS_FILE, OVERRIDES_FILE, PREDICTIONS_FILE, PREDICTIONS_TTA_FILE, STAGE_ONE_DIR,
    read_metrics, read_predictions, read_run_config, select,
)

log = logging.getLogger(__name__)

# Overrides that never describe *what* was compared: where things are, how fast loaders are,
# and chestx.evaluate's input options. Replicates are aggregated, not columns. `tta` never changes a run's plain pass
# (predictions.csv): its TTA pass is a column of its own (`tta_pass`), labelled with the mode.
IGNORED_KEY_PREFIXES = ("hydra.", "paths.")
REPLICATE_KEYS = ("seed", "data.fold")  # runs differing only in these are replicates of one configuration
IGNORED_KEYS = frozenset({
    *REPLICATE_KEYS, "data.num_workers", "data.pin_memory", "data.root", "data.cache", "data.cache_dir",
    "data.eval_batch_size", "loader.num_workers", "loader.pin_memory", "loader.eval_batch_size",
    "loader.persistent_workers", "loader.prefetch_factor", "logger", "trainer.accelerator", "trainer.devices",
    "ckpt_path",
    "predictions", "ckpt", "prefix", "id_column", "name", "allow_missing", "task_name", "trust_checkpoint", "tta",
})


class ReportError(Exception):
    """Input the report cannot use; the message names the folder and the fix."""


@dataclass
class Run:
    """One run folder as the report sees it."""

    path: Path
    status: str                       # ok | failed | incomplete
    reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    ids: pd.DataFrame | None = None    # image_id, patient_id (N rows)
    probs: np.ndarray | None = None    # (N, K)
    labels: np.ndarray | None = None   # (N, K) 1/0/NaN
    pathologies: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)  # swept key -> value (set by label_runs)
    label: str = ""                    # column name in the tables (set by label_runs)
    predictions_file: str = PREDICTIONS_FILE  # the pass read: predictions.csv, or a TTA pass's predictions_tta.csv

    @property
    def model(self) -> str:
        return str(self.metrics.get("model") or select(self.config, "model.name") or self.overrides.get("model")
                   or self.path.name)

    @property
    def seed(self) -> Any:
        seed = self.metrics.get("seed")
        return seed if seed is not None else self.overrides.get("seed", select(self.config, "seed"))

    @property
    def fold(self) -> int | None:
        """The k-fold fold that validated this run (data.fold), None without k-fold."""
        return _int_or_none(self.overrides.get("data.fold", select(self.config, "data.fold")))

    @property
    def folds(self) -> int | None:
        """K of a k-fold run (data.folds), None without k-fold."""
        return _int_or_none(self.overrides.get("data.folds", select(self.config, "data.folds")))

    @property
    def replicate(self) -> str:
        """Which replicate of its configuration the run is: `seed 0`, or `seed 0 fold 2`."""
        return f"seed {self.seed}" + ("" if self.fold is None else f" fold {self.fold}")

    @property
    def key(self) -> str:
        """What identifies this pass in the report's CSVs: the folder for the plain pass, else the predictions file."""
        return str(self.path if self.predictions_file == PREDICTIONS_FILE else self.path / self.predictions_file)

    @property
    def is_tta(self) -> bool:
        return self.predictions_file == PREDICTIONS_TTA_FILE

    def clinical_file(self, name: str) -> Path | None:
        path = self.path / name
        return path if path.is_file() else None


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None or str(value) in ("", "null", "None") else int(value)
    except ValueError:
        return None


def _is_run_dir(path: Path) -> bool:
    return (path / HYDRA_DIR).is_dir() or (path / METRICS_FILE).is_file() or (path / PREDICTIONS_FILE).is_file()


def find_run_dirs(folders: list[Path]) -> list[Path]:
    """Run folders given directly or found below sweep folders (any depth), in a stable order."""
    found: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ReportError(f"{folder} is not a folder: pass sweep folders (outputs/multirun/<date>/<time>) or run folders")
        if _is_run_dir(folder):
            found.append(folder)
            continue
        below = sorted({p.parent.parent if p.parent.name == HYDRA_DIR else p.parent
                        for pattern in (f"{HYDRA_DIR}/{OVERRIDES_FILE}", METRICS_FILE, PREDICTIONS_FILE)
                        for p in folder.rglob(pattern)}, key=_natural_key)
        below = [p for p in below if not any(q != p and q in p.parents for q in below)]  # outermost run folders
        if not below:
            raise ReportError(f"no run folders (with .hydra/, metrics.json or predictions.csv) under {folder}")
        found.extend(below)
    # a two-stage recipe's run folder holds its first stage's run folder (chestx._stages): both are runs
    found = [q for p in found for q in (p, p / STAGE_ONE_DIR) if q == p or _is_run_dir(q)]
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def _natural_key(path: Path) -> list:
    """0, 1, 2, 10 in number order; a named folder beside numbered ones (a sweep's `ensemble/`) after them."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]


def _parse_overrides(path: Path) -> dict[str, str]:
    """`.hydra/overrides.yaml` (a list of `key=value`) -> {key: value}; `+`/`++`/`~` prefixes dropped."""
    if not path.is_file():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    out: dict[str, str] = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def load_run(path: Path) -> Run:
    """Read one run folder; never raises for a broken run (it becomes failed / incomplete)."""
    path = Path(path)
    overrides = _parse_overrides(path / HYDRA_DIR / OVERRIDES_FILE)
    run = Run(path=path, status="incomplete", overrides=overrides, config=read_run_config(path))
    metrics_path = path / METRICS_FILE
    if metrics_path.is_file():
        try:
            run.metrics = read_metrics(metrics_path)
        except ValueError as error:
            run.reason = f"metrics.json is not valid JSON ({error})"
            return run
    if run.metrics.get("stage"):  # a two-stage recipe's stage (chestx._stages): a setting the report labels runs by
        run.overrides.setdefault("stage", str(run.metrics["stage"]))
    if run.metrics.get("top_k_of") and run.metrics.get("checkpoint"):  # a top-k member (chestx.runs.top_k): its
        run.overrides.setdefault("checkpoint", Path(str(run.metrics["checkpoint"])).stem)  # own column, no replicate
    elif run.metrics.get("top_k_run"):  # their ensemble, beside them
        run.overrides.setdefault("checkpoint", f"top-{run.metrics.get('n_members')}")
    if run.metrics.get("status") == "failed":
        run.status = "failed"
        run.reason = run.metrics.get("error") or "failed (no error message in metrics.json)"
        return run
    if not (path / PREDICTIONS_FILE).is_file():
        if run.metrics.get("ckpt") and (path / EXTERNAL_DIR).is_dir():
            run.reason = ("a checkpoint scored on another dataset only (chestx.evaluate ckpt=...): in the "
                          "cross-dataset section, not in the AUROC table")
        else:
            run.reason = ("no predictions.csv" + ("" if run.metrics else " and no metrics.json")
                          + ": killed or still running")
        return run
    try:
        run.ids, run.probs, run.labels, run.pathologies = read_predictions(path / PREDICTIONS_FILE)
    except (ValueError, KeyError) as error:
        run.reason = f"predictions.csv unreadable: {error}"
        return run
    if not run.pathologies or len(run.ids) == 0:
        run.reason = "predictions.csv has no prob_<pathology> columns or no rows"
        return run
    if not run.metrics:
        run.reason = "no metrics.json (cost columns empty)"
        log.warning("%s: %s", path, run.reason)
    run.status = "ok"
    return run


def tta_pass(run: Run) -> Run | None:
    """The test-time-augmentation pass of a finished, labelled run (its predictions_tta.csv) as a `Run` of its own:
    label `<run.label> tta=<mode>`, metrics.json's costs of the pass (GMACs x views per image, the pass's measured
    images/s). None without that file; an unreadable one is left out with a warning."""
    file = run.path / PREDICTIONS_TTA_FILE
    if run.status != "ok" or not file.is_file():
        return None
    try:
        ids, probs, labels, pathologies = read_predictions(file)
    except (ValueError, KeyError) as error:
        log.warning("%s unreadable (%s): its TTA pass is left out of the report", file, error)
        return None
    if not pathologies or len(ids) == 0:
        log.warning("%s has no prob_<pathology> columns or no rows: its TTA pass is left out of the report", file)
        return None
    mode = run.metrics.get("tta") or select(run.config, "tta") or "unknown"
    metrics = dict(run.metrics)
    views = metrics.get("tta_views") or 1
    metrics.update(macs=None if metrics.get("macs") is None else metrics["macs"] * views,
                   infer_images_per_s=metrics.get("tta_infer_images_per_s"))
    return Run(path=run.path, status="ok", metrics=metrics, overrides=run.overrides, config=run.config, ids=ids,
               probs=probs, labels=labels, pathologies=pathologies, settings=dict(run.settings),
               label=f"{run.label} tta={mode}", predictions_file=PREDICTIONS_TTA_FILE)


def load_runs(folders: list[Path]) -> list[Run]:
    runs = [load_run(p) for p in find_run_dirs(folders)]
    log.info("%d run folders: %d ok, %d failed, %d incomplete", len(runs),
             sum(r.status == "ok" for r in runs), sum(r.status == "failed" for r in runs),
             sum(r.status == "incomplete" for r in runs))
    return runs


def _value_of(run: Run, key: str) -> str | None:
    """The run's value of a swept key: its override, else its resolved config value; None when unknown
    (a config group the run did not override, e.g. a plain run folder without .hydra/overrides.yaml)."""
    if key in run.overrides:
        return run.overrides[key]
    if key == "model":
        return run.model
    value = select(run.config, key)
    if isinstance(value, dict):
        value = value.get("name")
    return None if value is None else str(value)


def swept_keys(runs: list[Run]) -> list[str]:
    """Keys whose known value differs between runs (not REPLICATE_KEYS nor plumbing keys), model first."""
    keys: set[str] = set()
    for run in runs:
        keys.update(k for k in run.overrides
                    if k not in IGNORED_KEYS and not k.startswith(IGNORED_KEY_PREFIXES))
    varying = [k for k in sorted(keys) if len({_value_of(r, k) for r in runs} - {None}) > 1]
    if len({r.model for r in runs}) > 1 and "model" not in varying:
        varying.insert(0, "model")
    return sorted(varying, key=lambda k: (k != "model", k))


def label_runs(runs: list[Run]) -> list[str]:
    """Set each run's `settings` and `label` (the model, then `key=value` for other swept keys)."""
    keys = swept_keys(runs)
    for run in runs:
        run.settings = {k: (run.model if k == "model" else _value_of(run, k) or "?") for k in keys}
        parts = [run.model] + [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in run.settings.items() if k != "model"]
        run.label = " ".join(parts)
    return keys


def fixed_settings(runs: list[Run]) -> dict[str, str]:
    """Overrides shared by every run (what the whole sweep ran with), for the report's header."""
    if not runs:
        return {}
    common = set(runs[0].overrides.items())
    for run in runs[1:]:
        common &= set(run.overrides.items())
    return {k: v for k, v in sorted(common) if not k.startswith("hydra.")}
