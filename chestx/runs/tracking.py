"""MLflow tracking of training runs (`logger=mlflow`): the logger that `conf/logger/mlflow.yaml` builds, and
the resolved config logged as run params to every logger (`model.name`, `optimizer.lr`, `loader.batch_size`).

Metrics need nothing here: Lightning's MLFlowLogger receives the keys every logger gets (`val/auroc_mean`,
`val/auroc/<pathology>`, `train/loss_epoch`). MLflow is imported only when a logger is built (it takes seconds).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlparse

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger, MLFlowLogger

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)
PARAMS_PER_BATCH = 100  # MLflow's limit on the params of one log_batch call


def is_file_store(tracking_uri: str) -> bool:
    """True for MLflow's local file store: a `file:` URI or a plain folder path (a one-letter scheme is a
    Windows drive); False for `sqlite:///...`, `postgresql://...`, `http(s)://...` and the bare words MLflow
    reads as Databricks."""
    if str(tracking_uri) in ("databricks", "databricks-uc"):
        return False
    scheme = urlparse(str(tracking_uri)).scheme
    return scheme in ("", "file") or len(scheme) == 1


def mlflow_logger(tracking_uri: str | None, experiment_name: str = "chestx", run_name: str | None = None,
                  tags: Mapping[str, Any] | None = None, **kwargs: Any) -> MLFlowLogger:
    """Lightning's MLFlowLogger on `tracking_uri`: a folder or `file:<folder>` (file store), `sqlite:///<file>`,
    `http(s)://<server>`; None takes the MLFLOW_TRACKING_URI environment variable. Tags are stored as text;
    other keyword arguments (`log_model`, `artifact_location`, ...) go to MLFlowLogger as they are."""
    from lightning.pytorch.loggers import MLFlowLogger

    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ValueError("tracking_uri is None and MLFLOW_TRACKING_URI is not set: give an MLflow store "
                         "(a folder, file:<folder>, sqlite:///<file>.db or http://<server>)")
    if is_file_store(tracking_uri):
        if urlparse(str(tracking_uri)).scheme != "file":  # a plain path: Lightning's save_dir wants file:<path>
            tracking_uri = f"file:{Path(tracking_uri).expanduser().resolve()}"
        # MLflow 3 refuses its file store ("in maintenance mode", pointing to a database) unless this opt-out is
        # set. A folder of plain files inside the run folder is what a run wants: it moves and is archived with
        # the run, and needs no database or server. setdefault: an explicit MLFLOW_ALLOW_FILE_STORE=false wins
        # (MLflow then says why it refuses).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    log.info("MLflow: experiment %r, run %r, tracking URI %s", experiment_name, run_name, tracking_uri)
    return MLFlowLogger(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri,
                        tags={str(k): str(v) for k, v in tags.items()} if tags else None, **kwargs)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys (`{"optimizer": {"lr": 1e-3}}` -> `{"optimizer.lr": 1e-3}`); lists and
    scalars stay values, an empty mapping stays `{}`."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def param_text(value: Any) -> str:
    """A param value as MLflow text: lists and mappings as JSON, other values as `str()` (Lightning's
    convention: `True`, `None`)."""
    return json.dumps(value, default=str) if isinstance(value, (list, tuple, Mapping)) else str(value)


def log_resolved_config(loggers: list[Logger], config: Mapping[str, Any]) -> None:
    """Log the resolved config (a plain nested dict, e.g. `OmegaConf.to_container(cfg, resolve=True)`) as
    params with dotted keys to every logger (rank zero only, as Lightning's loggers do).

    MLflow gets each value as text of up to 6,000 characters, MLflow's limit (Lightning's `log_hyperparams`
    cuts at 250: a pathology list would lose its end); the other loggers get the values as they are.
    """
    from lightning.pytorch.loggers import MLFlowLogger

    params = flatten_config(config)
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            _log_mlflow_params(logger, params)
        else:
            logger.log_hyperparams(params)


def _log_mlflow_params(logger: MLFlowLogger, params: Mapping[str, Any]) -> None:
    """`params` as MLflow text params of the logger's run, in batches of MLflow's size."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
    from mlflow.entities import Param

    if rank_zero_only.rank != 0:  # other processes have no MLflow run (Lightning's rank_zero_experiment)
        return
    entries = []
    for key, value in params.items():
        text = param_text(value)
        if len(text) > MAX_PARAM_CHARS:
            log.warning("MLflow param %s has %d characters: logging the first %d", key, len(text), MAX_PARAM_CHARS)
            text = text[:MAX_PARAM_CHARS]
        entries.append(Param(key, text))
    for start in range(0, len(entries), PARAMS_PER_BATCH):
        logger.experiment.log_batch(run_id=logger.run_id, params=entries[start:start + PARAMS_PER_BATCH])
    log.info("MLflow: logged %d params of the resolved config to run %s", len(entries), logger.run_id)
