"""chestx.perf: the table, perf.json in the run folder, target checks, settings; the train part's batches are those
of chestx.train's datamodule (uint8 pixels, augmentation, device normalisation), proven against `chestx.train.build`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chestx.data.images.cache import cached_pixels
from chestx.data.images.read import load_grayscale, resize_square
from chestx.data.labels.table import NIH_PATHOLOGIES
from chestx.perf import main
from chestx.throughput.loader import Decoder
from chestx.throughput.suite import ALL_BACKBONES, check_targets, resolve_settings
from chestx.throughput.training import Option, make_datamodule, make_loader, to_model_input


def test_decoders_agree_on_real_originals(fullres_fixtures: Path, tmp_path: Path) -> None:
    paths = sorted(fullres_fixtures.glob("*.png"))
    cache = cached_pixels(paths, 64, cache_dir=tmp_path, root=fullres_fixtures, workers=1)
    reference = resize_square(load_grayscale(paths[0]), 64).astype(np.int16)
    for method in ("pil", "opencv", "torchvision", "cache"):
        img = Decoder(method, paths, 64, cache if method == "cache" else None)(0)
        assert img.shape == (64, 64) and img.dtype == np.uint8, method
        # different resampling filters, same image: a few grey levels apart on average
        assert np.abs(img.astype(np.int16) - reference).mean() < 4.0, method


def _bench(monkeypatch, *overrides: str) -> None:
    """`python -m chestx.perf <overrides>` run in-process."""
    monkeypatch.setattr(sys, "argv", ["chestx.perf", *overrides])
    main()


def test_loader_part_writes_into_the_hydra_run_dir(fullres_fixtures: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    run = tmp_path / "bench_run"
    _bench(monkeypatch, f"images={fullres_fixtures}", "parts=[loader]", "size=64", "workers=[1]", "min_seconds=0.05",
           f"hydra.run.dir={run}")
    assert {p.name for p in run.iterdir()} == {"perf.json", "perf.log", ".hydra"}
    saved = json.loads((run / "perf.json").read_text())
    assert saved["n_images"] == 2 and saved["size"] == 64 and "train" not in saved
    methods = {(r["method"], r["workers"]) for r in saved["loader"]}
    assert methods == {(m, w) for m in ("pil", "opencv", "torchvision", "png_resized", "cache") for w in (0, 1)}
    rate = {r["method"]: r["images_per_s"] for r in saved["loader"] if r["workers"] == 0}
    target = saved["targets"]["cache_over_fastest_decode_per_core"]
    assert target["value"] == pytest.approx(rate["cache"] / max(rate["pil"], rate["opencv"], rate["torchvision"]))
    printed = capsys.readouterr().out
    for r in saved["loader"]:  # the printed table is perf.json's rows
        assert f"{r['method']:<14}{r['source']:<22}{r['workers']:>8}{r['images_per_s']:>12.1f}" in printed
    assert "TARGETS" in printed and f"written: {run / 'perf.json'}" in printed


def _one_file_per_row(folder: Path, sources: list[Path], rows: dict[str, int]) -> list[Path]:
    """A file for each row BenchData would make (the sources in turn; train, then val, then test), as hard links,
    and a label CSV for `data=csv` (one row per image: that reader refuses a file listed twice) built with plain
    pandas: one patient per row, labels 0."""
    n = sum(rows.values())
    (folder / "images").mkdir()
    files = [folder / "images" / f"row{i:03d}.png" for i in range(n)]
    for i, file in enumerate(files):
        file.hardlink_to(sources[i % len(sources)])
    frame = pd.DataFrame({"path": [f.name for f in files], "patient": [f"p{i}" for i in range(n)],
                          "split": ["train"] * rows["train"] + ["val"] * rows["val"] + ["test"] * rows["test"]})
    for name in NIH_PATHOLOGIES:
        frame[name] = 0
    frame.to_csv(folder / "labels.csv", index=False)
    return files


def test_perf_batches_are_the_training_datamodules(sample_root: Path, compose, tmp_path: Path) -> None:
    """Part 1 of issue 19: the perf loops read what chestx.train reads. The same rows through `chestx.train.build`
    (data=csv) and through perf's `make_datamodule`: equal uint8 (B, 1, S, S) pixels after the same augmentation,
    equal targets, and equal model input after the transfer and the device normalisation."""
    from chestx.train import build

    size, batch, n_batches = 32, 4, 2
    rows = {"train": batch * n_batches, "val": 1, "test": batch * n_batches}
    files = _one_file_per_row(tmp_path, sorted((sample_root / "images").glob("*.png"))[:5], rows)
    cfg = compose(["data=csv", f"data.root={tmp_path / 'images'}", f"data.csv={tmp_path / 'labels.csv'}",
                   "data.image_column=path", "data.patient_column=patient", "data.split_column=split",
                   f"data.image_size={size}", f"loader.batch_size={batch}", f"loader.eval_batch_size={batch}",
                   "loader.num_workers=1", "loader.pin_memory=false", "data.cache=true",
                   f"data.cache_dir={tmp_path / 'cache'}", "model=resnet18", "logger=none", "trainer.accelerator=cpu"],
                  tmp_path / "run")
    _, training, _, _ = build(cfg, tmp_path / "run")
    perf = make_datamodule(files, size, batch, batch, n_batches, workers=1, pin_memory=False,
                           cache_dir=tmp_path / "cache")
    for train in (True, False):
        ours, theirs = list(make_loader(perf, train)), list(training.train_dataloader() if train
                                                             else training.test_dataloader())
        assert len(ours) == len(theirs) == n_batches
        for a, b in zip(ours, theirs):
            assert a["image"].dtype == torch.uint8 and a["image"].shape == (batch, 1, size, size)
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["index"], b["index"])
            assert torch.equal(a["target"], b["target"]) and torch.equal(a["uncertain"], b["uncertain"])
            x = to_model_input(perf, a, torch.device("cpu"))["image"]  # (B, 3, S, S) float32
            assert x.dtype == torch.float32 and x.shape == (batch, 3, size, size)
            assert torch.equal(x, training.on_after_batch_transfer(b, 0)["image"])

    # independent of both: the decoded, resized files; the test loader hands them over as they are, training augments
    def plain(table_rows) -> torch.Tensor:  # (B, 1, S, S) uint8
        return torch.stack([torch.from_numpy(resize_square(load_grayscale(files[int(r)]), size))[None]
                            for r in table_rows])

    first_train, first_test = next(iter(make_loader(perf, True))), next(iter(make_loader(perf, False)))
    assert torch.equal(first_test["image"], plain(first_test["index"] + rows["train"] + rows["val"]))
    assert not torch.equal(first_train["image"], plain(first_train["index"]))


@pytest.mark.slow
def test_train_part_lightning_vs_bare(fullres_fixtures: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    run = tmp_path / "bench_run"
    _bench(monkeypatch, f"images={fullres_fixtures}", "parts=[train]", "size=32", "backbones=[resnet18]",
           "options=[32,32+cl]", "batch_size=2", "eval_batch_size=2", "batches=2", "warmup=1", "repeats=1", "threads=1",
           f"hydra.run.dir={run}")
    saved = json.loads((run / "perf.json").read_text())
    assert [(r["backbone"], r["option"]) for r in saved["train"]] == [("resnet18", "32-true"),
                                                                       ("resnet18", "32-true+channels_last")]
    for row in saved["train"]:
        assert row["batch_size"] == 2 and row["size"] == 32 and row["workers"] == 0
        assert row["lightning_images_per_s"] > 0 and row["bare_images_per_s"] > 0
        assert row["lightning_over_bare"] == pytest.approx(row["lightning_images_per_s"] / row["bare_images_per_s"])
    assert [(r["option"], r["batch_size"]) for r in saved["infer"]] == [("32-true", 2), ("32-true+channels_last", 2)]
    worst = saved["targets"]["lightning_over_bare_cpu_worst"]["value"]
    assert worst == pytest.approx(min(r["lightning_over_bare"] for r in saved["train"]))
    assert saved["machine"]["torch_threads"] == 1 and "loader" not in saved
    assert "TRAIN" in capsys.readouterr().out


def test_bf16_only_where_the_hardware_has_it(monkeypatch) -> None:
    """A CPU without AVX512-BF16 / AMX-BF16 emulates bf16 (0.4 images/s): the default leaves it out."""
    import chestx.core.hardware as machine_info

    monkeypatch.setattr(machine_info, "cpu_flags", lambda: {"avx2", "fma"})
    assert resolve_settings(device="cpu").options == ["32", "32+cl"]
    monkeypatch.setattr(machine_info, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert resolve_settings(device="cpu").options == ["32", "32+cl", "bf16"]


def test_settings_follow_the_device_and_name_bad_values(monkeypatch, nih_dir: Path) -> None:
    import chestx.throughput.suite as suite

    monkeypatch.setattr(suite, "native_bf16", lambda device: True)
    monkeypatch.setattr("chestx.core.hardware.cores_available", lambda: 16)
    cpu, gpu = resolve_settings(device="cpu"), resolve_settings(device="cuda")
    assert (cpu.backbones, cpu.options, cpu.batch_size, cpu.batches, cpu.threads, cpu.train_workers) == (
        ["resnet18"], ["32", "32+cl", "bf16"], 8, 4, 1, 0)
    assert (gpu.backbones, gpu.options, gpu.batch_size, gpu.batches, gpu.threads, gpu.train_workers) == (
        ["densenet121"], ["32", "16+cl", "bf16+cl"], 64, 30, None, 15)  # chestx.train's loader workers on 16 cores
    assert (cpu.epoch_model, cpu.epoch_batch_size, cpu.epoch_limit_batches, cpu.epoch_cache) == ("resnet18", 8, 3, False)
    assert (gpu.epoch_model, gpu.epoch_batch_size, gpu.epoch_limit_batches, gpu.epoch_cache) == (
        "densenet121", 128, None, True)
    full = resolve_settings(device="cpu", full=True)
    assert full.backbones == ALL_BACKBONES and full.options[-1] == "32+compile" and full.batches == 10
    one = resolve_settings(device="cpu", parts="loader", options=[32, "bf16+cl"], workers=2, batches=3)
    assert (one.parts, one.options, one.workers, one.batches) == (["loader"], ["32", "bf16+cl"], [2], 3)
    epoch = resolve_settings(device="cpu", parts=["epoch"], scale_nih=nih_dir, epoch_args="module.compile=true",
                             epoch_runs=2, epoch_limit_batches=1)
    assert (epoch.epoch_args, epoch.epoch_runs, epoch.epoch_limit_batches) == (("module.compile=true",), 2, 1)
    with pytest.raises(ValueError,
                       match=r"parts=\['gpu'\]: choose from \['loader', 'train', 'scale', 'epoch', 'probe'\]"):
        resolve_settings(parts=["gpu"])
    with pytest.raises(ValueError, match="options entry 'fp8'"):
        resolve_settings(options=["32", "fp8"])
    with pytest.raises(FileNotFoundError, match="scale_nih=.*the scale and epoch parts need"):
        resolve_settings(parts=["epoch"], scale_nih=nih_dir / "absent")
    with pytest.raises(ValueError, match="epoch_runs=0"):
        resolve_settings(parts=["loader"], epoch_runs=0)


def test_option_parsing_and_target_checks() -> None:
    assert Option.parse("bf16+cl+compile") == Option("bf16-mixed", True, True)
    assert Option.parse("32").name == "32-true"
    with pytest.raises(ValueError, match="options entry 'fp8'"):
        Option.parse("fp8")
    result = {"device": "cuda", "loader": [], "train": [
        {"backbone": "densenet121", "size": 224, "option": "16-mixed+channels_last", "lightning_images_per_s": 3100.0,
         "bare_images_per_s": 2200.0, "lightning_over_bare": 0.95}]}
    assert check_targets(result)["gpu_densenet121_224_mixed_cl"]["met"] is True
    result["train"][0]["lightning_images_per_s"] = 2900.0  # the H200 target: 3,000 images/s
    assert check_targets(result)["gpu_densenet121_224_mixed_cl"]["met"] is False
    result["epoch"] = {"model": "densenet121", "size": 224, "runs": [{"train_images_per_s": 2500.0},
                                                                     {"train_images_per_s": 3050.0}]}
    assert check_targets(result)["gpu_densenet121_224_chestx_train"] == {"value": 3050.0, "target": 3000.0, "met": True}
    result["device"] = "cpu"  # a CPU epoch is no GPU figure
    assert "gpu_densenet121_224_chestx_train" not in check_targets(result)


@pytest.mark.slow
def test_scale_part_on_a_simulated_full_nih_tree(nih_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """112,120 real NIH names in NIH's archive layout; set-up, cache build and loader figures printed and saved."""
    run, tree = tmp_path / "bench_run", tmp_path / "tree"
    _bench(monkeypatch, "parts=[scale]", f"scale_nih={nih_dir}", "scale_images=300", f"scale_dir={tree}", "size=64",
           "workers=[1]", "min_seconds=0.3", f"hydra.run.dir={run}")
    root = tree / "nih_full"
    folders = sorted(root.glob("images_0*/images"))
    assert [len(list(f.iterdir())) for f in folders] == [4999] + [10000] * 10 + [7121]
    assert (folders[0] / "00000001_000.png").stat().st_nlink > 1  # hard links, not copies
    saved = json.loads((run / "perf.json").read_text())["scale"]
    setup = saved["setup"]
    assert (setup["n_train"] + setup["n_val"], setup["n_test"]) == (86524, 25596)  # NIH's official lists
    assert setup["seconds"] > 0 and setup["peak_memory_mb"] > 0 and saved["cache"]["images"] == 300
    rows = {(r["normalisation"], r["workers"]): r["images_per_s"] for r in saved["loader"]}
    assert set(rows) == {(n, w) for n in ("loader (float32 x 3)", "device (uint8 x 1)") for w in (0, 1)}
    printed = capsys.readouterr().out
    assert "SCALE" in printed and "scale_setup_seconds" in printed and "scale_loader_per_core_device_norm" in printed
    split = (tree / "split.csv").read_text().splitlines()
    assert len(split) == 112120 + 1
