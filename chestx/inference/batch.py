"""Predicting image files with a loaded checkpoint: probabilities, frozen-threshold calls, ground truth
from a label file, Grad-CAM heatmaps and the pointing game (`chestx.predict`).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from chestx.core.run_folder import (
    HEATMAP_DIR, LOCALIZATION_FILE, POINTING_GAME_FILE, PREDICTIONS_FILE, PREDICTIONS_TTA_FILE, UNREADABLE_FILE,
    predictions_frame,
    read_predictions, write_predictions,
)
from chestx.inference.predictor import (
    IMAGE_SUFFIXES, Predictor, collect_images, heatmap_classes, load_images, write_heatmaps,
)

log = logging.getLogger(__name__)

PRED_PREFIX = "pred_"


def read_ground_truth(path: str | Path, pathologies: Sequence[str]) -> dict[str, tuple[str, np.ndarray]]:
    """Labels CSV -> {key: (patient_id, (K,) labels)} keyed by image file name and by relative path.

    Accepts NIH's `Data_Entry_2017*.csv` (or the sample's), CheXpert's `train.csv`/`valid.csv`
    (uncertain -> unknown) and a chestx `predictions.csv` (image_id, label_<P>).
    """
    from chestx.data.datasets.chexpert import read_chexpert
    from chestx.data.labels.table import NIH_PATHOLOGIES, NO_FINDING

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"labels={str(path)!r} does not exist; pass a NIH or CheXpert label CSV")
    columns = set(pd.read_csv(path, nrows=0).columns)
    if "Finding Labels" in columns:
        from chestx.data.datasets.nih import read_nih

        names = [p for p in pathologies if p in NIH_PATHOLOGIES]
        table = read_nih(path, names, include_no_finding=NO_FINDING in pathologies)
        frame, labels, have = table.frame, table.labels, table.pathologies
    elif "Path" in columns:
        table = read_chexpert(path, [p for p in pathologies], uncertainty="ignore")
        frame, labels, have = table.frame, table.labels, table.pathologies
    elif "image_id" in columns:
        frame, _, labels, have = read_predictions(path)
    else:
        raise ValueError(f"labels={str(path)!r}: not a NIH, CheXpert or chestx predictions CSV "
                         f"(columns {sorted(columns)[:8]})")
    index = [have.index(p) if p in have else None for p in pathologies]
    aligned = np.stack([labels[:, i] if i is not None else np.full(len(frame), np.nan) for i in index], axis=1)
    out: dict[str, tuple[str, np.ndarray]] = {}
    for row, (image_id, patient) in enumerate(zip(frame["image_id"].astype(str), frame["patient_id"].astype(str))):
        out[image_id] = out[Path(image_id).name] = (patient, aligned[row].astype(np.float64))
        if "path" in frame.columns:
            out[str(frame["path"].iloc[row])] = (patient, aligned[row].astype(np.float64))
    return out


def _lookup(truth: dict[str, tuple[str, np.ndarray]], path: Path) -> tuple[str, np.ndarray] | None:
    parts = path.parts
    for start in range(len(parts)):  # longest path suffix first, ending with the bare file name
        hit = truth.get("/".join(parts[start:]))
        if hit is not None:
            return hit
    return None


@dataclass
class Predictions:
    """What the batches of one `predict` call gathered, in input order."""

    paths: list[Path] = field(default_factory=list)  # readable inputs
    probs: list[np.ndarray] = field(default_factory=list)  # per batch (B, K)
    tta_probs: list[np.ndarray] = field(default_factory=list)  # per batch (B, K), with predictor.tta != "none"
    truth: list[np.ndarray] = field(default_factory=list)  # per image (K,) 1/0/NaN
    patients: list[str] = field(default_factory=list)  # per image, "" without a label row
    failed: list[tuple[Path, str]] = field(default_factory=list)  # unreadable inputs and why
    heatmaps: list[pd.DataFrame] = field(default_factory=list)
    boxes: list[dict[str, Any]] = field(default_factory=list)  # pointing-game rows


def predict_batches(predictor: Predictor, files: list[Path], batch_size: int, truth: dict, boxes: pd.DataFrame | None,
                    heatmap_dir: Path | None, cam_pathologies: Sequence[str] | None,
                    target_layer: str | None, dicom_window: str = "voi") -> Predictions:
    """Decode, preprocess and score `files` batch by batch; unreadable files are listed, never fatal."""
    out = Predictions()
    k = len(predictor.pathologies)
    for start in range(0, len(files), batch_size):
        paths, images, bad = load_images(files[start:start + batch_size], dicom_window=dicom_window)
        out.failed.extend(bad)
        if not paths:
            continue
        try:
            x = predictor.preprocess(images)  # (B, C, S, S)
        except ValueError as err:  # e.g. a decoded image the transform rejects
            out.failed.extend((p, f"{type(err).__name__}: {err}") for p in paths)
            continue
        probs = predictor.probabilities(x)  # (B, K)
        if predictor.tta != "none":  # ten-crop reads its own larger resize; hflip the same input
            x_tta = x if predictor.tta_transform is predictor.transform else \
                torch.stack([predictor.tta_transform(img) for img in images])  # (B, C, R, R)
            out.tta_probs.append(predictor.tta_probabilities(x_tta))  # (B, K)
        names = [p.name for p in paths]
        for p in paths:
            hit = _lookup(truth, p) if truth else None
            out.patients.append(hit[0] if hit else "")
            out.truth.append(hit[1] if hit else np.full(k, np.nan))
        out.paths.extend(paths)
        out.probs.append(probs)
        if heatmap_dir is not None:
            classes = heatmap_classes(predictor, probs, cam_pathologies)
            out.heatmaps.append(write_heatmaps(predictor, names, images, x, probs, heatmap_dir, classes, target_layer))
        if boxes is not None:
            from chestx.explain.pointing_game import pointing_game_rows

            out.boxes.extend(pointing_game_rows(predictor, names, images, x, probs, boxes, heatmap_dir=heatmap_dir,
                                                target_layer=target_layer))
    return out


def prediction_frame(predictor: Predictor, gathered: Predictions, tta: bool = False) -> pd.DataFrame:
    """predictions.csv of `chestx.predict`: image_id, patient_id, path, prob_<P>, label_<P>, pred_<P>; `tta`: the
    TTA pass's probabilities (predictions_tta.csv)."""
    probs = np.concatenate(gathered.tta_probs if tta else gathered.probs)  # (N, K)
    ids = pd.DataFrame({"image_id": [p.name for p in gathered.paths], "patient_id": gathered.patients})
    frame = predictions_frame(ids, probs, np.stack(gathered.truth).astype(np.float32), predictor.pathologies)
    frame.insert(2, "path", [str(p) for p in gathered.paths])
    positive = predictor.positives(probs)
    for j, name in enumerate(predictor.pathologies):
        frame[PRED_PREFIX + name] = positive[:, j].astype(int)
    return frame


