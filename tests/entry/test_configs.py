"""Every config option composes and builds what it says: the model it names, a loss with its formula, an
optimizer that steps as its algorithm, a schedule that moves the learning rate, a trainer on the device it
asks for, callbacks and loggers that act on the run folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from chestx._hydra import CONFIG_DIR, instantiate_all
from chestx.models.backbones import BACKBONE_SPECS, default_input_size
from chestx.models.losses import OutputLayout, build_loss

CONF = Path(CONFIG_DIR)
# timm.yaml, hf.yaml, open_clip.yaml need model.name (the encoders: tests/models/test_encoders.py)
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if p.stem not in ("timm", "hf", "open_clip"))


def group(name: str) -> list[str]:
    return sorted(p.stem for p in (CONF / name).glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_builds_the_backbone_it_names_and_trains(model: str, compose, tmp_path: Path) -> None:
    """The backbone the option names, at the smallest size it takes (InceptionV3's stem needs >= 75 px): finite
    logits, and one training step of the masked loss reaches every parameter with a finite gradient (what a
    training run of each backbone needs beyond the loop that tests/entry/test_train.py runs)."""
    net = instantiate(compose([f"model={model}"], tmp_path).model, num_outputs=14).eval()
    assert net.pretrained_cfg["architecture"] == BACKBONE_SPECS[model].timm_name
    size = {"inceptionv3": 80, "resnet56v2": 32}.get(model, 64)
    with torch.no_grad():
        logits = net(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)))
    assert logits.shape == (2, 14) and torch.isfinite(logits).all()
    net.train()  # batch norm in training mode, as in a training step
    g = torch.Generator().manual_seed(1)
    target = (torch.rand(2, 14, generator=g) > 0.5).float()
    target[0, :3] = float("nan")  # unknown labels: masked
    loss = build_loss(instantiate(compose(["loss=bce"], tmp_path).loss), OutputLayout(False, 14), target.numpy())
    loss(net(torch.randn(2, 3, size, size, generator=g)), target, torch.zeros_like(target, dtype=torch.bool)).backward()
    grads = {name: p.grad for name, p in net.named_parameters() if p.requires_grad}
    assert all(v is not None and torch.isfinite(v).all() for v in grads.values()), model
    assert net.get_classifier().weight.grad.abs().sum() > 0


def _batch() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(logits (6, 3) requiring grad, targets with two unknown cells, training labels (8, 3))."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=g).requires_grad_()
    target = (torch.rand(6, 3, generator=g) > 0.5).float()
    target[0, 0] = target[3, 2] = float("nan")
    train_labels = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0]],
                            dtype=np.float32)
    return logits, target, train_labels


def _bce_cells(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(target), reduction="none")


def _focal_cells(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Lin et al. 2017 without the alpha term: (1 - p_t)^gamma * CE."""
    p, y = torch.sigmoid(logits), torch.nan_to_num(target)
    return (1 - (y * p + (1 - y) * (1 - p))) ** gamma * _bce_cells(logits, target)


def _weighted_cells(logits: torch.Tensor, target: torch.Tensor, train_labels: np.ndarray) -> torch.Tensor:
    """CheXNet's class-balanced BCE: w+ = N_neg / N, w- = N_pos / N per class, from the training labels."""
    positive = torch.as_tensor(train_labels.mean(axis=0))
    y = torch.nan_to_num(target)
    return -((1 - positive) * y * F.logsigmoid(logits) + positive * (1 - y) * F.logsigmoid(-logits))


LOSSES = {"bce": lambda z, t, labels: _bce_cells(z, t), "focal": lambda z, t, labels: _focal_cells(z, t),
          "weighted_bce": _weighted_cells}
AUC_A, AUC_B, AUC_ALPHA = torch.tensor([0.2, 0.1, 0.3]), torch.tensor([0.6, 0.5, 0.4]), torch.tensor([0.3, 0.1, 0.2])


def _auc_margin(logits: torch.Tensor, target: torch.Tensor, train_labels: np.ndarray, m: float = 1.0) -> torch.Tensor:
    """AUC-M v1 (Yuan et al. 2021, LibAUC's AUCMLoss docstring) per column over its known rows, then the mean over
    columns: (1-p) E[(s-a)^2 1(y=1)] + p E[(s-b)^2 1(y=0)] + 2 alpha (p(1-p) m + E[p s 1(y=0) - (1-p) s 1(y=1)])
    - p(1-p) alpha^2, s = sigmoid(z), p the class's positive fraction in the training labels."""
    terms = []
    for k in range(target.shape[1]):
        rows = ~torch.isnan(target[:, k])
        s, y, p = torch.sigmoid(logits[rows, k]), target[rows, k], float(train_labels[:, k].mean())
        a, b, alpha = AUC_A[k], AUC_B[k], AUC_ALPHA[k]
        terms.append((1 - p) * ((s - a) ** 2 * y).mean() + p * ((s - b) ** 2 * (1 - y)).mean()
                     + 2 * alpha * (p * (1 - p) * m + (p * s * (1 - y) - (1 - p) * s * y).mean())
                     - p * (1 - p) * alpha ** 2)
    return torch.stack(terms).mean()


@pytest.mark.parametrize("option", group("loss"))
def test_every_loss_option_is_its_formula_over_the_known_labels(option: str, compose, tmp_path: Path) -> None:
    """The loss chestx.train builds from the option: the mean of its formula over the known cells; the
    unknown (NaN) cells get no gradient."""
    logits, target, train_labels = _batch()
    loss = build_loss(instantiate(compose([f"loss={option}"], tmp_path).loss), OutputLayout(False, 3), train_labels)
    value = loss(logits, target, torch.zeros_like(target, dtype=torch.bool))
    seen = ~torch.isnan(target)
    if option == "auc_margin":  # not a sum over cells: a min-max objective per class, with a, b, alpha of its own
        with torch.no_grad():
            loss.a.copy_(AUC_A), loss.b.copy_(AUC_B), loss.alpha.copy_(AUC_ALPHA)
        value = loss(logits, target, torch.zeros_like(target, dtype=torch.bool))
        torch.testing.assert_close(value, _auc_margin(logits, target, train_labels))
    else:
        torch.testing.assert_close(value, LOSSES[option](logits, target, train_labels)[seen].mean())
    value.backward()
    assert (logits.grad[~seen] == 0).all() and (logits.grad[seen] != 0).all()


def _first_step(option: str, cfg) -> float:
    """p after one step from p = 1 on a gradient of 0.5, written out from each algorithm's update rule with the
    option's own settings (lr, weight decay)."""
    lr, decay = float(cfg.lr), float(cfg.get("weight_decay", 0.0))
    if option == "adam":  # L2 decay in the gradient; the first step is lr * sign(gradient) (bias-corrected m / sqrt(v))
        return 1 - lr * float(np.sign(0.5 + decay))
    if option == "adamw":  # decoupled weight decay first, then Adam's first step
        return 1 * (1 - lr * decay) - lr
    if option == "sgd":  # L2 decay added to the gradient; the momentum buffer starts at that gradient
        return 1 - lr * (0.5 + decay * 1)
    if option == "pesg":  # clipped gradient + epoch_decay * (p - reference) + L2 decay; the buffer starts there
        clipped = min(max(0.5, -float(cfg.clip_value)), float(cfg.clip_value))
        return 1 - lr * (clipped + float(cfg.epoch_decay) * (1 - float(cfg.reference)) + decay * 1)
    raise AssertionError(f"no update rule written here for optimizer={option}")


@pytest.mark.parametrize("option", group("optimizer"))
def test_every_optimizer_option_steps_as_its_algorithm(option: str, compose, tmp_path: Path) -> None:
    cfg = compose([f"optimizer={option}"], tmp_path).optimizer
    p = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    if option == "pesg":  # PESG also holds the AUC-M loss's a, b, alpha (they get no gradient here)
        auc = build_loss(instantiate(compose(["loss=auc_margin"], tmp_path).loss), OutputLayout(False, 3), _batch()[2])
        optimizer = instantiate(cfg)(params=[p], loss=auc)
        # PESG draws its first reference point at random: the update rule reads it back
        cfg = OmegaConf.create({**OmegaConf.to_container(cfg), "reference": float(optimizer.model_ref[0])})
    else:
        optimizer = instantiate(cfg)(params=[p])
    assert type(optimizer).__name__.lower() == option
    p.grad = torch.full_like(p, 0.5)
    optimizer.step()
    assert float(p.detach()) == pytest.approx(_first_step(option, cfg), abs=1e-10)
    for _ in range(200):  # and it minimises: (p - 3)^2 gets smaller
        optimizer.zero_grad()
        loss = ((p - 3) ** 2).sum()
        loss.backward()
        optimizer.step()
    assert ((p.detach() - 3) ** 2).item() < 4.0


@pytest.mark.parametrize("option", group("scheduler"))
def test_every_scheduler_option_moves_the_learning_rate(option: str, compose, tmp_path: Path) -> None:
    cfg = compose([f"scheduler={option}"], tmp_path)
    if option == "none":
        assert not cfg.get("scheduler")
        return
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    if option == "pesg_epoch_decay":  # PESG's own schedule: it needs PESG (with the AUC-M loss)
        from chestx.models.auc_margin import auc_margin, pesg

        optimizer = pesg([torch.nn.Parameter(torch.zeros(1))], auc_margin(_batch()[2]), lr=0.1)
    scheduler = instantiate(cfg.scheduler)(optimizer=optimizer)
    lrs = []
    for epoch in range(cfg.trainer.max_epochs):
        optimizer.step()  # an epoch of training (no gradient here), then the schedule's step
        scheduler.step(1.0) if option == "plateau" else scheduler.step()  # plateau: a flat validation loss
        lrs.append(optimizer.param_groups[0]["lr"])
    if option == "cosine":  # half a cosine over the run's epochs, down to eta_min = 0
        expected = [0.05 * (1 + np.cos(np.pi * (e + 1) / cfg.trainer.max_epochs)) for e in range(len(lrs))]
        np.testing.assert_allclose(lrs, expected, atol=1e-12)
    elif option == "pesg_epoch_decay":  # lr / decay_factor after every epoch
        np.testing.assert_allclose(lrs, [0.1 / 10 ** (e + 1) for e in range(len(lrs))], rtol=1e-12)
    else:  # x0.1 each time the loss has not improved for more than `patience` (1) epochs
        assert lrs[:2] == [0.1, 0.1] and lrs[2] == pytest.approx(0.01) and min(lrs) < 1e-4


@pytest.mark.parametrize("option", group("trainer"))
def test_every_trainer_option_runs_where_it_says(option: str, compose, tmp_path: Path) -> None:
    from lightning.pytorch.accelerators import CPUAccelerator
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    cfg = compose([f"trainer={option}", "logger=none"], tmp_path)
    wants_gpu = option in ("gpu", "ddp")
    if wants_gpu and not torch.cuda.is_available():  # a GPU trainer refuses to start without one
        with pytest.raises(Exception, match="No supported gpu backend"):  # Hydra wraps the MisconfigurationException
            instantiate(cfg.trainer, callbacks=[], logger=False)
        return
    trainer = instantiate(cfg.trainer, callbacks=[], logger=False)
    assert trainer.default_root_dir == str(tmp_path)
    if option in ("ddp", "ddp_cpu"):
        assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == (2 if option == "ddp_cpu" else
                                                                                     torch.cuda.device_count())
    else:
        assert isinstance(trainer.strategy, SingleDeviceStrategy) and trainer.num_devices == 1
    on_gpu = wants_gpu or (option == "default" and torch.cuda.is_available())  # default: accelerator auto
    assert isinstance(trainer.accelerator, CPUAccelerator) != on_gpu


def test_default_callbacks_keep_the_best_checkpoint_of_the_monitored_metric(compose, tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    from chestx.models.callbacks import CostMonitor

    cfg = compose(["callbacks=default", "logger=none", "trainer.accelerator=cpu"], tmp_path)
    callbacks = instantiate_all(cfg.callbacks)
    from lightning.pytorch.callbacks import TQDMProgressBar

    assert {type(c) for c in callbacks} == {ModelCheckpoint, EarlyStopping, CostMonitor, TQDMProgressBar}  # no lr
    assert next(c for c in callbacks if isinstance(c, TQDMProgressBar)).refresh_rate > 1  # no device read per step
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    checkpoint = trainer.checkpoint_callback
    assert checkpoint.dirpath == str(tmp_path / "checkpoints") and checkpoint.monitor == "val/auroc_mean"
    checkpoint.best_k_models, checkpoint.kth_best_model_path = {"kept.ckpt": torch.tensor(0.7)}, "kept.ckpt"
    assert checkpoint.check_monitor_top_k(trainer, torch.tensor(0.8)), "a higher validation AUROC replaces it"
    assert not checkpoint.check_monitor_top_k(trainer, torch.tensor(0.6))
    stopping = next(c for c in callbacks if isinstance(c, EarlyStopping))
    assert stopping.monitor == checkpoint.monitor and stopping.monitor_op(torch.tensor(0.8), torch.tensor(0.7))
    with_logger = instantiate_all(compose(["callbacks=default", "logger=default"], tmp_path).callbacks)
    assert any(isinstance(c, LearningRateMonitor) for c in with_logger)
    assert not compose(["callbacks=none"], tmp_path).get("callbacks")


def test_default_loggers_write_into_the_run_folder(compose, tmp_path: Path) -> None:
    loggers = instantiate_all(compose(["logger=default"], tmp_path).logger)
    for logger in loggers:
        logger.log_metrics({"val/auroc_mean": 0.75}, step=3)
        logger.save()
        logger.finalize("success")
    assert (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[1].split(",")[:2] == ["3", "0.75"]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert compose(["logger=none"], tmp_path).get("logger") is None


def test_data_configs_read_their_dataset_or_name_the_root(compose, tmp_path: Path) -> None:
    from chestx.data.labels.table import DataError
    from chestx.data.datasets.base import ChestXData

    for option in group("data"):
        root = ["sources=[nih]", "data.sources.nih.root=/nonexistent"] if option == "merge" else ["data.root=/nonexistent"]
        data = instantiate(compose([f"data={option}", *root], tmp_path).data)
        assert isinstance(data, ChestXData)
        with pytest.raises(DataError, match="data.root='/nonexistent' does not exist"):
            data.labels_only()
    table, _ = instantiate(compose(["data=nih_sample"], tmp_path).data).labels_only()  # its own root: the sample
    assert len(table) == 621


def test_image_size_null_trains_at_the_backbone_size(compose, tmp_path: Path) -> None:
    """The data group does not read the model group: with data.image_size=null the size comes from the
    backbone when chestx.train builds the run (299 for InceptionV3)."""
    from chestx.train import build

    cfg = compose(["model=inceptionv3", "data.image_size=null", "loader.num_workers=0", "loader.pin_memory=false",
                   "logger=none",
                   "trainer.accelerator=cpu"], tmp_path)
    _, datamodule, _, _ = build(cfg)
    assert datamodule.image_size == default_input_size("inceptionv3") == 299
    assert next(iter(datamodule.val_dataloader()))["image"].shape[-2:] == (299, 299)


def test_every_experiment_builds_its_parts(compose, tmp_path: Path) -> None:
    """Each recipe composes, names a backbone timm has, its schedule builds, and its loss and optimizer
    together lower the loss in a few steps (the recipes in detail: test_experiments.py)."""
    from chestx.models.backbones import resolve_model_name

    logits, target, train_labels = _batch()
    for option in group("experiment"):
        cfg = compose([f"experiment={option}"], tmp_path)
        resolve_model_name(cfg.model.name)
        loss = build_loss(instantiate(cfg.loss), OutputLayout(False, 3), train_labels)
        weights = torch.nn.Parameter(logits.detach().clone())
        optimizer = instantiate(cfg.optimizer)(params=[weights])
        if cfg.get("scheduler"):
            instantiate(cfg.scheduler)(optimizer=optimizer)
        before = loss(weights, target, None).item()
        for _ in range(5):
            optimizer.zero_grad()
            loss(weights, target, None).backward()
            optimizer.step()
        assert loss(weights, target, None).item() < before, option


def test_model_weights_from_the_command_line_load_the_file(compose, tmp_path: Path) -> None:
    """`model.weights=<file>` builds the backbone with exactly the saved weights (saved by this test)."""
    source = instantiate(compose(["model=resnet18"], tmp_path).model, num_outputs=14).eval()
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    cfg = compose(["model=resnet18", f"model.weights={tmp_path / 'resnet18.pth'}"], tmp_path)
    loaded = instantiate(cfg.model, num_outputs=14).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), source(images), rtol=0, atol=0)


def test_pretrained_without_network_says_how_to_pass_a_file(compose, tmp_path: Path) -> None:
    cfg = compose(["model=densenet121", "model.pretrained=true"], tmp_path)
    with pytest.raises(Exception, match="model.weights="):
        instantiate(cfg.model, num_outputs=14)
