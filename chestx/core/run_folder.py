"""A run folder's vocabulary: every file name chestx writes into a run folder, the rules that locate things in one,
and the formats of its predictions / AUROC / metrics files (writers and readers). The one home of these names:
`chestx.train`, `evaluate`, `predict`, `clinical` write them, `chestx.report` reads them back.

    <run>/config.yaml               the resolved config            (CONFIG_FILE; Hydra's record in .hydra/)
    <run>/split.csv                 image_id, patient_id, split    (SPLIT_FILE, chestx.data.labels.splits.save_split)
    <run>/checkpoints/best.ckpt     Lightning checkpoints          (CHECKPOINT_DIR, BEST_CHECKPOINT, LAST_CHECKPOINT)
    <run>/predictions.csv           test predictions               (PREDICTIONS_FILE; VAL_PREDICTIONS_FILE for validation)
    <run>/auroc.csv, metrics.json   AUROC per pathology, the run's summary; error.txt when it failed
    <run>/predictions_tta.csv, auroc_tta.csv   the test split again with test-time augmentation (`tta=`), its own file
    <ensemble>/members.csv          an ensemble's members: run folder, checkpoint and its SHA-256 (chestx.ensemble)
    <run>/top_k/<checkpoint stem>/  test_top_k=true: each checkpoint the ModelCheckpoint kept (save_top_k), tested on
                                    the run's test split, a member run folder of its own (TOP_K_DIR, chestx.runs.top_k)
    <run>/thresholds.csv, operating_points.csv, calibration.csv, reliability.csv (+ .png), confusion_matrices.png,
          heatmaps/                 the clinical step (chestx.runs.clinical)
    <run>/subgroups.csv             subgroup performance (chestx.runs.subgroups)
    <run>/external/<dataset>/       the model on another dataset's test split (chestx.runs.external), with mapping.csv
    <run>/stage_one/                a two-stage recipe's first stage, a run folder of its own (STAGE_ONE_DIR)
    <predict>/unreadable.csv, localization.csv, pointing_game.csv   chestx.predict
    <run>/unreadable.csv            image_id, path, reason of every row data.missing_images=drop dropped (ChestXData)

`predictions.csv`: one row per image: image_id, patient_id, the label file's metadata (META_COLUMNS) when known,
then prob_<P> and label_<P> for every pathology, the label empty when unknown. `auroc.csv`: pathology, auroc,
n_pos, n_neg and a `mean` row.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import traceback
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import yaml


log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
HYDRA_DIR = ".hydra"
OVERRIDES_FILE = "overrides.yaml"  # in HYDRA_DIR
SPLIT_FILE = "split.csv"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best.ckpt"
LAST_CHECKPOINT = "last.ckpt"
SWA_CHECKPOINT = "swa.ckpt"  # swa=default: the averaged weights, tested instead of best.ckpt
PREDICTIONS_FILE = "predictions.csv"
VAL_PREDICTIONS_FILE = "predictions_val.csv"
AUROC_FILE = "auroc.csv"
METRICS_FILE = "metrics.json"
PREDICTIONS_TTA_FILE = "predictions_tta.csv"  # test split, test-time augmentation (metrics.json "tta": the mode)
AUROC_TTA_FILE = "auroc_tta.csv"
MEMBERS_FILE = "members.csv"  # an ensemble run folder's members
TOP_K_DIR = "top_k"  # test_top_k=true: <run>/top_k/<checkpoint stem>/ per kept checkpoint (an ensemble member)
TOP_K_CHECKPOINT_NAME = "epoch{epoch:03d}-step{step}"  # test_top_k=true: the kept checkpoints' Lightning filename
ERROR_FILE = "error.txt"
THRESHOLDS_FILE = "thresholds.csv"
OPERATING_POINTS_FILE = "operating_points.csv"
CALIBRATION_FILE = "calibration.csv"
RELIABILITY_FILE = "reliability.csv"
CONFUSION_FIGURE = "confusion_matrices.png"
RELIABILITY_FIGURE = "reliability.png"
HEATMAP_DIR = "heatmaps"
HEATMAP_INDEX = "heatmaps.csv"  # in HEATMAP_DIR
SUBGROUPS_FILE = "subgroups.csv"
EXTERNAL_DIR = "external"
MAPPING_FILE = "mapping.csv"  # in EXTERNAL_DIR/<dataset>
UNREADABLE_FILE = "unreadable.csv"
LOCALIZATION_FILE = "localization.csv"
POINTING_GAME_FILE = "pointing_game.csv"
DATA_FILES_FILE = "data_files.csv"  # role, name, bytes, sha256 of the label file(s) and split.csv (chestx.runs.card)
MODEL_CARD_FILE = "model_card.md"  # the run's model card (chestx.runs.card, python -m chestx.card)
STAGE_ONE_DIR = "stage_one"  # a two-stage run (chestx._stages): stage one's run folder inside stage two's
CLINICAL_FILES = (THRESHOLDS_FILE, OPERATING_POINTS_FILE, CALIBRATION_FILE)

PROB_PREFIX = "prob_"
LABEL_PREFIX = "label_"
# label-file metadata carried by predictions files (subgroup attributes, `chestx.metrics.subgroups`)
META_COLUMNS = ("sex", "age", "view", "frontal_lateral")


# ------------------------------------------------------------------ locating things in a run folder
def run_dir_of_checkpoint(ckpt: str | Path) -> Path:
    """The run folder of a checkpoint: `<run>/checkpoints/x.ckpt` -> `<run>`; a checkpoint elsewhere -> its folder."""
    path = Path(ckpt).expanduser()
    return path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """`<run>/checkpoints/best.ckpt`, else the newest .ckpt other than last.ckpt, else last.ckpt, else None."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if (folder / BEST_CHECKPOINT).is_file():
        return folder / BEST_CHECKPOINT
    others = sorted((p for p in folder.glob("*.ckpt") if p.name != LAST_CHECKPOINT), key=lambda p: p.stat().st_mtime)
    if others:
        if len(others) > 1:
            log.warning("%d checkpoints in %s and none is %s: using the newest, %s", len(others), folder,
                        BEST_CHECKPOINT, others[-1].name)
        return others[-1]
    return folder / LAST_CHECKPOINT if (folder / LAST_CHECKPOINT).is_file() else None