def predict(
    predictor: Predictor,
    inputs: str | Sequence[str],
    out_dir: str | Path,
    cam: bool = False,
    cam_pathologies: Sequence[str] | None = None,
    labels: str | None = None,
    bbox: str | None = None,
    batch_size: int = 16,
    target_layer: str | None = None,
    recursive: bool = True,
    dicom_window: str = "voi",
) -> dict[str, Any]:
    """Run the predictor on every readable file; write the output files; return the tables."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = collect_images(inputs, recursive=recursive)
    if not files:
        raise FileNotFoundError(f"inputs={inputs!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    truth = read_ground_truth(labels, predictor.pathologies) if labels else {}
    boxes = None
    if bbox:
        from chestx.explain.pointing_game import read_boxes

        boxes = read_boxes(bbox)
    gathered = predict_batches(predictor, files, batch_size, truth, boxes, out_dir / HEATMAP_DIR if cam else None,
                               cam_pathologies, target_layer, dicom_window)
    return write_prediction_files(predictor, gathered, out_dir, len(files), labels if truth else None, bbox, cam)


def write_prediction_files(predictor: Predictor, gathered: Predictions, out_dir: Path, n_files: int,
                           labels: str | None, bbox: str | None, cam: bool = False) -> dict[str, Any]:
    """predictions.csv, unreadable.csv (when files were skipped), localization.csv and pointing_game.csv (with
    boxes); returns the tables (`format_result` prints them)."""
    failed = pd.DataFrame([(str(p), r) for p, r in gathered.failed], columns=["path", "reason"])
    if len(failed):
        failed.to_csv(out_dir / UNREADABLE_FILE, index=False)
        log.warning("%d of %d files could not be read and were skipped (listed in %s)", len(failed), n_files,
                    out_dir / UNREADABLE_FILE)
    if not gathered.paths:
        raise RuntimeError(f"none of the {n_files} input files could be read; see {out_dir / UNREADABLE_FILE}")
    if labels and not any(gathered.patients):
        log.warning("none of the %d images has a row in labels=%s: ground truth is empty", len(gathered.paths), labels)
    frame = prediction_frame(predictor, gathered)
    write_predictions(out_dir / PREDICTIONS_FILE, frame)
    if gathered.tta_probs:
        write_predictions(out_dir / PREDICTIONS_TTA_FILE, prediction_frame(predictor, gathered, tta=True))
        log.info("tta=%s: the mean of the views' probabilities in %s", predictor.tta, out_dir / PREDICTIONS_TTA_FILE)
    probs = np.concatenate(gathered.probs)
    result: dict[str, Any] = {"failed": failed, "predictions": frame, "probs": probs,
                              "positive": predictor.positives(probs), "labels": np.stack(gathered.truth),
                              "has_labels": bool(labels)}
    if cam:
        result["heatmaps"] = pd.concat(gathered.heatmaps, ignore_index=True) if gathered.heatmaps else pd.DataFrame()
    if bbox is not None:
        from chestx.explain.pointing_game import summarize_pointing_game

        rows = pd.DataFrame(gathered.boxes)
        rows.to_csv(out_dir / LOCALIZATION_FILE, index=False, float_format="%.6g")
        summary = summarize_pointing_game(rows)
        summary.to_csv(out_dir / POINTING_GAME_FILE, index=False, float_format="%.6g")
        result.update(localization=rows, pointing_game=summary)
        if rows.empty:
            log.warning("None of the %d input images has a box in %s", len(gathered.paths), bbox)
    log.info("Predicted %d images (%d unreadable); wrote %s", len(gathered.paths), len(failed),
             out_dir / PREDICTIONS_FILE)
    return result


def format_image_table(predictor: Predictor, name: str, probs: np.ndarray, labels: np.ndarray | None) -> str:
    """The per-image table printed by the command: pathology, probability, threshold, positive, truth."""
    lines = [f"== {name}", f"{'pathology':<28} {'prob':>6} {'thresh':>6} {'positive':>8}" + (f" {'truth':>5}" if labels is not None else "")]
    for j, pathology in enumerate(predictor.pathologies):
        line = (f"{pathology:<28} {probs[j]:6.3f} {predictor.thresholds[j]:6.3f} "
                f"{'yes' if probs[j] >= predictor.thresholds[j] else '-':>8}")
        if labels is not None:
            line += f" {'?' if math.isnan(labels[j]) else int(labels[j]):>5}"
        lines.append(line)
    return "\n".join(lines)


def format_result(predictor: Predictor, result: dict[str, Any], out_dir: Path, show: bool = True,
                  bbox: str | None = None) -> str:
    """What the command prints: the per-image tables (`show`), skipped files, the pointing game, the output."""
    lines = []
    if show:
        lines += [format_image_table(predictor, name, result["probs"][i],
                                     result["labels"][i] if result["has_labels"] else None)
                  for i, name in enumerate(result["predictions"]["image_id"])]
    lines += [f"unreadable, skipped: {row.path} ({row.reason})" for row in result["failed"].itertuples()]
    if "pointing_game" in result:
        if result["pointing_game"].empty:
            lines.append(f"Pointing game: none of the inputs has a box in {bbox}")
        else:
            lines += ["Pointing game (heatmap peak inside a box or on a mask of the finding):",
                      result["pointing_game"].to_string(index=False)]
    lines.append(f"Wrote {out_dir / PREDICTIONS_FILE} ({len(result['predictions'])} images, "
                 f"{len(result['failed'])} unreadable)")
    return "\n".join(lines)
