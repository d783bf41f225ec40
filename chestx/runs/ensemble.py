"""An ensemble of finished runs, written as a run folder of its own (`python -m chestx.ensemble runs=[...]`).

Members are run folders (the seeds of a sweep, the folds of a k-fold, several backbones, or the top-k checkpoints of
one run: `<run>/top_k/<checkpoint>/`, chestx.runs.top_k): their test predictions (predictions.csv, of the best
checkpoint or of the member's own checkpoint) are combined per image and pathology, by the mean of the probabilities
(`combine=prob`, the default) or by the sigmoid of the mean logit (`combine=logit`). No network runs again, so the
ensemble is exactly the combination of what each member's folder holds.

    <ensemble>/predictions.csv       the combined test predictions (ids, metadata and labels of the members)
    <ensemble>/predictions_val.csv   the combined validation predictions, when every member has the same ones
    <ensemble>/auroc.csv             per pathology and mean
    <ensemble>/predictions_tta.csv   the members' TTA passes combined the same way, when every member has one of one
    <ensemble>/auroc_tta.csv         mode (tta=hflip|tencrop) on the same test images; metrics.json then has tta,
                                     tta_views, test_tta/auroc_* and tta_infer_images_per_s (members one after another)
    <ensemble>/members.csv           run, model, seed, fold, test AUROC, checkpoint, its SHA-256, predictions SHA-256
    <ensemble>/metrics.json          status, model (the ensemble's name), combine, members, test/auroc_*, and the cost:
                                     params and MACs summed over the members, inference images/s of running them one
                                     after the other (1 / sum of 1 / each member's), image_size of the first member

Members must have been tested on the same images with the same labels and pathologies; otherwise the ensemble is
refused, naming the member and the difference (and the split settings that explain it, e.g. data.seed).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chestx.core.run_folder import (
    AUROC_FILE, METRICS_FILE, MEMBERS_FILE, PREDICTIONS_FILE, PREDICTIONS_TTA_FILE, TOP_K_DIR, VAL_PREDICTIONS_FILE,
    member_checkpoint,
    predictions_frame, read_predictions, select, write_auroc, write_metrics, write_predictions,
)
from chestx.runs.discover import ReportError, Run, find_run_dirs, load_run
from chestx.runs.tta import write_tta_pass
from chestx.runs.top_k import RAISE_TOP_K

log = logging.getLogger(__name__)

COMBINE = ("prob", "logit")
SPLIT_KEYS = ("data._target_", "data.root", "data.csv", "data.split", "data.ratios", "data.seed", "data.folds",
              "data.split_dir")  # settings that decide which images a run is tested on
_EPS = 1e-7  # logit averaging: probabilities clipped into [eps, 1 - eps] before the logit


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks by hashlib.file_digest (a checkpoint is only hashed, never loaded)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def combine_probs(probs: np.ndarray, combine: str = "prob") -> np.ndarray:
    """(M, N, K) member probabilities -> (N, K): mean probability, or sigmoid of the mean logit."""
    if combine not in COMBINE:
        raise ValueError(f"combine={combine!r}: choose prob (mean of probabilities) or logit (mean of logits)")
    if combine == "prob":
        return probs.mean(axis=0)
    p = np.clip(probs, _EPS, 1.0 - _EPS)
    return 1.0 / (1.0 + np.exp(-np.log(p / (1.0 - p)).mean(axis=0)))


def _aligned(run: Run) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """ids, probs (N, K), labels (N, K) sorted by image id."""
    assert run.ids is not None and run.probs is not None and run.labels is not None
    order = np.argsort(run.ids["image_id"].to_numpy(dtype=str), kind="stable")
    return run.ids.iloc[order].reset_index(drop=True), run.probs[order], run.labels[order]


def _split_hint(first: Run, other: Run) -> str:
    differing = [f"{k} {select(first.config, k)!r} vs {select(other.config, k)!r}" for k in SPLIT_KEYS
                 if select(first.config, k) != select(other.config, k)]
    return f" (their split settings differ: {'; '.join(differing)})" if differing else ""


def check_same_test_set(members: list[Run]) -> None:
    """Refuse members tested on different images / labels / pathologies, naming the member and the difference."""
    first = members[0]
    ids0, _, labels0 = _aligned(first)
    for run in members[1:]:
        where = f"ensemble member {run.path} and {first.path}"
        if run.pathologies != first.pathologies:
            raise ReportError(f"{where} predict different pathologies ({run.pathologies} vs {first.pathologies}): "
                              "ensemble runs of the same findings")
        ids, _, labels = _aligned(run)
        a, b = set(ids0["image_id"]), set(ids["image_id"])
        if a != b:
            only = sorted(b - a)[:3] or sorted(a - b)[:3]
            raise ReportError(f"{where} were tested on different images ({len(b)} vs {len(a)} test images, "
                              f"{len(a ^ b)} not shared, e.g. {only}){_split_hint(first, run)}: an ensemble needs "
                              "one test split; train the members with the same data settings (e.g. a fixed "
                              "data.seed across seeds)")
        if not np.array_equal(labels, labels0, equal_nan=True):
            raise ReportError(f"{where} have different labels for the same test images{_split_hint(first, run)} "
                              "(another label file or label policy): an ensemble needs one ground truth")


def _load_members(folders: list[Path]) -> list[Run]:
    runs = [load_run(p) for p in find_run_dirs(folders)]
    bad = [r for r in runs if r.status != "ok"]
    if bad:
        raise ReportError("ensemble members must be finished runs; not usable: "
                          + "; ".join(f"{r.path} ({r.status}: {r.reason})" for r in bad))
    if len(runs) < 2:
        raise ReportError(f"runs={[str(f) for f in folders]} holds {len(runs)} finished run: an ensemble needs 2 or "
                          f"more{_top_k_hint(runs)}")
    return runs


def _top_k_hint(runs: list[Run]) -> str:
    """What to do when a single run was given: its top-k members, or how to get them (`test_top_k=true`)."""
    if len(runs) == 1 and runs[0].metrics.get("top_k_of"):
        folder = runs[0].path.parent
        if len(list(folder.glob(f"*/{METRICS_FILE}"))) > 1:
            return f"; pass the run's whole top-k folder: runs=[{folder}]"
        return (f" (the run {runs[0].metrics['top_k_of']} kept 1 checkpoint with "
                f"callbacks.model_checkpoint.save_top_k={runs[0].metrics.get('save_top_k')}: {RAISE_TOP_K})")
    if len(runs) == 1 and (runs[0].path / TOP_K_DIR).is_dir():
        return f"; its top-k checkpoints are members with runs=[{runs[0].path / TOP_K_DIR}]"
    return f"; the top-k checkpoints of one run become members when it is trained with test_top_k=true ({RAISE_TOP_K})"



def _member_rows(members: list[Run]) -> pd.DataFrame:
    rows = []
    for run in members:
        ckpt = member_checkpoint(run.path, run.metrics)  # a top-k member: its own checkpoint
        rows.append({"run": str(run.path), "model": run.model, "seed": run.seed, "fold": run.fold,
                     "test_auroc_mean": run.metrics.get("test/auroc_mean"),
                     "checkpoint": str(ckpt) if ckpt else "", "checkpoint_sha256": sha256(ckpt) if ckpt else "",
                     "predictions_sha256": sha256(run.path / PREDICTIONS_FILE)})
        if ckpt is None:
            log.warning("Member %s has no checkpoint (a chestx.evaluate folder, or a checkpoint deleted since?): its "
                        "predictions' digest identifies it", run.path)
    return pd.DataFrame(rows)


def _cost(members: list[Run]) -> dict[str, Any]:
    """Cost of running every member: summed params / MACs; images/s of the members one after the other."""
    def total(key: str) -> float | None:
        values = [r.metrics.get(key) for r in members]
        return None if any(v is None for v in values) else float(sum(values))

    rates = [r.metrics.get("infer_images_per_s") for r in members]
    rate = None if any(not v for v in rates) else 1.0 / sum(1.0 / float(v) for v in rates)
    return {"params": total("params"), "macs": total("macs"), "infer_images_per_s": rate,
            "image_size": members[0].metrics.get("image_size"), "train_images_per_s": None, "peak_memory_mb": None,
            "wall_time_s": total("wall_time_s"), "epochs": None, "best_epoch": None}


def _val_predictions(members: list[Run], combine: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray] | None:
    """Combined validation predictions when every member has them on the same images, else None."""
    read = []
    for run in members:
        path = run.path / VAL_PREDICTIONS_FILE
        if not path.is_file():
            return None
        ids, probs, labels, names = read_predictions(path)
        order = np.argsort(ids["image_id"].to_numpy(dtype=str), kind="stable")
        read.append((ids.iloc[order].reset_index(drop=True), probs[order], labels[order], names))
    ids0, _, labels0, names0 = read[0]
    if any(names != names0 or not ids["image_id"].equals(ids0["image_id"])
           or not np.array_equal(labels, labels0, equal_nan=True) for ids, _, labels, names in read[1:]):
        log.warning("The members' validation predictions differ in images or labels: no %s", VAL_PREDICTIONS_FILE)
        return None
    return ids0, combine_probs(np.stack([p for _, p, _, _ in read]), combine), labels0


def _tta_pass(members: list[Run], combine: str, ids: pd.DataFrame, labels: np.ndarray
              ) -> tuple[str, np.ndarray, float | None] | None:
    """The members' TTA passes (predictions_tta.csv) combined like their plain passes: (mode, probs (N, K) in the
    order of `ids`, images/s of running every member's pass one after the other), when every member has one, of one
    mode, on the ensemble's test images and labels. None (and a warning saying why) otherwise; None silently when no
    member has one."""
    have = [r for r in members if (r.path / PREDICTIONS_TTA_FILE).is_file()]
    if not have:
        return None
    if len(have) < len(members):
        log.warning("No ensemble %s: %d of %d members have no TTA pass (%s); train or evaluate every member with the "
                    "same tta=", PREDICTIONS_TTA_FILE, len(members) - len(have), len(members),
                    ", ".join(str(r.path) for r in members if r not in have))
        return None
    modes = {str(r.metrics.get("tta")) for r in members}
    if len(modes) > 1:
        log.warning("No ensemble %s: the members' TTA modes differ (%s)", PREDICTIONS_TTA_FILE, sorted(modes))
        return None
    position = pd.Series(np.arange(len(ids)), index=ids["image_id"].to_numpy(dtype=str))
    combined = []
    for run in members:
        tta_ids, probs, tta_labels, names = read_predictions(run.path / PREDICTIONS_TTA_FILE)
        image_ids = tta_ids["image_id"].to_numpy(dtype=str)
        if names != list(run.pathologies) or sorted(image_ids) != sorted(position.index):
            log.warning("No ensemble %s: %s's TTA pass is not on the ensemble's test images and pathologies",
                        PREDICTIONS_TTA_FILE, run.path)
            return None
        order = np.argsort(position.loc[image_ids].to_numpy(), kind="stable")  # rows in the order of `ids`
        if not np.array_equal(tta_labels[order], labels, equal_nan=True):
            log.warning("No ensemble %s: %s's TTA pass has other labels than its plain pass", PREDICTIONS_TTA_FILE,
                        run.path)
            return None
        combined.append(probs[order])
    rates = [r.metrics.get("tta_infer_images_per_s") for r in members]
    rate = None if any(not v for v in rates) else 1.0 / sum(1.0 / float(v) for v in rates)
    return modes.pop(), combine_probs(np.stack(combined), combine), rate


def build_ensemble(folders: list[Path], out: Path, combine: str = "prob", name: str | None = None) -> dict[str, Any]:
    """Combine the finished runs under `folders` into the run folder `out`; returns its metrics.json content."""
    if combine not in COMBINE:
        raise ReportError(f"combine={combine!r}: choose prob (mean of probabilities) or logit (mean of logits)")
    members = _load_members([Path(f) for f in folders])
    check_same_test_set(members)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids, _, labels = _aligned(members[0])
    probs = combine_probs(np.stack([_aligned(r)[1] for r in members]), combine)  # (N, K)
    pathologies = list(members[0].pathologies)
    write_predictions(out / PREDICTIONS_FILE, predictions_frame(ids, probs, labels, pathologies))
    val = _val_predictions(members, combine)
    if val is not None:
        write_predictions(out / VAL_PREDICTIONS_FILE, predictions_frame(*val, pathologies))
    table = write_auroc(out / AUROC_FILE, probs, labels, pathologies)
    tta = _tta_pass(members, combine, ids, labels)
    tta_metrics = {} if tta is None else write_tta_pass(out, ids, tta[1], labels, pathologies, tta[0], tta[2])
    rows = _member_rows(members)
    rows.to_csv(out / MEMBERS_FILE, index=False, float_format="%.6f")
    models = sorted({r.model for r in members})
    sources = {r.metrics.get("top_k_of") for r in members}
    top_k_of = sources.pop() if len(sources) == 1 and None not in sources else None  # the top k of one run
    label = name or (f"ensemble top-{len(members)} checkpoints {'+'.join(models)} ({combine})" if top_k_of
                     else f"ensemble {len(members)}x {'+'.join(models)} ({combine})")
    per = dict(zip(table["pathology"], table["auroc"]))
    metrics = {"status": "ok", "error": None, "model": label, "ensemble": True, "combine": combine,
               "members": [str(r.path) for r in members], "n_members": len(members),
               "seed": members[0].seed if top_k_of else None, "top_k_run": top_k_of,
               "test/auroc_mean": per.pop("mean"), **{f"test/auroc/{p}": v for p, v in per.items()},
               "n_test": len(ids), **_cost(members), **tta_metrics}
    write_metrics(out / METRICS_FILE, metrics)
    best = rows["test_auroc_mean"].astype(float).max()
    log.info("Ensemble of %d runs (%s): test mean AUROC %.4f, best member %.4f -> %s", len(members), combine,
             metrics["test/auroc_mean"], best, out)
    return metrics
