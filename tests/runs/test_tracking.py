"""`logger=mlflow`: a tiny real `chestx.train` run tracked in a file store inside its run folder, read back with
MLflow's own client; the logger factory's store handling and the resolved config as params (chestx.runs.tracking)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from chestx.data.labels.table import NIH_PATHOLOGIES
from chestx.runs import tracking
from chestx.runs.tracking import flatten_config, is_file_store, log_resolved_config, mlflow_logger, param_text

ALLOW = "MLFLOW_ALLOW_FILE_STORE"


def _without(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Remove an environment variable for one test; whatever the code under test sets is undone afterwards."""
    monkeypatch.setenv(name, "recorded")  # makes monkeypatch remember the original state, absent or not
    monkeypatch.delenv(name)


# ---- the logger factory: which stores need MLflow's file-store opt-out -----------------------------------------

@pytest.mark.parametrize("uri, expected", [
    ("file:/runs/r1/mlruns", True), ("file:///runs/r1/mlruns", True), ("/runs/r1/mlruns", True), ("mlruns", True),
    ("./outputs/mlruns", True), ("sqlite:///outputs/mlflow.db", False), ("http://mlflow.lab:5000", False),
    ("https://mlflow.lab", False), ("postgresql://user@db/mlflow", False), ("databricks", False),
])
def test_is_file_store(uri: str, expected: bool) -> None:
    assert is_file_store(uri) is expected


