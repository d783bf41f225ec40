"""chestx.predict on real NIH sample images of a real run's test split, with corrupt files among them."""
from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from chestx.inference.predictor import load_for_inference
from chestx.inference.batch import predict
from chestx.core.run_folder import read_predictions


@pytest.fixture(scope="module")
def folder(clinical_run_dir: Path, sample_root: Path, tmp_path_factory) -> tuple[Path, list[str]]:
    """5 test-split images (one re-saved as 16-bit PNG in a subfolder, one as RGB JPEG), a truncated PNG, a text file."""
    root = tmp_path_factory.mktemp("inputs")
    ids = pd.read_csv(clinical_run_dir / "predictions.csv", dtype=str)["image_id"].tolist()[:5]
    for name in ids[:3]:
        shutil.copy(sample_root / "images" / name, root / name)
    (root / "sub").mkdir()
    gray = cv2.imread(str(sample_root / "images" / ids[3]), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(root / "sub" / ids[3]), gray.astype(np.uint16) * 257)  # 16-bit: min-max back to 0..255
    rgb = cv2.imread(str(sample_root / "images" / ids[4]), cv2.IMREAD_COLOR)
    cv2.imwrite(str(root / Path(ids[4]).with_suffix(".JPG").name), rgb, [cv2.IMWRITE_JPEG_QUALITY, 95])
    data = (sample_root / "images" / ids[0]).read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "notes.jpeg").write_text("not an image")
    return root, ids


@pytest.mark.slow
def test_predict_folder_skips_corrupt_files(clinical_run_dir: Path, folder, sample_root: Path,
                                            tmp_path: Path) -> None:
    root, ids = folder
    predictor = load_for_inference(clinical_run_dir / "checkpoints" / "best.ckpt")
    assert predictor.threshold_source.endswith("thresholds.csv")
    out = predict(predictor, str(root), tmp_path, cam=True, labels=str(sample_root / "Data_Entry_sample.csv"))
    bad = pd.read_csv(tmp_path / "unreadable.csv")
    assert sorted(Path(p).name for p in bad["path"]) == ["notes.jpeg", "truncated.png"]
    assert bad["reason"].str.contains("truncated PNG").any()
    frame = pd.read_csv(tmp_path / "predictions.csv", dtype={"image_id": str, "patient_id": str})
    assert len(frame) == 5 and set(frame["image_id"]) == {*ids[:4], Path(ids[4]).with_suffix(".JPG").name}

    # probabilities equal the run's own test predictions for the lossless copies (same checkpoint, same preprocessing)
    run_ids, run_probs, run_labels, names = read_predictions(clinical_run_dir / "predictions.csv")
    _, probs, labels, _ = read_predictions(tmp_path / "predictions.csv")
    by_id = {i: r for r, i in enumerate(run_ids["image_id"])}
    for r, (image_id, path) in enumerate(zip(frame["image_id"], frame["path"])):
        if image_id not in by_id:
            continue
        np.testing.assert_array_equal(np.nan_to_num(labels[r], nan=-1), np.nan_to_num(run_labels[by_id[image_id]], nan=-1))
        if Path(path).parent.name != "sub":  # the 3 PNG copies
            np.testing.assert_allclose(probs[r], run_probs[by_id[image_id]], atol=1e-5)
            continue
        # the 16-bit PNG is decoded by the one rule for deep images (min-max to 0..255), computed here by hand
        gray = cv2.imread(str(sample_root / "images" / image_id), cv2.IMREAD_GRAYSCALE).astype(np.float64)
        stretched = np.rint((gray - gray.min()) * 255.0 / (gray.max() - gray.min())).astype(np.uint8)
        expected = predictor.probabilities(predictor.preprocess([stretched]))[0]
        np.testing.assert_allclose(probs[r], expected, atol=1e-5)

    thresholds = pd.read_csv(clinical_run_dir / "thresholds.csv")["threshold"].fillna(0.5).to_numpy()
    pred = frame[[f"pred_{n}" for n in names]].to_numpy()
    np.testing.assert_array_equal(pred, (probs >= thresholds).astype(int))
    heat = out["heatmaps"]
    assert len(heat) == int(pred.sum()) and all(Path(f).is_file() for f in heat["file"])


def test_named_pathologies_and_default_thresholds(clinical_run_dir: Path, folder, tmp_path: Path, caplog) -> None:
    root, ids = folder
    lone = tmp_path / "elsewhere" / "model.ckpt"  # a checkpoint outside its run folder: no thresholds.csv
    lone.parent.mkdir()
    shutil.copy(clinical_run_dir / "checkpoints" / "best.ckpt", lone)
    with caplog.at_level(logging.WARNING):
        predictor = load_for_inference(lone)
    assert "threshold 0.5" in caplog.text and np.all(predictor.thresholds == 0.5)
    out = predict(predictor, [str(root / ids[0])], tmp_path / "out", cam=True, cam_pathologies=["pleural thickening"])
    assert out["heatmaps"]["pathology"].tolist() == ["Pleural_Thickening"]
    with pytest.raises(ValueError, match="Pleural_Thickening"):
        predict(predictor, [str(root / ids[0])], tmp_path / "out2", cam=True, cam_pathologies=["Pleural"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        predict(predictor, [str(tmp_path / "nowhere.png")], tmp_path / "out3")


def test_cli_prints_table_and_skips_corrupt(clinical_run_dir: Path, folder, sample_root: Path, tmp_path: Path,
                                           monkeypatch, capsys) -> None:
    """`python -m chestx.predict ... hydra.run.dir=...` run in-process (same argv parsing, no interpreter start-up)."""
    from chestx.predict import main

    root, ids = folder
    out = tmp_path / "predict_run"
    monkeypatch.setattr(sys, "argv", [
        "chestx.predict", f"ckpt={clinical_run_dir / 'checkpoints' / 'best.ckpt'}", f"inputs={root}",
        f"hydra.run.dir={out}", f"labels={sample_root / 'Data_Entry_sample.csv'}",
    ])
    main()
    printed = capsys.readouterr().out
    assert printed.count("== ") == 5 and "truth" in printed
    assert "unreadable, skipped:" in printed and "truncated.png" in printed
    assert f"Wrote {out / 'predictions.csv'} (5 images, 2 unreadable)" in printed
    assert (out / "predictions.csv").is_file() and (out / "unreadable.csv").is_file() and (out / "predict.log").is_file()
