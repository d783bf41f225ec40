"""chestx.bench on real 1024 px NIH originals: table, bench.json, target checks, option parsing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chestx.bench.__main__ import check_targets, main
from chestx.bench.loader import Decoder
from chestx.bench.training import Option
from chestx.data.cache import cached_pixels
from chestx.data.images import load_grayscale, resize_square


def test_decoders_agree_on_real_originals(fullres_fixtures: Path, tmp_path: Path) -> None:
    paths = sorted(fullres_fixtures.glob("*.png"))
    cache = cached_pixels(paths, 64, cache_dir=tmp_path, root=fullres_fixtures, workers=1)
    reference = resize_square(load_grayscale(paths[0]), 64).astype(np.int16)
    for method in ("pil", "opencv", "torchvision", "cache"):
        img = Decoder(method, paths, 64, cache if method == "cache" else None)(0)
        assert img.shape == (64, 64) and img.dtype == np.uint8, method
        # different resampling filters, same image: a few grey levels apart on average
        assert np.abs(img.astype(np.int16) - reference).mean() < 4.0, method


def test_loader_part_writes_table_and_json(fullres_fixtures: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    result = main(["--images", str(fullres_fixtures), "--parts", "loader", "--size", "64", "--workers", "1",
                   "--min-seconds", "0.05", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["n_images"] == 2 and saved["device"] == result["device"]
    methods = {(r["method"], r["workers"]) for r in saved["loader"]}
    assert methods == {(m, w) for m in ("pil", "opencv", "torchvision", "png_resized", "cache") for w in (0, 1)}
    assert all(r["images_per_s"] > 0 for r in saved["loader"])
    assert "cache_over_fastest_decode_per_core" in saved["targets"]
    printed = capsys.readouterr().out
    assert "LOADER" in printed and "TARGETS" in printed and str(out) in printed


@pytest.mark.slow
def test_train_part_lightning_vs_bare(fullres_fixtures: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    main(["--images", str(fullres_fixtures), "--parts", "train", "--size", "32", "--backbones", "resnet18",
          "--options", "32", "32+cl", "--batch-size", "2", "--eval-batch-size", "2", "--batches", "2",
          "--warmup", "1", "--repeats", "1", "--threads", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [(r["backbone"], r["option"]) for r in saved["train"]] == [("resnet18", "32-true"),
                                                                       ("resnet18", "32-true+channels_last")]
    for row in saved["train"]:
        assert row["lightning_images_per_s"] > 0 and row["bare_images_per_s"] > 0 and row["peak_memory_mb"] > 0
    assert len(saved["infer"]) == 2 and all(r["images_per_s"] > 0 for r in saved["infer"])
    assert "lightning_over_bare_cpu_worst" in saved["targets"]
    assert "TRAIN" in capsys.readouterr().out


def test_option_parsing_and_target_checks() -> None:
    assert Option.parse("bf16+cl+compile") == Option("bf16-mixed", True, True)
    assert Option.parse("32").name == "32-true"
    with pytest.raises(ValueError, match="--options entry 'fp8'"):
        Option.parse("fp8")
    result = {"device": "cuda", "loader": [], "train": [
        {"backbone": "densenet121", "size": 224, "option": "16-mixed+channels_last", "lightning_images_per_s": 2100.0,
         "bare_images_per_s": 2200.0, "lightning_over_bare": 0.95}]}
    assert check_targets(result)["gpu_densenet121_224_mixed_cl"]["met"] is True
    result["train"][0]["lightning_images_per_s"] = 1500.0
    assert check_targets(result)["gpu_densenet121_224_mixed_cl"]["met"] is False