class FakeMLFlowLogger:
    """Records what the factory passes to Lightning's MLFlowLogger and the environment it sees."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.allow = os.environ.get(ALLOW)


@pytest.fixture
def fake_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning.pytorch.loggers

    monkeypatch.setattr(lightning.pytorch.loggers, "MLFlowLogger", FakeMLFlowLogger)
    _without(monkeypatch, ALLOW)
    _without(monkeypatch, "MLFLOW_TRACKING_URI")


def test_file_store_gets_the_opt_out(fake_logger, tmp_path: Path) -> None:
    logger = mlflow_logger(f"file:{tmp_path}/mlruns", "chestx", "resnet18-seed0", tags={"seed": 0})
    assert logger.allow == "true" and os.environ[ALLOW] == "true"
    assert logger.kwargs == {"experiment_name": "chestx", "run_name": "resnet18-seed0",
                             "tracking_uri": f"file:{tmp_path}/mlruns", "tags": {"seed": "0"}}


def test_plain_path_becomes_an_absolute_file_uri(fake_logger, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    logger = mlflow_logger("mlruns", "chestx", log_model=True)
    assert logger.kwargs["tracking_uri"] == f"file:{tmp_path.resolve() / 'mlruns'}" and logger.allow == "true"
    assert logger.kwargs["log_model"] is True and logger.kwargs["tags"] is None


def test_database_and_server_stores_are_passed_through(fake_logger, tmp_path: Path) -> None:
    for uri in (f"sqlite:///{tmp_path}/mlflow.db", "http://mlflow.lab:5000"):
        logger = mlflow_logger(uri, "chestx")
        assert logger.kwargs["tracking_uri"] == uri and logger.allow is None
    assert ALLOW not in os.environ


def test_explicit_refusal_of_the_file_store_is_kept(fake_logger, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(ALLOW, "false")
    assert mlflow_logger(f"file:{tmp_path}", "chestx").allow == "false"


def test_null_uri_reads_the_environment(fake_logger, monkeypatch) -> None:
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_URI is not set"):
        mlflow_logger(None, "chestx")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.lab:5000")
    assert mlflow_logger(None, "chestx").kwargs["tracking_uri"] == "http://mlflow.lab:5000"


def test_logger_option_composes_csv_and_mlflow_into_the_run_folder(compose, tmp_path: Path) -> None:
    cfg = compose(["logger=mlflow", "model=resnet18", "seed=3"], tmp_path)
    assert list(cfg.logger) == ["csv", "mlflow"]  # csv first: trainer.log_dir stays the csv folder
    assert cfg.logger.csv.save_dir == str(tmp_path)
    assert cfg.logger.mlflow.tracking_uri == f"file:{tmp_path}/mlruns"
    assert cfg.logger.mlflow.run_name == "resnet18-seed3" and cfg.logger.mlflow.experiment_name == "chestx"


# ---- the resolved config as params ------------------------------------------------------------------------------

class FakeLogger:
    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self.params.update(params)


def test_resolved_config_is_logged_with_dotted_keys() -> None:
    pathologies = list(NIH_PATHOLOGIES)
    config = {"model": {"name": "resnet18", "in_chans": 3}, "optimizer": {"lr": 1e-3, "betas": [0.9, 0.999]},
              "data": {"batch_size": 8, "augment": {"scale": [0.9, 1.1]}, "pathologies": pathologies},
              "seed": 0, "ckpt_path": None, "callbacks": {}}
    first, second = FakeLogger(), FakeLogger()
    log_resolved_config([first, second], config)
    assert first.params == second.params == {
        "model.name": "resnet18", "model.in_chans": 3, "optimizer.lr": 1e-3, "optimizer.betas": [0.9, 0.999],
        "data.batch_size": 8, "data.augment.scale": [0.9, 1.1], "data.pathologies": pathologies, "seed": 0,
        "ckpt_path": None, "callbacks": {}}
    assert flatten_config({}) == {} and log_resolved_config([], config) is None


def test_param_text_is_json_for_containers_and_str_otherwise() -> None:
    assert param_text([0.7, 0.1, 0.2]) == "[0.7, 0.1, 0.2]" and param_text(["No Finding"]) == '["No Finding"]'
    assert param_text({"a": Path("/x")}) == '{"a": "/x"}' and param_text({}) == "{}"
    assert param_text(True) == "True" and param_text(None) == "None" and param_text(1e-3) == "0.001"


@pytest.mark.slow
def test_long_and_many_params_reach_a_real_store(tmp_path: Path, monkeypatch, caplog) -> None:
    """More than MLflow's 100 params per call, and a value over its 6,000 characters (cut, with a warning);
    Lightning's own log_hyperparams would have cut every value at 250."""
    from mlflow.tracking import MlflowClient

    _without(monkeypatch, ALLOW)
    logger = mlflow_logger(f"file:{tmp_path}/mlruns", "chestx", "many")
    long = [f"pathology_{i}" for i in range(1000)]  # 16,890 characters as JSON
    config = {"group": {f"key{i}": i for i in range(150)}, "data": {"pathologies": long, "names": long[:30]}}
    with caplog.at_level("WARNING", logger=tracking.__name__):
        log_resolved_config([logger], config)
    logger.finalize("success")
    assert f"data.pathologies has {len(json.dumps(long))} characters: logging the first 6000" in caplog.text
    params = MlflowClient(f"file:{tmp_path}/mlruns").get_run(logger.run_id).data.params
    assert len(params) == 152 and params["group.key149"] == "149"
    assert params["data.pathologies"] == json.dumps(long)[:tracking.MAX_PARAM_CHARS]
    assert json.loads(params["data.names"]) == long[:30] and len(params["data.names"]) > 250


# ---- a tiny real run with logger=mlflow (slow: one training of ~15 s on 2 busy cores, shared by the tests) ------