def top_k_member_dir(run_dir: str | Path, ckpt: str | Path) -> Path:
    """Where one kept checkpoint's test goes: `<run>/top_k/<checkpoint stem>` (`epoch004-step20.ckpt` ->
    `<run>/top_k/epoch004-step20`)."""
    return Path(run_dir) / TOP_K_DIR / Path(ckpt).stem


def member_checkpoint(run_dir: str | Path, metrics: dict[str, Any]) -> Path | None:
    """The checkpoint a run folder's predictions.csv came from: for a top-k member (`<run>/top_k/<stem>/`, its
    metrics.json names its `checkpoint`) that file, or, when the run folder was moved, `<run>/checkpoints/<its
    name>`; for any other run folder `best_checkpoint(run_dir)`. None when the file is gone."""
    named = metrics.get("checkpoint") if metrics.get("top_k_of") else None
    if not named:
        return best_checkpoint(run_dir)
    for candidate in (Path(str(named)), Path(run_dir).parent.parent / CHECKPOINT_DIR / Path(str(named)).name):
        if candidate.is_file():
            return candidate
    return None


def read_run_config(folder: str | Path) -> dict[str, Any]:
    """A run folder's resolved config as plain data: config.yaml, else Hydra's .hydra/config.yaml; {} when neither
    exists or is readable (a warning says which)."""
    folder = Path(folder)
    for candidate in (folder / CONFIG_FILE, folder / HYDRA_DIR / CONFIG_FILE):
        if candidate.is_file():
            try:
                return yaml.safe_load(candidate.read_text()) or {}
            except yaml.YAMLError as error:
                log.warning("%s: unreadable (%s)", candidate, error)
                return {}
    return {}


