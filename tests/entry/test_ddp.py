"""DDP correctness on CPU processes (gloo): scoring one checkpoint with `trainer=ddp_cpu` gives the
same predictions.csv (every image once, same probabilities) and the same AUROC as one process, for
2 processes on one node and for 2 nodes x 1 process.

The split ratios give 93 validation and 155 test images of the real embedded NIH sample: odd, so
the DistributedSampler pads each split with a repeated image, and with eval batches of 8 neither
is a multiple of world size x batch. Lightning's ddp launcher re-executes the command line, so the
DDP run is a subprocess of `python -m chestx.train fit=false ckpt_path=...`; it reads pixels from
the cache (`data.cache=true`, built under a file lock by whichever rank comes first), the
single-process run decodes files, so the comparison also checks cached == uncached pixels.

The 2-node run starts one such command per "node" on this machine, as a user of a cluster without a
scheduler would (Lightning's `LightningEnvironment`): `NODE_RANK`, `MASTER_ADDR`, `MASTER_PORT`.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from chestx.core.run_folder import read_predictions
from chestx.train import train
SPLIT = ["data.ratios=[0.6,0.15,0.25]", "loader.eval_batch_size=8", "clinical=none"]
WORLD = 2
# variables a distributed run reads: none may leak into the DDP subprocess from another test of this worker
# (GROUP_RANK: LightningEnvironment's node rank when NODE_RANK is unset)
DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "GLOBAL_RANK", "WORLD_SIZE",
            "RANK")
NODES_TIMEOUT_S = 900  # both nodes together, on 2 contended cores


def _clean_env() -> dict[str, str]:
    """os.environ without MASTER_* / rank / SLURM variables inherited from another test of this worker."""
    return {k: v for k, v in os.environ.items() if k not in DIST_ENV and not k.startswith("SLURM_")}


@pytest.fixture(scope="module")
def single_run(compose, tiny_overrides, tmp_path_factory) -> tuple[Path, dict]:
    """One tiny single-process run (resnet18, the split above): its folder (best.ckpt, predictions) and metrics."""
    tiny = [o for o in tiny_overrides if not o.startswith("clinical.")]  # these runs switch the clinical step off
    single = tmp_path_factory.mktemp("single")
    metrics = train(compose([*tiny, *SPLIT, "model=resnet18"], single))
    n_test, n_val = metrics["n_test"], metrics["n_val"]
    assert n_test % WORLD and n_val % WORLD, "sizes must force DistributedSampler padding"
    assert n_test % (WORLD * 8) and n_val % (WORLD * 8)
    assert (single / "checkpoints" / "best.ckpt").is_file()
    return single, metrics


def _ddp_args(tiny_overrides, ckpt: Path, cache: Path, run_dir: Path, *extra: str) -> list[str]:
    """`python -m chestx.train` scoring `ckpt` with trainer=ddp_cpu into `run_dir`, pixels cached in `cache`."""
    return [
        sys.executable, "-m", "chestx.train", "fit=false", f"ckpt_path={ckpt}", "trainer=ddp_cpu", *extra,
        *[o for o in tiny_overrides if not o.startswith(("trainer.accelerator", "clinical."))], *SPLIT,
        "model=resnet18", "data.cache=true", f"data.cache_dir={cache}",  # all ranks share one pixel cache
        f"hydra.run.dir={run_dir}",
    ]


def _assert_same_scores(single: Path, ddp: Path, n_test: int, n_val: int) -> None:
    """The DDP run folder scores exactly what the single-process one does: predictions, metrics.json, auroc.csv."""
    for name, n in (("predictions.csv", n_test), ("predictions_val.csv", n_val)):
        ids_1, probs_1, labels_1, _ = read_predictions(single / name)
        ids_2, probs_2, labels_2, _ = read_predictions(ddp / name)
        assert len(ids_2) == n and ids_2["image_id"].is_unique, f"{name}: every image exactly once"
        pd.testing.assert_frame_equal(ids_1.reset_index(drop=True), ids_2.reset_index(drop=True))
        np.testing.assert_allclose(probs_2, probs_1, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(np.isnan(labels_1), np.isnan(labels_2))
        np.testing.assert_array_equal(np.nan_to_num(labels_1), np.nan_to_num(labels_2))

    saved_1 = json.loads((single / "metrics.json").read_text())
    saved_2 = json.loads((ddp / "metrics.json").read_text())
    assert saved_2["status"] == "ok"
    for key in [k for k in saved_1 if k.startswith(("test/auroc", "val/auroc"))]:
        if saved_1[key] is None or np.isnan(saved_1[key]):
            assert saved_2[key] is None or np.isnan(saved_2[key]), key
        else:
            assert saved_2[key] == pytest.approx(saved_1[key], abs=1e-6), key
    auroc_1 = pd.read_csv(single / "auroc.csv")
    auroc_2 = pd.read_csv(ddp / "auroc.csv")
    pd.testing.assert_frame_equal(auroc_1, auroc_2, atol=1e-6, check_exact=False)


@pytest.mark.slow
def test_ddp_scoring_equals_single_process(single_run, tiny_overrides, repo_root: Path, tmp_path: Path) -> None:
    single, metrics = single_run
    ddp = tmp_path / "ddp"
    args = _ddp_args(tiny_overrides, single / "checkpoints" / "best.ckpt", tmp_path / "cache", ddp)
    # a clean rendezvous: no MASTER_* / rank variables inherited from another test of this worker
    proc = subprocess.run(args, cwd=repo_root, capture_output=True, text=True, timeout=600, env=_clean_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 1
    assert "world_size=2" in proc.stderr or "MEMBER: 2/2" in proc.stderr + proc.stdout, "the run must really use 2 processes"
    _assert_same_scores(single, ddp, metrics["n_test"], metrics["n_val"])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_nodes(commands: list[list[str]], envs: list[dict[str, str]], logs: list[Path], cwd: Path,
               timeout: float) -> list[int | None]:
    """Run one process per node (stdout and stderr into its log) until all exit; return their exit codes.

    The first failure or the timeout stops the wait and kills every node still running (None in the
    result): a node whose peer died waits in the c10d rendezvous / gloo collectives for 30 minutes. Each
    node is its own process group (start_new_session), killed as a whole, also when the test is
    interrupted, so that no process outlives the test.
    """
    procs: list[subprocess.Popen] = []
    try:
        for command, env, log in zip(commands, envs, logs):
            with open(log, "w") as out:
                procs.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        deadline = time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in procs]  # every node, each time (any() would stop at the first running one)
            if None not in codes or any(code not in (None, 0) for code in codes) or time.monotonic() > deadline:
                return codes
            time.sleep(1)
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in procs:
            p.wait()


@pytest.mark.slow
@pytest.mark.timeout(NODES_TIMEOUT_S + 600)  # backstop (includes training single_run); kills both nodes too
def test_ddp_two_nodes_scoring_equals_single_process(single_run, tiny_overrides, repo_root: Path,
                                                     tmp_path: Path) -> None:
    """2 nodes x 1 CPU process (gloo), started as 2 commands with NODE_RANK=0/1, score like one process."""
    single, metrics = single_run
    ddp = tmp_path / "ddp"
    ckpt, cache = single / "checkpoints" / "best.ckpt", tmp_path / "cache"
    nodes = ["trainer.num_nodes=2", "trainer.devices=1"]
    # Both nodes share one run folder, as on a cluster whose run folders lie on a shared file system. Only
    # global rank 0 writes predictions / metrics / auroc; every rank writes config.yaml and split.csv, here at
    # the same time, but with byte-identical content (same command line and run folder) truncated and written
    # from offset 0, so any interleaving leaves that content (checked below) and nothing reads them during
    # the run. Node 1 skips Hydra's .hydra/ folder, as Lightning does for the ranks it launches itself.
    commands = [_ddp_args(tiny_overrides, ckpt, cache, ddp, *nodes),
                _ddp_args(tiny_overrides, ckpt, cache, ddp, *nodes, "hydra.output_subdir=null")]
    # What LightningEnvironment reads: NODE_RANK, MASTER_ADDR, MASTER_PORT. No LOCAL_RANK: with it Lightning
    # would assume an external launcher (creates_processes_externally); without it each node's launcher sets
    # LOCAL_RANK=0 and WORLD_SIZE=num_nodes x devices itself and starts devices - 1 = 0 more processes.
    # One torch thread per node: each "node" gets one of this machine's cores.
    port = str(_free_port())
    envs = [{**_clean_env(), "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
             "OMP_NUM_THREADS": "1"} for rank in range(2)]
    logs = [tmp_path / f"node{rank}.log" for rank in range(2)]
    codes = _run_nodes(commands, envs, logs, repo_root, NODES_TIMEOUT_S)

    tails = "\n".join(f"--- node {rank} (exit {code}; None: killed by the test) ---\n{log.read_text()[-3000:]}"
                      for rank, (code, log) in enumerate(zip(codes, logs)))
    assert codes == [0, 0], tails
    for rank, log in enumerate(logs):
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in log.read_text(), f"node {rank}'s rank\n{tails}"
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1
    assert (ddp / "split.csv").read_bytes() == (single / "split.csv").read_bytes()
    assert OmegaConf.load(ddp / "config.yaml").trainer.num_nodes == 2
    _assert_same_scores(single, ddp, metrics["n_test"], metrics["n_val"])
