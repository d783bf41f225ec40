"""One code path from a checkpoint to predictions: model, preprocessing, frozen thresholds, heatmaps.

`load_for_inference(ckpt)` reads the file without running code (`chestx.core.checkpoint_io.load_checkpoint`:
weights_only, a file that needs more is refused unless `trust=True`, the `trust_checkpoint=true` of the entry points),
rebuilds the backbone from the plain fields saved in the checkpoint
(`checkpoint["chestx"]`, see `chestx.models.module.ChestXModule.on_save_checkpoint`), loads its
weights, builds the evaluation transform with the saved image size / channels / normalisation,
and reads the decision thresholds from `thresholds.csv` in the checkpoint's run folder
(`<run>/checkpoints/x.ckpt` -> `<run>/thresholds.csv`, written by `chestx.clinical`); without
that file every threshold is 0.5, with a warning. `chestx.predict`, `chestx.export` and the
clinical step of `chestx.train` all use it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from chestx.core.checkpoint_io import CheckpointError, load_checkpoint
from chestx.core.run_folder import THRESHOLDS_FILE, run_dir_of_checkpoint
from chestx.data.images.read import ImageReadError, load_grayscale
from chestx.data.labels.table import find_pathology
from chestx.data.loading.transforms import build_transform
from chestx.inference.tta import check_tta, tta_input_size, tta_probabilities
from chestx.models.backbones import create_backbone
from chestx.models.losses import OutputLayout, probabilities

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


@dataclass
class Predictor:
    """A loaded checkpoint: backbone in eval mode, its preprocessing and its frozen thresholds."""

    net: nn.Module
    pathologies: list[str]
    multiclass: list[bool]  # (K,) per pathology: three logits (U-MultiClass) or one
    image_size: int
    in_chans: int
    normalization: str
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    thresholds: np.ndarray  # (K,) float64, prob >= threshold is positive
    threshold_source: str
    ckpt_path: Path
    model_name: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dicom_window: str = "voi"  # how DICOM inputs become uint8, as in training (data.dicom_window)
    tta: str = "none"  # test-time augmentation of `tta_probabilities` (chestx.inference.tta): none | hflip | tencrop

    def __post_init__(self) -> None:
        self.transform: Callable[[np.ndarray], torch.Tensor] = build_transform(
            self.image_size, train=False, in_chans=self.in_chans, normalization=self.normalization,
            mean=self.mean, std=self.std,
        )
        # the TTA pass's input: resized to 8/7 of the model's side for ten-crop, the plain transform otherwise
        size = tta_input_size(self.image_size, self.tta)
        self.tta_transform: Callable[[np.ndarray], torch.Tensor] = self.transform if size == self.image_size else \
            build_transform(size, train=False, in_chans=self.in_chans, normalization=self.normalization,
                            mean=self.mean, std=self.std)

    @property
    def run_dir(self) -> Path:
        return run_dir_of_checkpoint(self.ckpt_path)

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 (H, W) images -> (B, C, S, S) float32 model input."""
        return torch.stack([self.transform(img) for img in images])

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> raw net output (B, num_outputs), laid out as `OutputLayout(multiclass)`."""
        return self.net(x.to(self.device)).float().cpu()

    def probabilities(self, x: torch.Tensor) -> np.ndarray:
        """(B, C, S, S) -> positive-class probabilities (B, K) float64."""
        return probabilities(self.logits(x), self.multiclass).numpy().astype(np.float64)

    def tta_probabilities(self, x: torch.Tensor) -> np.ndarray:
        """(B, C, R, R) from `tta_transform` -> (B, K) float64: the mean of the views' probabilities, every view of
        the batch in one forward pass (`chestx.inference.tta`)."""
        def probs(views: torch.Tensor) -> torch.Tensor:
            return probabilities(self.logits(views), self.multiclass)

        return tta_probabilities(x, self.tta, self.image_size, probs).numpy().astype(np.float64)

    def positives(self, probs: np.ndarray) -> np.ndarray:
        """(B, K) probabilities -> (B, K) bool, positive at the frozen thresholds."""
        return np.asarray(probs) >= self.thresholds[None, :]

    def pathology_index(self, name: str) -> int:
        """Column of a pathology, forgiving case and '_' vs ' '."""
        return find_pathology(name, self.pathologies, hint=" that this model predicts")

    def cams(self, x: torch.Tensor, classes: Sequence[Sequence[int]], target_layer: str | None = None) -> np.ndarray:
        """Grad-CAM heatmaps (N, S, S) in [0, 1], one per (image, class) pair (see chestx.explain.gradcam)."""
        from chestx.explain.gradcam import compute_cams

        return compute_cams(self.net, x.to(self.device), [list(c) for c in classes],
                            target_layer_name=target_layer or self.model_name, multiclass=self.multiclass)


def read_thresholds(path: str | Path, pathologies: Sequence[str]) -> np.ndarray:
    """thresholds.csv (pathology, threshold, ...) -> (K,) in `pathologies` order; missing or NaN -> 0.5 (warned)."""
    table = pd.read_csv(path)
    if not {"pathology", "threshold"} <= set(table.columns):
        raise CheckpointError(f"{path} must have columns pathology, threshold; found {list(table.columns)}")
    by_name = dict(zip(table["pathology"].astype(str), table["threshold"].astype(float)))
    out = np.array([by_name.get(p, math.nan) for p in pathologies], dtype=np.float64)
    bad = [p for p, t in zip(pathologies, out) if not np.isfinite(t)]
    if bad:
        log.warning("%s has no usable threshold for %s: using %.1f for those", path, bad, DEFAULT_THRESHOLD)
        out[~np.isfinite(out)] = DEFAULT_THRESHOLD
    return out


def load_for_inference(
    ckpt: str | Path, thresholds: str | Path | None = None, device: str = "cpu", trust: bool = False,
    tta: str = "none",
) -> Predictor:
    """Checkpoint -> Predictor. `thresholds`: a thresholds.csv; default `<run>/thresholds.csv`, else 0.5.
    `trust`: load a checkpoint that needs more than tensors and plain values (runs its code; see checkpoint_io).
    `tta`: the test-time augmentation of `Predictor.tta_probabilities` (none | hflip | tencrop)."""
    check_tta(tta)
    ckpt_path = Path(ckpt).expanduser()
    checkpoint = load_checkpoint(ckpt_path, trust=trust)
    info, model = _run_info(checkpoint, ckpt_path)
    pathologies = list(info["pathologies"])
    layout = OutputLayout(info.get("multiclass", False), len(pathologies))  # older checkpoints store one bool
    net = _load_net(checkpoint, model, layout)
    dev = torch.device(device)
    net.eval().to(dev)
    values, source = _frozen_thresholds(thresholds, run_dir_of_checkpoint(ckpt_path), pathologies)
    mean, std = info.get("mean"), info.get("std")
    predictor = Predictor(
        net=net, pathologies=pathologies, multiclass=layout.multiclass, image_size=int(info["image_size"]),
        in_chans=int(info["in_chans"]), normalization=str(info["normalization"]),
        mean=tuple(mean) if mean is not None else None, std=tuple(std) if std is not None else None,
        thresholds=values, threshold_source=source, ckpt_path=ckpt_path,
        model_name=str(model["name"]), device=dev, dicom_window=str(info.get("dicom_window") or "voi"), tta=tta,
    )
    log.info("Loaded %s: %s, %d pathologies, %d px, thresholds from %s", ckpt_path, predictor.model_name,
             len(pathologies), predictor.image_size, source)
    return predictor


def _run_info(checkpoint: Any, ckpt_path: Path) -> tuple[dict, dict]:
    """(checkpoint["chestx"], its model config); a checkpoint without them was not written by chestx.train."""
    info = (checkpoint.get("chestx") if isinstance(checkpoint, dict) else None) or {}
    model = info.get("model") or (info.get("config") or {}).get("model")  # older checkpoints: the whole config
    if not model or not info.get("pathologies"):
        raise CheckpointError(
            f"ckpt={str(ckpt_path)!r} carries no chestx run info (checkpoint['chestx']); only checkpoints written "
            "by `python -m chestx.train` can be loaded"
        )
    return info, model


def _load_net(checkpoint: dict, model: dict, layout: OutputLayout) -> nn.Module:
    """The backbone rebuilt from the saved model config, with the checkpoint's `net.*` weights (strict)."""
    if model.get("kind") in ("hf", "open_clip"):  # transformers / open_clip: the saved architecture, no hub files
        from chestx.models.encoders import create_hf_encoder, create_open_clip_encoder

        factory = create_hf_encoder if model["kind"] == "hf" else create_open_clip_encoder
        net = factory(str(model["name"]), layout.num_outputs, in_chans=int(model.get("in_chans", 3)),
                      drop_rate=float(model.get("drop_rate") or 0.0), arch_config=dict(model["arch_config"]))
    else:
        net = create_backbone(str(model["name"]), layout.num_outputs, in_chans=int(model.get("in_chans", 3)),
                              drop_rate=float(model.get("drop_rate") or 0.0))
    state = {k[len("net."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)  # strict: a mismatch is a wrong checkpoint, not something to hide
    return net


def _frozen_thresholds(thresholds: str | Path | None, run_dir: Path, pathologies: list[str]) -> tuple[np.ndarray, str]:
    """(K,) thresholds and where they came from: `thresholds`, else `<run>/thresholds.csv`, else 0.5 (warned)."""
    threshold_path = Path(thresholds) if thresholds else run_dir / THRESHOLDS_FILE
    if threshold_path.is_file():
        return read_thresholds(threshold_path, pathologies), str(threshold_path)
    if thresholds:
        raise CheckpointError(f"thresholds={str(threshold_path)!r} does not exist")
    log.warning("no %s beside the checkpoint (%s): every pathology uses threshold %.1f; run the clinical "
                "step (chestx.clinical) to freeze validation thresholds", THRESHOLDS_FILE, run_dir, DEFAULT_THRESHOLD)
    return np.full(len(pathologies), DEFAULT_THRESHOLD), "default 0.5"


def collect_images(inputs: str | Path | Iterable[str | Path], recursive: bool = True) -> list[Path]:
    """Files and folders -> sorted image files (.png/.jpg/.jpeg/.dcm/.dicom, any case). A missing path is an error."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    files: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            pattern = path.rglob("*") if recursive else path.glob("*")
            found = sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                log.warning("no PNG/JPEG/DICOM files in folder %s", path)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"inputs: {str(path)!r} is neither a file nor a folder")
    return files


def load_images(paths: Sequence[Path], dicom_window: str = "voi"
                ) -> tuple[list[Path], list[np.ndarray], list[tuple[Path, str]]]:
    """Read every file; unreadable ones are returned as (path, reason) and skipped, never raised.

    `dicom_window`: how DICOM values become 0..255 (data.dicom_window of training; chestx.data.images.dicom).
    """
    ok: list[Path] = []
    images: list[np.ndarray] = []
    failed: list[tuple[Path, str]] = []
    for path in paths:
        try:
            images.append(load_grayscale(path, dicom_window=dicom_window))  # (H, W) uint8
            ok.append(path)
        except ImageReadError as err:
            log.warning("skipping %s", err)
            failed.append((path, str(err)))
    return ok, images, failed


def heatmap_classes(
    predictor: Predictor, probs: np.ndarray, pathologies: Sequence[str] | None = None
) -> list[list[int]]:
    """Per image, the classes to explain: the named `pathologies`, else those positive at the thresholds."""
    if pathologies:
        chosen = [predictor.pathology_index(p) for p in pathologies]
        return [list(chosen) for _ in range(len(probs))]
    return [list(np.flatnonzero(row)) for row in predictor.positives(probs)]


def write_heatmaps(
    predictor: Predictor,
    names: Sequence[str],
    images: Sequence[np.ndarray],
    x: torch.Tensor,
    probs: np.ndarray,
    out_dir: Path,
    classes: Sequence[Sequence[int]],
    target_layer: str | None = None,
) -> pd.DataFrame:
    """Grad-CAM overlays on the loaded X-rays, one PNG per (image, class): `<out_dir>/<stem>_<pathology>.png`.

    names: (B,) image names; images: (B,) uint8 (H, W) as loaded; x: (B, C, S, S) model input;
    probs: (B, K). Returns a table image_id, pathology, probability, positive, file.
    """
    from chestx.explain.overlay import save_heatmap
    from chestx.explain.overlay import overlay

    out_dir = Path(out_dir)
    rows: list[dict[str, Any]] = []
    if not any(len(c) for c in classes):
        return pd.DataFrame(rows, columns=["image_id", "pathology", "probability", "positive", "file"])
    cams = predictor.cams(x, classes, target_layer)  # (N, S, S), image-major
    n = 0
    for i, cls in enumerate(classes):
        for k in cls:
            name, prob = predictor.pathologies[k], float(probs[i, k])
            positive = bool(prob >= predictor.thresholds[k])
            file = out_dir / f"{Path(names[i]).stem}_{name.replace(' ', '_')}.png"
            title = f"{names[i]}\n{name}: p={prob:.3f} ({'positive' if positive else 'negative'} at t={predictor.thresholds[k]:.3f})"
            save_heatmap(file, overlay(images[i], cams[n]), title)
            rows.append({"image_id": names[i], "pathology": name, "probability": prob, "positive": positive,
                         "file": str(file)})
            n += 1
    log.info("Wrote %d Grad-CAM heatmaps to %s", n, out_dir)
    return pd.DataFrame(rows)