def select(config: dict[str, Any], key: str) -> Any:
    """`select(cfg, "data.split")`: a dotted key of a plain config dict, None when absent."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# Names run folders written before the dataset registry (issue 24) give their datasets: the old module of a data class
# (`chestx.data.datasets.vindr.VinDrData`) or the old class-name rule (`RSNAPneumoniaData` -> `rsnapneumonia`), each
# read back as the dataset's one name.
LEGACY_DATASET_NAMES: dict[str, str] = {
    "vindr": "vindr_cxr", "rsna": "rsna_pneumonia", "rsnapneumonia": "rsna_pneumonia", "mimic": "mimic_cxr",
    "csv_folder": "csv", "nihexpert": "nih_expert", "merged": "merge",
}
DATASETS_PACKAGE = "chestx.data.datasets"


def dataset_name(data_class: str) -> str:
    """The name of a dataset in run folders and reports when its config name is unknown: for a data class's path
    (`chestx.data.datasets.vindr_cxr.VinDrData`) its module, which is the dataset's registered name
    (`chestx.data.datasets.registry`); for a bare class name, the class name without `Data`, lower-cased
    (`NIHData` -> `nih`). Names of older run folders are read back as today's (`LEGACY_DATASET_NAMES`: `vindr` ->
    `vindr_cxr`). A dataset's config name (`data=nih_sample`, `test_data=[chexpert]`) wins wherever it is known."""
    text = str(data_class)
    module, _, cls = text.rpartition(".")
    if module.startswith(DATASETS_PACKAGE + "."):
        name = module.rsplit(".", 1)[-1]
    else:
        name = cls.removesuffix("Data").lower()
    return LEGACY_DATASET_NAMES.get(name, name)


def external_dir(run_dir: str | Path, dataset: str) -> Path:
    """Where a run's model scored on another dataset's test split goes: `<run>/external/<dataset config name>`."""
    return Path(run_dir) / EXTERNAL_DIR / dataset


# ------------------------------------------------------------------ file formats
def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def predictions_frame(ids: pd.DataFrame, probs: np.ndarray, labels: np.ndarray, pathologies: list[str]) -> pd.DataFrame:
    """ids: image_id, patient_id and any META_COLUMNS (N rows); probs, labels: (N, K)."""
    assert probs.shape == labels.shape == (len(ids), len(pathologies)), (probs.shape, labels.shape, len(ids))
    columns: dict[str, Any] = {"image_id": ids["image_id"].to_numpy(), "patient_id": ids["patient_id"].to_numpy()}
    columns.update({c: ids[c].to_numpy() for c in META_COLUMNS if c in ids.columns})
    for k, name in enumerate(pathologies):
        columns[PROB_PREFIX + name] = probs[:, k]
        columns[LABEL_PREFIX + name] = pd.array(
            np.where(np.isnan(labels[:, k]), np.nan, labels[:, k]), dtype="Int64"
        ) if np.all(np.isin(labels[:, k][~np.isnan(labels[:, k])], (0.0, 1.0))) else labels[:, k]
    return pd.DataFrame(columns)


def write_predictions(path: Path, frame: pd.DataFrame) -> None:
    _atomic_write_text(path, frame.to_csv(index=False, float_format="%.9g"))


def read_predictions(path: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, list[str]]:
    """Inverse of write_predictions: (ids frame, probs (N,K), labels (N,K), pathologies).

    The ids frame holds image_id, patient_id and the META_COLUMNS the file has. Ids stay text as written ("NA",
    "None", "null" are ids, not missing values); only an empty cell is missing (as chestx.runs.scoring reads a
    predictions CSV), which is also how write_predictions writes NaN.
    """
    frame = pd.read_csv(path, dtype={"image_id": str, "patient_id": str, "sex": str, "view": str,
                                     "frontal_lateral": str}, keep_default_na=False, na_values=[""])
    pathologies = [c[len(PROB_PREFIX):] for c in frame.columns if c.startswith(PROB_PREFIX)]
    probs = frame[[PROB_PREFIX + p for p in pathologies]].to_numpy(dtype=np.float64)
    labels = frame[[LABEL_PREFIX + p for p in pathologies]].to_numpy(dtype=np.float64)
    return frame[["image_id", "patient_id", *[c for c in META_COLUMNS if c in frame.columns]]], probs, labels, pathologies


