"""ONNX export (chestx.inference.onnx, `python -m chestx.export`) of a real run's checkpoint: dynamic batch, metadata,
parity with PyTorch on real images; a mixed multiclass head."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chestx.inference.onnx import check_onnx, export_onnx
from chestx.inference.predictor import collect_images, load_for_inference, load_images


def test_onnx_export_of_a_mixed_multiclass_head(tmp_path: Path) -> None:
    """Per-pathology U-MultiClass (1 + 3 + 3 outputs): the exported probabilities are the layout's."""
    import onnxruntime as ort
    import torch
    from torch import nn

    from chestx.inference.predictor import Predictor
    from chestx.models.losses import OutputLayout

    torch.manual_seed(0)
    layout = OutputLayout([False, True, True], 3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, layout.num_outputs)).eval()
    predictor = Predictor(net=net, pathologies=["Atelectasis", "Edema", "Cardiomegaly"], multiclass=layout.multiclass,
                          image_size=8, in_chans=3, normalization="none", mean=None, std=None,
                          thresholds=np.full(3, 0.5), threshold_source="test", ckpt_path=tmp_path / "x.ckpt",
                          model_name="tiny")
    path = export_onnx(predictor, tmp_path / "mixed.onnx")
    x = torch.randn(5, 3, 8, 8)
    logits, probs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    assert logits.shape == (5, 7) and probs.shape == (5, 3)
    with torch.no_grad():
        np.testing.assert_allclose(probs, layout.probabilities(net(x)).numpy(), atol=1e-6)


@pytest.mark.slow
def test_cli_export_of_a_real_run_matches_pytorch_on_real_images(clinical_run_dir: Path, sample_root: Path,
                                                                 tmp_path: Path) -> None:
    """`python -m chestx.export ckpt=... hydra.run.dir=...` (a real subprocess) writes one self-contained ONNX file
    and its metadata into the run dir (nothing beside the checkpoint); onnxruntime on it equals PyTorch on real
    images at batch sizes never seen at export."""
    import subprocess
    import sys

    import onnx
    import onnxruntime as ort

    ckpt = clinical_run_dir / "checkpoints" / "best.ckpt"
    done = subprocess.run([sys.executable, "-m", "chestx.export", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path}",
                           "check_images=3"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    path = tmp_path / "best.onnx"
    assert path.is_file() and (tmp_path / "best.json").is_file()
    assert not ckpt.with_suffix(".onnx").exists(), "nothing is written beside the checkpoint"
    assert not (tmp_path / "best.onnx.data").exists(), "weights are stored inline, one file"

    predictor = load_for_inference(ckpt)
    _, images, failed = load_images(collect_images(sample_root / "images")[:4])
    assert not failed
    report = check_onnx(path, predictor, images, batch_sizes=(2, 3))
    print(f"ONNX vs PyTorch max abs diff: {report['max_abs_diff']:.3g}")
    assert report["max_abs_diff"] <= 1e-4

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = predictor.preprocess(images)  # (4, C, S, S): a batch size never seen at export
    logits, probs = session.run(None, {"image": x.numpy()})
    assert logits.shape == probs.shape == (4, len(predictor.pathologies))
    np.testing.assert_allclose(probs, predictor.probabilities(x), atol=1e-4)

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["chestx.pathologies"]) == predictor.pathologies
    assert int(meta["chestx.image_size"]) == predictor.image_size == 96
    np.testing.assert_allclose(json.loads(meta["chestx.thresholds"]), predictor.thresholds)
    assert json.loads((tmp_path / "best.json").read_text()) == meta
