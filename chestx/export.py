"""Export a checkpoint to ONNX (dynamic batch) and check it against PyTorch with onnxruntime.

    python -m chestx.export ckpt=outputs/train/.../checkpoints/best.ckpt   # -> outputs/export/<date>/<time>/best.onnx
    python -m chestx.export ckpt=... hydra.run.dir=exported/ check_inputs=/folder/of/pngs

The graph maps `image` (B, C, S, S), preprocessed exactly as `chestx.inference.Predictor.preprocess`
does, to `logits` (B, num_outputs) (three per pathology under the CheXpert multiclass policy) and `probabilities`
(B, K). The preprocessing settings, pathologies and frozen thresholds are stored in the ONNX
metadata (`chestx.*` keys) and in a JSON file beside the model. Exported with the torch.export-based
exporter (`dynamo=True`, the default since torch 2.9; Dynamo falls back to the TorchScript exporter
with a warning if it fails), then run with onnxruntime on batches of 2 and 3 real images: the
largest absolute difference to PyTorch is printed, and above `atol` the command fails.
"""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from chestx._hydra import CONFIG_DIR, hydra_run_dir
from chestx.core.checkpoint_io import trust_setting
from chestx.inference.onnx import check_onnx, export_onnx
from chestx.inference.predictor import collect_images, load_for_inference, load_images


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    predictor = load_for_inference(cfg.ckpt, device="cpu", trust=trust_setting(cfg.get("trust_checkpoint")))
    out = hydra_run_dir() / (Path(cfg.ckpt).stem + ".onnx")
    export_onnx(predictor, out, opset=cfg.opset, dynamo=cfg.dynamo)
    files = collect_images(cfg.check_inputs)[: cfg.check_images]
    _, images, failed = load_images(files, dicom_window=predictor.dicom_window)
    report = check_onnx(out, predictor, images, batch_sizes=list(cfg.check_batch_sizes))
    print(f"Wrote {out}")
    print(f"onnxruntime vs PyTorch on {len(images)} real images, batch sizes {report['batch_sizes']}: "
          f"max abs diff logits {report['max_abs_diff_logits']:.3g}, "
          f"probabilities {report['max_abs_diff_probabilities']:.3g}")
    if report["max_abs_diff"] > cfg.atol:
        raise SystemExit(f"ONNX output differs from PyTorch by {report['max_abs_diff']:.3g} > atol={cfg.atol}")


if __name__ == "__main__":
    main()