def with_metadata(ids: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """`ids` (image_id, patient_id, in its own row order) with the META_COLUMNS of `frame` (a LabelTable
    frame, one row per image) looked up by image_id."""
    meta = frame.drop_duplicates("image_id").set_index("image_id")
    missing = ~ids["image_id"].isin(meta.index)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} image ids have no row in the label table (first: "
                         f"{ids['image_id'][missing].iloc[0]}): the split and the label table disagree")
    extra = meta.loc[ids["image_id"], [c for c in META_COLUMNS if c in meta.columns]].reset_index(drop=True)
    return pd.concat([ids.reset_index(drop=True), extra], axis=1)


def write_auroc(path: Path, probs: np.ndarray, labels: np.ndarray, pathologies: list[str]) -> pd.DataFrame:
    from chestx.metrics.auroc import masked_auroc  # lazy: chestx.metrics pulls in scipy and sklearn (seconds)

    table = masked_auroc(probs, labels, pathologies)
    _atomic_write_text(path, table.to_csv(index=False, float_format="%.6f"))
    return table


def write_run_predictions(run_dir: Path, ids: dict[str, pd.DataFrame], outputs: dict[str, Any],
                          pathologies: list[str]) -> pd.DataFrame:
    """predictions_val.csv, predictions.csv and auroc.csv of a trained run; returns the AUROC table.

    ids: per stage ("val", "test") the image_id / patient_id of the split in dataset row order;
    outputs: per stage an object with `index` (N,), `probs` (N, K) and `targets` (N, K)
    (`chestx.models.module.EpochOutputs`).
    """
    for stage, filename in (("val", VAL_PREDICTIONS_FILE), ("test", PREDICTIONS_FILE)):
        out = outputs[stage]
        rows = ids[stage].iloc[out.index].reset_index(drop=True)
        write_predictions(Path(run_dir) / filename, predictions_frame(rows, out.probs, out.targets, pathologies))
    test = outputs["test"]
    table = write_auroc(Path(run_dir) / AUROC_FILE, test.probs, test.targets, pathologies)
    log.info("Test AUROC per pathology (%d images, best checkpoint):\n%s", len(test.index), format_auroc_table(table))
    return table


def _clean(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if hasattr(value, "item") and callable(value.item):
        return _clean(value.item())
    return value


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """metrics.json; NaN becomes null so the file is valid JSON."""
    _atomic_write_text(path, json.dumps({k: _clean(v) for k, v in metrics.items()}, indent=2, sort_keys=True))


def read_metrics(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def format_auroc_table(table: pd.DataFrame) -> str:
    """Plain-text table for the terminal."""
    lines = [f"{'pathology':<20} {'AUROC':>7} {'n_pos':>6} {'n_neg':>6}"]
    for row in table.itertuples():
        auc = "   n/a" if math.isnan(row.auroc) else f"{row.auroc:7.3f}"
        lines.append(f"{row.pathology:<20} {auc:>7} {int(row.n_pos):>6} {int(row.n_neg):>6}")
    return "\n".join(lines)


@contextlib.contextmanager
def failure_recorded(run_dir: Path, **fields: Any) -> Iterator[None]:
    """Run the body; if it raises, write metrics.json with status "failed" (the error and `fields`, e.g.
    model and seed) and the traceback to error.txt, log where, and re-raise. A success clears an old
    error.txt of an earlier attempt in the same folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        yield
    except Exception as error:
        write_metrics(run_dir / METRICS_FILE, {"status": "failed", "error": f"{type(error).__name__}: {error}",
                                               **fields})
        (run_dir / ERROR_FILE).write_text(traceback.format_exc())
        log.error("Run failed: %s: %s (details in %s)", type(error).__name__, error, run_dir / ERROR_FILE)
        raise
