"""`chestx.perf parts=[epoch]`: a real `python -m chestx.train` over the simulated full NIH tree, its phase times,
and the sampler of GPU / host memory (on this CPU machine the GPU columns say why they are empty)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chestx.throughput.epoch import PHASES, epoch_command, format_epoch, phase_seconds
from chestx.throughput.monitor import Sampler, process_tree, tree_pss_mb

ORDER = ("process_start", "first_log", "data_ready", "first_batch", "fit_end", "end")


def test_phase_durations_from_the_phase_times() -> None:
    phases = {"process_start": 100.0, "first_log": 104.5, "data_ready": 110.0, "first_batch": 112.0,
              "fit_end": 150.0, "end": 160.0}
    assert phase_seconds(phases, launched=99.9, exited=161.0) == pytest.approx(
        {"startup_s": 4.5, "data_setup_s": 5.5, "to_first_batch_s": 12.0, "fit_s": 38.0, "whole_process_s": 61.1})
    missing = phase_seconds({"process_start": 100.0, "first_log": 104.5}, launched=99.9, exited=110.0)
    assert missing["startup_s"] == pytest.approx(4.5) and missing["fit_s"] is None


def test_command_is_a_chestx_train_run_with_the_users_overrides_last(tmp_path: Path) -> None:
    command = epoch_command(tmp_path / "nih", tmp_path / "run", "resnet18", 32, 4, 8, 2, False, tmp_path / "cache",
                            "cpu", ["module.compile=true", "loader.batch_size=2"])
    assert command[:3] == [sys.executable, "-m", "chestx.train"]
    assert "data=nih" in command and f"data.root={tmp_path / 'nih'}" in command and "trainer.max_epochs=1" in command
    assert {"trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"} <= set(command)
    assert command[-2:] == ["module.compile=true", "loader.batch_size=2"]  # Hydra: the last value of a key wins
    whole = epoch_command(tmp_path / "nih", tmp_path / "run", "densenet121", 224, 128, 256, None, True,
                          tmp_path / "cache", "gpu")
    assert not any("limit_" in c for c in whole) and "data.cache=true" in whole and "trainer.accelerator=gpu" in whole


def test_sampler_follows_a_process_tree_and_says_why_gpu_columns_are_empty() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3)']); "
                              "x = bytearray(50 * 2**20); time.sleep(2); p.wait()"])
    time.sleep(0.5)
    assert len(process_tree(child.pid)) == 2  # the child and its own child
    sampler = Sampler(child.pid, interval=0.05, host_every=2, gpu=False).start()
    child.wait()
    samples = sampler.stop()
    assert samples.gpu_busy == [] and samples.gpu_note == "not measured: no GPU"
    assert max(samples.values(samples.host_pss_mb)) > 50  # the 50 MB buffer, plus two interpreters
    assert tree_pss_mb(child.pid) is None  # gone


def test_table_lists_every_phase_and_the_missing_gpu() -> None:
    run = {"run": 1, "startup_s": 4.5, "data_setup_s": 5.5, "to_first_batch_s": 12.0, "fit_s": 38.0,
           "whole_process_s": 61.1, "train_images_per_s": 3100.0, "infer_images_per_s": None, "compile": None,
           "gpu_note": "not measured: no GPU", "cache_built": False, "error": None}
    lines = "\n".join(format_epoch({"images": 112120, "model": "resnet18", "size": 32, "batch_size": 4,
                                    "limit_batches": 2, "cache": False, "args": [], "runs": [run]}))
    for _, label in PHASES:
        assert label in lines
    assert "3,100" in lines and "GPU columns: not measured: no GPU" in lines and "n/a" in lines


@pytest.mark.slow
def test_epoch_part_runs_chestx_train_and_orders_its_phases(nih_dir: Path, tmp_path: Path, monkeypatch,
                                                            capsys) -> None:
    """parts=[epoch] on the CPU with tiny settings: every phase present, positive and in order; the GPU columns
    say why they are empty; the run's own figures in perf.json and the table. No timing thresholds."""
    from chestx.perf import main

    run = tmp_path / "bench_run"
    monkeypatch.setattr(sys, "argv", ["chestx.perf", "parts=[epoch]", f"scale_nih={nih_dir}",
                                      f"scale_dir={tmp_path / 'tree'}", "size=32", "epoch_batch_size=4",
                                      "epoch_limit_batches=1", "device=cpu", f"hydra.run.dir={run}"])
    main()
    epoch = json.loads((run / "perf.json").read_text())["epoch"]
    (row,) = epoch["runs"]
    assert row["error"] is None and row["returncode"] == 0, row
    phases = row["phases"]
    assert all(phases[k] is not None and phases[k] > 0 for k in ORDER), phases
    times = [phases[k] for k in ORDER]
    assert times[:-1] == sorted(times[:-1]) and times[0] < times[1] < times[3] < times[4] <= times[5], phases
    assert row["launched"] <= phases["process_start"] + 0.5 and phases["end"] <= row["exited"]
    for key, _ in PHASES:
        assert row[key] > 0, key
    assert row["n_train"] == 78302 and row["train_images_per_s"] > 0 and row["infer_images_per_s"] > 0
    assert row["gpu_busy_mean_pct"] is None and row["gpu_note"].startswith("not measured")
    assert row["host_memory_peak_mb"] > 0 and row["main_process_rss_peak_mb"] > 0
    assert Path(row["run_dir"], "metrics.json").is_file()
    printed = capsys.readouterr().out
    assert "EPOCH" in printed and "time to the first training batch" in printed and "not measured" in printed