@pytest.fixture(scope="module")
def mlflow_run(compose, tiny_overrides, tmp_path_factory):
    """(run folder, config, metrics, MLflow client, run) of one tiny real run with `logger=mlflow` (2 epochs of
    2 batches, ResNet-56 at 32 px, no clinical step)."""
    from mlflow.tracking import MlflowClient

    from chestx.train import train

    out = tmp_path_factory.mktemp("mlflow_run")
    overrides = [o for o in tiny_overrides if not o.startswith(("logger=", "clinical."))]
    cfg = compose([*overrides, "logger=mlflow", "model=resnet56v2", "data.image_size=32", "clinical=none",
                   "trainer.max_epochs=2"], out)
    with pytest.MonkeyPatch.context() as env:
        _without(env, ALLOW)  # the logger sets MLflow's file-store opt-out itself; undone after these tests
        _without(env, "MLFLOW_TRACKING_URI")
        metrics = train(cfg)
        client = MlflowClient(f"file:{out}/mlruns")
        experiment = client.get_experiment_by_name("chestx")
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == 1, [r.info.run_name for r in runs]
        yield out, cfg, metrics, client, runs[0]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6)


@pytest.mark.slow
def test_run_is_finished_and_named(mlflow_run) -> None:
    out, cfg, metrics, _, run = mlflow_run
    assert metrics["status"] == "ok" and (out / "mlruns").is_dir()
    assert run.info.status == "FINISHED" and run.info.run_name == "resnet56v2-seed0"
    assert {k: run.data.tags[k] for k in ("model", "seed", "task")} == {"model": "resnet56v2", "seed": "0",
                                                                         "task": "train"}


@pytest.mark.slow
def test_metric_keys_are_those_of_the_other_loggers(mlflow_run) -> None:
    out, _, _, _, run = mlflow_run
    keys = set(run.data.metrics)
    for stage in ("val", "test"):
        assert {f"{stage}/auroc_mean", f"{stage}/loss"} <= keys
        assert {f"{stage}/auroc/{p}" for p in NIH_PATHOLOGIES} <= keys, sorted(keys)
    assert {"train/loss_epoch", "epoch"} <= keys  # train/loss_step: every 10 steps (log_every_n_steps)
    csv_keys = set(pd.read_csv(out / "csv" / "metrics.csv").columns) - {"step"}
    assert keys == csv_keys, keys ^ csv_keys


@pytest.mark.slow
def test_final_values_are_those_of_metrics_json(mlflow_run) -> None:
    """The last value of each val/ and test/ metric is the re-scored best checkpoint that metrics.json holds."""
    out, _, metrics, _, run = mlflow_run
    saved = json.loads((out / "metrics.json").read_text())
    compared = [k for k in saved if k.startswith(("val/", "test/"))]
    assert len(compared) == 2 * (len(NIH_PATHOLOGIES) + 2)  # per pathology, the mean and the loss
    for key in compared:
        value = saved[key] if saved[key] is not None else float("nan")
        assert _same(run.data.metrics[key], value), (key, run.data.metrics[key], value)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["val/auroc_mean", "val/auroc/Effusion", "train/loss_epoch", "test/auroc_mean"])
def test_metric_history_equals_the_csv_log(mlflow_run, key: str) -> None:
    out, _, _, client, run = mlflow_run
    table = pd.read_csv(out / "csv" / "metrics.csv")
    logged = table.loc[table[key].notna(), ["step", key]]
    expected = sorted(zip(logged["step"].astype(int), logged[key].astype(float)))
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
    assert len(history) == len(expected) >= 1
    for (step, value), (csv_step, csv_value) in zip(history, expected):
        assert step == csv_step and _same(value, csv_value), (key, history, expected)


@pytest.mark.slow
def test_params_are_the_resolved_config(mlflow_run) -> None:
    """Needs chestx.train to log the resolved config (`log_resolved_config(loggers, ...)` in `build`)."""
    from omegaconf import OmegaConf

    _, cfg, _, _, run = mlflow_run
    params = run.data.params
    assert params.get("model.name") == cfg.model.name == "resnet56v2", sorted(params)[:20]
    expected = flatten_config(OmegaConf.to_container(cfg, resolve=True))
    assert {k: params.get(k) for k in expected} == {k: param_text(v) for k, v in expected.items()}
    assert params["optimizer.lr"] == str(cfg.optimizer.lr) and params["loader.batch_size"] == "8"
