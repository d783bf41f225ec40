"""ONNX export of a loaded checkpoint (dynamic batch, chestx metadata) and its onnxruntime check.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from chestx.inference.predictor import Predictor
from chestx.models.losses import probabilities

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "probabilities")


class ExportedModel(nn.Module):
    """Backbone + positive-class probabilities: (B, C, S, S) -> (logits, probabilities)."""

    def __init__(self, net: nn.Module, multiclass: list[bool]) -> None:
        super().__init__()
        self.net = net
        self.multiclass = multiclass

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(image)  # (B, num_outputs), see OutputLayout
        return logits, probabilities(logits, self.multiclass)  # (B, K)


def metadata(predictor: Predictor) -> dict[str, str]:
    """Everything a consumer needs to preprocess and threshold, as strings."""
    return {
        "chestx.model": predictor.model_name,
        "chestx.pathologies": json.dumps(predictor.pathologies),
        "chestx.multiclass": json.dumps(predictor.multiclass),
        "chestx.image_size": str(predictor.image_size),
        "chestx.in_chans": str(predictor.in_chans),
        "chestx.normalization": predictor.normalization,
        "chestx.mean": json.dumps(list(predictor.transform.mean) if predictor.transform.mean is not None else None,
                                  default=float),
        "chestx.std": json.dumps(list(predictor.transform.std) if predictor.transform.std is not None else None,
                                 default=float),
        "chestx.thresholds": json.dumps([float(t) for t in predictor.thresholds]),
        "chestx.threshold_source": predictor.threshold_source,
        "chestx.checkpoint": str(predictor.ckpt_path),
    }


def export_onnx(predictor: Predictor, out: str | Path, opset: int = 18, dynamo: bool = True) -> Path:
    """Write the ONNX model with a dynamic batch axis and chestx metadata; returns its path."""
    import onnx

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = ExportedModel(predictor.net, predictor.multiclass).eval().cpu()
    example = torch.zeros(2, predictor.in_chans, predictor.image_size, predictor.image_size)  # (2, C, S, S)
    names = dict(input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), opset_version=opset)
    done = False
    if dynamo:
        try:
            batch = torch.export.Dim("batch", min=1, max=4096)
            chatty = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir")]  # log every graph rewrite at INFO
            levels = [lg.level for lg in chatty]
            for lg in chatty:
                lg.setLevel(logging.WARNING)
            try:
                torch.onnx.export(model, (example,), str(out), dynamo=True, dynamic_shapes=({0: batch},),
                                  verbose=False, **names)
            finally:
                for lg, level in zip(chatty, levels):
                    lg.setLevel(level)
            done = True
        except Exception as err:  # the TorchScript exporter handles some models Dynamo cannot trace
            log.warning("torch.export-based ONNX export failed (%s: %s); retrying with the TorchScript exporter",
                        type(err).__name__, str(err).splitlines()[0] if str(err) else "")
    if not done:
        axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
        torch.onnx.export(model, (example,), str(out), dynamo=False, dynamic_axes=axes, **names)
    proto = onnx.load(str(out))
    for key, value in metadata(predictor).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))  # weights inline (< 2 GB for every listed backbone)
    out.with_name(out.name + ".data").unlink(missing_ok=True)  # the exporter's external weights, now inline
    out.with_suffix(".json").write_text(json.dumps(metadata(predictor), indent=2))
    log.info("Wrote %s (%.1f MB, opset %d)", out, out.stat().st_size / 2**20, opset)
    return out


def check_onnx(path: str | Path, predictor: Predictor, images: Sequence[np.ndarray],
               batch_sizes: Sequence[int] = (2, 3)) -> dict[str, Any]:
    """Run onnxruntime and PyTorch on the first `b` images for each batch size b; max abs differences."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = ExportedModel(predictor.net, predictor.multiclass).eval()
    result: dict[str, Any] = {"batch_sizes": list(batch_sizes), "max_abs_diff_logits": 0.0,
                              "max_abs_diff_probabilities": 0.0}
    for b in batch_sizes:
        if len(images) < b:
            raise ValueError(f"check needs {b} readable images, got {len(images)}: pass check_inputs=<folder>")
        x = predictor.preprocess(images[:b])  # (b, C, S, S)
        with torch.no_grad():
            ref = [t.float().cpu().numpy() for t in model(x.to(predictor.device))]
        got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
        for name, r, g in zip(OUTPUT_NAMES, ref, got):
            if r.shape != g.shape:
                raise AssertionError(f"ONNX output {name} has shape {g.shape} for batch {b}, PyTorch {r.shape}")
            key = f"max_abs_diff_{name}"
            result[key] = max(result[key], float(np.max(np.abs(r - g))))
    result["max_abs_diff"] = max(result["max_abs_diff_logits"], result["max_abs_diff_probabilities"])
    return result
