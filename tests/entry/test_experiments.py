"""The literature recipes in conf/experiment/: what each one builds, and a fast_dev_run of each on real data.

Each recipe is built as `chestx.train` builds it (`chestx.train.build`: data, datamodule, module, trainer)
and the objects are checked against what the recipe documents: the optimizer's steps against the update
rule of the documented optimizer, the schedule by feeding it validation losses, the loss against its
formula with class weights counted from the training split's labels, the augmentation on real images,
the batches the loaders give, the jobs Hydra's sweeper expands the recipe into.

NIH recipes run on the embedded sample and on the *full* NIH label file and split lists (with the
real NIH images that are here: the 621 of the sample; `data.missing_images=drop`); CheXpert recipes
on the real CheXpert CSV rows with small real X-ray JPEGs at their paths (the `chexpert_tree` fixture).
Image size and evaluation batch of the fast_dev_runs are cut to 64 px / 16 so that a CPU run takes
seconds; the recipes' own sizes are checked on the batches of the built datamodule. The recipes that
start from ImageNet weights are built here from scratch (`model.pretrained=false`: no network); that they
ask for the weights, and what they do without network or with a local file: the tests at the end.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping

from chestx._hydra import instantiate_all

# no download in tests: the ImageNet recipes (IMAGENET_RECIPES) train from scratch in the fast_dev_runs and builds
SCRATCH = ["model.pretrained=false"]
FAST = ["trainer.fast_dev_run=true", "trainer.accelerator=cpu", "data.image_size=64", "loader.eval_batch_size=16",
        "loader.num_workers=0", "loader.pin_memory=false", "logger=none", "clinical=none", *SCRATCH]
# what a build in this process needs besides the recipe: no loader processes, no loggers writing files, no download
IN_PROCESS = ["loader.num_workers=0", "loader.pin_memory=false", "logger=none", "trainer.accelerator=cpu", *SCRATCH]
CHEXPERT_TASKS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
# the real recipes start from ImageNet weights (model.pretrained=true); the embedded-sample ones (make benchmark,
# make train), the CIFAR-style ResNet-56 (no ImageNet weights exist) and the policy comparison train from scratch
IMAGENET_RECIPES = ["benchmark", "chexnet", "chexnet15", "densenet512", "chexpert_backbones"]
SCRATCH_RECIPES = ["benchmark_sample", "demo", "resnet56_undersample", "uncertainty_policies"]


def _build(compose, overrides: list[str], out: Path):
    """(cfg, data, datamodule, module, trainer) exactly as `chestx.train` builds them before fitting."""
    from chestx.train import build

    cfg = compose([*overrides, *IN_PROCESS], out)
    return (cfg, *build(cfg))


def _steps(optimizer_factory, grad: float = 0.5, steps: int = 3) -> list[float]:
    """A float64 parameter (1.0) after each of `steps` steps of the recipe's optimizer on a constant gradient."""
    p = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    optimizer = optimizer_factory(params=[p])
    trace = []
    for _ in range(steps):
        optimizer.zero_grad()
        p.grad = torch.full_like(p, grad)
        optimizer.step()
        trace.append(float(p.detach()))
    return trace


def _sgd(lr: float, momentum: float, weight_decay: float, grad: float = 0.5, steps: int = 3) -> list[float]:
    """SGD with heavy-ball momentum and L2 weight decay (the update rule, written out)."""
    p, buf, trace = 1.0, None, []
    for _ in range(steps):
        d = grad + weight_decay * p
        buf = d if buf is None else momentum * buf + d
        p -= lr * buf
        trace.append(p)
    return trace


def _adam(lr: float, betas=(0.9, 0.999), eps: float = 1e-8, grad: float = 0.5, steps: int = 3) -> list[float]:
    """Adam (Kingma & Ba 2015, Algorithm 1), no weight decay."""
    p, m, v, trace = 1.0, 0.0, 0.0, []
    for t in range(1, steps + 1):
        m = betas[0] * m + (1 - betas[0]) * grad
        v = betas[1] * v + (1 - betas[1]) * grad**2
        p -= lr * (m / (1 - betas[0] ** t)) / (math.sqrt(v / (1 - betas[1] ** t)) + eps)
        trace.append(p)
    return trace


def _first_batch(datamodule) -> torch.Tensor:
    """The first training batch as the model gets it: uint8 (B, 1, S, S) from the loader, normalised on the device."""
    pixels = next(iter(datamodule.train_dataloader()))["image"]
    assert pixels.dtype == torch.uint8 and pixels.shape[1] == 1
    return datamodule.input_normalizer()(pixels)  # (B, C, S, S) float32


def _assert_plain_bce(loss: torch.nn.Module, k: int) -> None:
    """Unweighted BCE with logits over the observed cells (NaN masked)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, k, generator=g)
    target = (torch.rand(6, k, generator=g) > 0.5).float()
    target[0, 0] = float("nan")
    seen = ~torch.isnan(target)
    expected = F.binary_cross_entropy_with_logits(logits[seen], target[seen])
    torch.testing.assert_close(loss(logits, target, torch.zeros_like(seen)), expected)


def _assert_chexnet_weights(loss: torch.nn.Module, run_dir: Path, labels_csv: Path, pathologies: list[str]) -> None:
    """Weighted BCE with CheXNet's weights, counted here from the training rows of the run's split.csv:
    w+ = N_neg / N and w- = N_pos / N per pathology (NIH labels are all observed)."""
    split = pd.read_csv(run_dir / "split.csv", dtype=str)
    findings = pd.read_csv(labels_csv, dtype=str).set_index("Image Index")["Finding Labels"]
    train = findings.loc[split.loc[split["split"] == "train", "image_id"]].str.split("|")
    positive = np.array([train.apply(lambda f, p=p: p in f).mean() for p in pathologies])  # (K,)
    np.testing.assert_allclose(loss.pos_weight.numpy(), 1 - positive, rtol=1e-6)
    np.testing.assert_allclose(loss.neg_weight.numpy(), positive, rtol=1e-6)
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(6, len(pathologies), generator=g), (torch.rand(6, len(pathologies), generator=g) > 0.7)
    w_pos, w_neg = torch.as_tensor(1 - positive).float(), torch.as_tensor(positive).float()
    cell = -(w_pos * target * F.logsigmoid(logits) + w_neg * ~target * F.logsigmoid(-logits))
    torch.testing.assert_close(loss(logits, target.float(), torch.zeros_like(target)), cell.mean())


def _sweep_jobs(compose, recipe: str, out: Path) -> list[list[str]]:
    """The override lists of the jobs Hydra's basic sweeper launches for `-m experiment=<recipe>`."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = compose([f"experiment={recipe}"], out, hydra_config=True)
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), max_batch_size=None)
    return [list(job) for batch in batches for job in batch]


def test_chexnet_builds_sgd_with_plateau_schedule_and_flip_only(compose, tmp_path: Path) -> None:
    """CheXNet as its reproductions train it: DenseNet121 at 224 px, ImageNet normalisation, horizontal
    flip only, SGD lr 0.01 momentum 0.9, lr x0.1 when the validation loss plateaus, batch 16, the
    checkpoint with the lowest validation loss kept, plain BCE."""
    cfg, data, dm, module, trainer = _build(compose, ["experiment=chexnet"], tmp_path)
    assert module.net.pretrained_cfg["architecture"] == "densenet121" and module.net.num_classes == 14

    configured = module.configure_optimizers()
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]
    assert isinstance(optimizer, torch.optim.SGD)
    assert _steps(module.optimizer_factory) == pytest.approx(_sgd(lr=0.01, momentum=0.9, weight_decay=0.0), abs=1e-15)
    assert schedule["monitor"] == "val/loss" and schedule["interval"] == "epoch"
    lrs = []
    for val_loss in [1.0, 0.9, 0.8, 0.8, 0.8, 0.8]:  # falling, then flat
        schedule["scheduler"].step(val_loss)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[:4] == [0.01] * 4, "a falling validation loss keeps the learning rate"
    assert lrs[-1] == pytest.approx(0.001), "x0.1 once the validation loss stops falling"

    checkpoint = trainer.checkpoint_callback
    assert checkpoint.monitor == "val/loss"
    checkpoint.best_k_models, checkpoint.kth_best_model_path = {"kept.ckpt": torch.tensor(0.5)}, "kept.ckpt"
    assert checkpoint.check_monitor_top_k(trainer, torch.tensor(0.4)), "a lower validation loss replaces it"
    assert not checkpoint.check_monitor_top_k(trainer, torch.tensor(0.6))
    stopping = next(c for c in trainer.callbacks if isinstance(c, EarlyStopping))
    assert stopping.monitor == "val/loss" and stopping.monitor_op(torch.tensor(0.4), torch.tensor(0.5))
    _assert_plain_bce(module.loss_fn, 14)

    assert _first_batch(dm).shape == (16, 3, 224, 224)
    from chestx.data.images.read import resize_square
    from chestx.data.loading.transforms import IMAGENET_MEAN, IMAGENET_STD

    train, val = dm.datasets["train"], dm.datasets["val"]
    raw = train.pixels(0)  # a real sample image, (256, 256) uint8
    pixels = val.transform(raw)  # (1, 224, 224) uint8: the loaders leave normalisation to the device
    plain = dm.input_normalizer()(pixels[None])[0]  # (3, 224, 224)
    gray = resize_square(raw, 224).astype(np.float32) / 255
    for c in range(3):
        np.testing.assert_allclose(plain[c].numpy(), (gray - IMAGENET_MEAN[c]) / IMAGENET_STD[c], atol=1e-5)
    flips = []
    for _ in range(20):  # training images: the plain image or its mirror, nothing else (no crop, rotation, jitter)
        x = train.transform(raw)
        flips.append(torch.equal(x, pixels.flip(-1)))
        assert flips[-1] or torch.equal(x, pixels)
    assert 0 < sum(flips) < 20, "flipped about half the time"


def test_chexnet15_adds_no_finding_and_weight_decay(compose, sample_root: Path, tmp_path: Path) -> None:
    """CheXNet with No Finding as a 15th class (1 exactly for the images NIH labels 'No Finding') and
    L2 weight decay 1e-4 in the SGD steps."""
    from hydra.utils import instantiate

    cfg = compose(["experiment=chexnet15"], tmp_path)
    data = instantiate(cfg.data)
    table, _ = data.labels_only()
    assert len(table.pathologies) == 15 and table.pathologies[-1] == "No Finding"
    findings = pd.read_csv(sample_root / "Data_Entry_sample.csv").set_index("Image Index")["Finding Labels"]
    normal = (findings.loc[table.frame["image_id"]] == "No Finding").to_numpy()
    np.testing.assert_array_equal(table.labels[:, -1], normal.astype(np.float32))
    assert _steps(instantiate(cfg.optimizer)) == pytest.approx(_sgd(lr=0.01, momentum=0.9, weight_decay=1e-4),
                                                               abs=1e-15)


def test_chexpert_backbones_recipe(compose, chexpert_tree: Path, tmp_path: Path) -> None:
    """Irvin et al. 2019 style: CheXpert's 5 competition tasks with uncertain -> 0, 128 px, batch 64, Adam
    lr 2e-4, plain BCE."""
    cfg, data, dm, module, trainer = _build(compose, ["experiment=chexpert_backbones", f"data.root={chexpert_tree}"],
                                            tmp_path)
    assert data.pathologies == CHEXPERT_TASKS
    raw = pd.read_csv(chexpert_tree / "CheXpert-v1.0-small" / "train.csv").set_index("Path")
    rows = data.split == "train"
    expected = raw.loc[data.table.frame["image_id"][rows], CHEXPERT_TASKS].replace(-1.0, 0.0).fillna(0.0)
    np.testing.assert_array_equal(data.train_labels(), expected.to_numpy(np.float32))
    assert (raw[CHEXPERT_TASKS] == -1).to_numpy().any(), "the rows hold uncertain labels that became 0"
    assert _steps(module.optimizer_factory) == pytest.approx(_adam(lr=2e-4), abs=1e-12)
    _assert_plain_bce(module.loss_fn, 5)
    assert _first_batch(dm).shape == (64, 3, 128, 128)


def test_uncertainty_policies_recipe_and_its_sweep(compose, chexpert_tree: Path, tmp_path: Path) -> None:
    """CheXpert's training procedure: 320 px, batch 16, Adam at a constant lr 1e-4, 3 epochs; the sweep's
    five jobs treat CheXpert's uncertain labels five ways."""
    from hydra.utils import instantiate

    cfg, data, dm, module, trainer = _build(compose, ["experiment=uncertainty_policies", f"data.root={chexpert_tree}"],
                                            tmp_path / "build")
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam), "an optimizer alone: no learning-rate schedule"
    assert _steps(module.optimizer_factory) == pytest.approx(_adam(lr=1e-4), abs=1e-12)
    assert trainer.max_epochs == 3 and _first_batch(dm).shape == (16, 3, 320, 320)

    jobs = _sweep_jobs(compose, "uncertainty_policies", tmp_path)
    policies = {job[0].split("=", 1)[1]: job for job in jobs}
    assert list(policies) == ["ignore", "zeros", "ones", "multiclass", "lsr_ones"]
    raw = pd.read_csv(chexpert_tree / "CheXpert-v1.0-small" / "train.csv").set_index("Path")
    for policy, job in policies.items():
        job_cfg = compose(["experiment=uncertainty_policies", f"data.root={chexpert_tree}", *job], tmp_path)
        table, split = instantiate(job_cfg.data).labels_only()
        rows = (split == "train") & table.frame["image_id"].isin(raw.index).to_numpy()
        uncertain = (raw.loc[table.frame["image_id"][rows], CHEXPERT_TASKS] == -1).to_numpy()  # (N, 5)
        assert uncertain.any()
        np.testing.assert_array_equal(table.uncertain[rows], uncertain, err_msg=policy)
        values = table.labels[rows][uncertain]
        if policy in ("ignore", "multiclass"):  # multiclass: no 0/1 label, a third output trained on the mask
            assert np.isnan(values).all(), policy
        elif policy == "zeros":
            assert (values == 0).all()
        elif policy == "ones":
            assert (values == 1).all()
        else:  # label smoothing (Pham et al. 2021): uniform in [0.55, 0.85]
            assert ((values >= 0.55) & (values <= 0.85)).all() and values.std() > 0.02
        assert instantiate(job_cfg.data).multiclass == [policy == "multiclass"] * 5, policy


def test_resnet56_undersample_recipe(compose, sample_root: Path, tmp_path: Path) -> None:
    """Pre-activation ResNet-56 from scratch, 20 % of the No Finding training images kept (validation and
    test untouched), weighted BCE with weights from the undersampled training split."""
    from hydra.utils import instantiate

    cfg, data, dm, module, trainer = _build(compose, ["experiment=resnet56_undersample"], tmp_path / "run")
    assert module.net.pretrained_cfg["architecture"] == "resnet56v2"
    _assert_chexnet_weights(module.loss_fn, tmp_path / "run", sample_root / "Data_Entry_sample.csv", data.pathologies)

    full = instantiate(compose(["experiment=resnet56_undersample", "data.no_finding_fraction=1.0"], tmp_path).data)
    full.prepare()
    normal = {name: set(d.table.frame["image_id"][(d.split == "train") & d.table.frame["no_finding"].to_numpy(bool)])
              for name, d in (("kept", data), ("all", full))}
    n = len(normal["all"])
    assert normal["kept"] < normal["all"] and abs(len(normal["kept"]) - 0.2 * n) <= 4 * math.sqrt(n * 0.2 * 0.8)
    for name in ("val", "test"):
        assert data.split_frame(name).equals(full.split_frame(name)), name
    ill = data.table.frame["image_id"][(data.split == "train") & ~data.table.frame["no_finding"].to_numpy(bool)]
    assert set(ill) == set(full.table.frame["image_id"][(full.split == "train")]) - normal["all"]


def test_densenet512_recipe(compose, sample_root: Path, tmp_path: Path) -> None:
    """DenseNet121 at 512 px, batch 8, weighted BCE."""
    cfg, data, dm, module, trainer = _build(compose, ["experiment=densenet512"], tmp_path)
    assert module.net.pretrained_cfg["architecture"] == "densenet121"
    _assert_chexnet_weights(module.loss_fn, tmp_path, sample_root / "Data_Entry_sample.csv", data.pathologies)
    assert _first_batch(dm).shape == (8, 3, 512, 512)


@pytest.mark.parametrize("recipe, size, epochs, sizes", [
    ("benchmark_sample", 112, 3, {"train": 373, "val": 62, "test": 186}),  # 60/10/30 by patient
    ("demo", 128, 5, {"train": 435, "val": 62, "test": 124}),  # the sample's 70/10/20 split
])
def test_sample_recipes_split_and_train_whole_epochs(recipe: str, size: int, epochs: int, sizes: dict,
                                                     compose, tmp_path: Path) -> None:
    """`make benchmark` / `make train` on the embedded sample: the split sizes (the comment of benchmark_sample
    says 372 training images; the split gives 373), whole epochs at their image size, no logger for the
    benchmark (its report reads the run folders; that it draws no heatmap: test_report.py's sweep)."""
    from hydra.utils import instantiate

    cfg = compose([f"experiment={recipe}"], tmp_path)
    data = instantiate(cfg.data)
    _, split = data.labels_only()
    assert {name: int((split == name).sum()) for name in sizes} == sizes
    trainer = instantiate(cfg.trainer, accelerator="cpu", logger=instantiate_all(cfg.get("logger")) or False)
    assert (trainer.max_epochs, trainer.limit_train_batches, data.image_size) == (epochs, 1.0, size)
    if recipe == "benchmark_sample":
        assert trainer.loggers == []


@pytest.fixture(scope="module")
def networks():
    """The backbone a model config builds (5 outputs, eval mode), built once per model for this module."""
    from hydra.utils import instantiate

    built: dict[str, torch.nn.Module] = {}

    def network(model_cfg) -> torch.nn.Module:
        if model_cfg.name not in built:
            built[model_cfg.name] = instantiate(model_cfg, num_outputs=5).eval()
        return built[model_cfg.name]

    return network


@pytest.mark.parametrize("recipe, extra, models", [
    ("benchmark_sample", [], ["densenet121", "resnet50", "mobilenetv2", "inceptionv3", "vgg16"]),
    # full size on NIH: data.image_size null, so each backbone trains at its own input size
    ("benchmark", ["data=nih"], ["densenet121", "resnet50", "mobilenetv2", "inceptionv3", "vgg16"]),
    ("chexpert_backbones", [], ["densenet121", "mobilenetv2", "inceptionv3", "vgg16"]),
])
def test_every_swept_job_builds_its_network_at_the_recipe_size(recipe: str, extra: list[str], models: list[str],
                                                               compose, networks, tmp_path: Path) -> None:
    """The jobs Hydra's sweeper launches for the recipe: one per backbone, each built and run forward at
    the size it trains at (InceptionV3's stem refuses images under 75 px)."""
    from chestx.models.backbones import default_input_size

    jobs = _sweep_jobs(compose, recipe, tmp_path)
    assert jobs == [[f"model={m}"] for m in models]
    sizes = {}
    for job in jobs:
        cfg = compose([f"experiment={recipe}", *extra, *job, *SCRATCH], tmp_path)
        net = networks(cfg.model)
        size = cfg.data.image_size or default_input_size(cfg.model.name)  # what chestx.train.build uses
        with torch.no_grad():
            assert net(torch.zeros(1, 3, size, size)).shape == (1, 5), job
        sizes[cfg.model.name] = size
    expected = {"benchmark_sample": 112, "chexpert_backbones": 128}.get(recipe)
    assert sizes == {m: expected or (299 if m == "inceptionv3" else 224) for m in models}


def test_chexpert_recipe_on_nih_sample_drops_the_policy(compose, tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose(["experiment=chexpert_backbones", "data=nih_sample", "~data.uncertainty"], tmp_path)
    assert instantiate(cfg.data).pathologies[0] == "Atelectasis"


@pytest.fixture(scope="module")
def full_nih_root(nih_dir: Path, sample_root: Path, tmp_path_factory) -> Path:
    """The full NIH label file and split lists, with the real images that exist here (symlinks)."""
    root = tmp_path_factory.mktemp("nih_full")
    for name in ["Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt", "chexnet_split"]:
        (root / name).symlink_to(nih_dir / name)
    (root / "images").symlink_to(sample_root / "images")
    return root


def _run(compose, overrides: list[str], out: Path) -> dict:
    from chestx.train import train

    metrics = train(compose([*overrides, *FAST], out))
    assert metrics["status"] == "ok" and (out / "predictions.csv").is_file()
    assert {"val/loss", "test/loss"} <= set(metrics), "the loss the plateau schedule and checkpointing monitor"
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["chexnet15", "densenet512"])
def test_nih_recipe_runs_on_the_sample(experiment: str, compose, tmp_path: Path) -> None:
    metrics = _run(compose, [f"experiment={experiment}"], tmp_path)
    assert metrics["model"] == "densenet121"
    header = (tmp_path / "predictions.csv").read_text().splitlines()[0]
    assert ("prob_No Finding" in header) == (experiment == "chexnet15")


def test_chexnet_split_lists_on_the_full_label_file(compose, nih_dir: Path, tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose(["experiment=chexnet", "data=nih", f"data.root={nih_dir}", "data.split=chexnet"], tmp_path)
    _, split = instantiate(cfg.data).labels_only()
    assert {s: int((split == s).sum()) for s in ("train", "val", "test")} == {"train": 78_468, "val": 11_219, "test": 22_433}


@pytest.mark.slow
@pytest.mark.parametrize("experiment, dropped", [
    ("chexnet", "Dropping 111499 of 112120 rows"),
    # undersampling (no_finding_fraction=0.2) draws over the whole label file first, then missing images go
    ("resnet56_undersample", "Dropping 75114 of 75668 rows"),
])
def test_nih_recipe_runs_on_the_full_label_file(experiment: str, dropped: str, compose, full_nih_root: Path,
                                                tmp_path: Path, caplog) -> None:
    """Official split of the full label file (all 621 sample images are in the chexnet test list)."""
    with caplog.at_level("INFO"):
        _run(compose, [f"experiment={experiment}", "data=nih", f"data.root={full_nih_root}",
                       "data.missing_images=drop"], tmp_path)
    assert "Read 112120 NIH images" in caplog.text and dropped in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("experiment,extra", [("chexpert_backbones", []),
                                              ("uncertainty_policies", ["data.uncertainty=multiclass"])])
def test_chexpert_recipe_runs(experiment: str, extra: list[str], compose, chexpert_tree: Path, tmp_path: Path) -> None:
    metrics = _run(compose, [f"experiment={experiment}", f"data.root={chexpert_tree}", *extra], tmp_path)
    assert "test/auroc/Edema" in metrics


def _jobs(compose, recipe: str, out: Path) -> list[list[str]]:
    """The override lists of the recipe's jobs: its sweep's (run with -m), or the recipe alone."""
    swept = compose([f"experiment={recipe}"], out, hydra_config=True).hydra.sweeper.params
    return _sweep_jobs(compose, recipe, out) if swept else [[]]


@pytest.fixture
def offline_hub(monkeypatch, tmp_path: Path) -> None:
    """No network and empty weight caches, whatever this machine has: HF_HUB_OFFLINE=1, an empty Hugging Face
    hub cache and TORCH_HOME (chestx.models.backbones looks in both before any download)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_hub"))


@pytest.mark.parametrize("recipe", IMAGENET_RECIPES + SCRATCH_RECIPES)
def test_real_recipes_start_from_imagenet_weights_sample_recipes_from_scratch(recipe: str, compose,
                                                                              tmp_path: Path) -> None:
    """Every job of an ImageNet recipe (each backbone of a sweep) asks for timm's ImageNet weights and no file;
    make benchmark's and make train's sample recipes, resnet56_undersample and uncertainty_policies do not."""
    jobs = _jobs(compose, recipe, tmp_path)
    if recipe in ("benchmark", "benchmark_sample", "chexpert_backbones"):
        assert len(jobs) >= 4 and all(job[0].startswith("model=") for job in jobs), "a sweep over the backbones"
    for job in jobs:
        cfg = compose([f"experiment={recipe}", *job], tmp_path)
        assert cfg.model.pretrained is (recipe in IMAGENET_RECIPES), job
        assert cfg.model.weights is None, job


@pytest.mark.parametrize("overrides, pretrained", [([], False), (["data=nih", "experiment=benchmark"], True)])
def test_make_benchmark_starts_from_imagenet_weights_only_on_real_data(overrides: list[str], pretrained: bool,
                                                                      compose, tmp_path: Path) -> None:
    """`make benchmark` (chestx.benchmark: benchmark_sample, from scratch) and `make benchmark DATA=nih`
    (experiment=benchmark, ImageNet weights for every backbone)."""
    cfg = compose(overrides, tmp_path, config_name="benchmark", hydra_config=True)
    models = cfg.hydra.sweeper.params["model"].split(",")
    assert models == ["densenet121", "resnet50", "mobilenetv2", "inceptionv3", "vgg16"]
    for model in models:
        assert compose([*overrides, f"model={model}"], tmp_path, config_name="benchmark").model.pretrained is pretrained


@pytest.mark.parametrize("recipe", IMAGENET_RECIPES)
def test_imagenet_recipes_without_network_stop_at_once_saying_how_to_pass_a_file(recipe: str, compose, offline_hub,
                                                                                 tmp_path: Path) -> None:
    """Without network or cached weights every job of the recipe stops before any model or data is built
    (chestx.models.backbones.check_pretrained_available, the pre-flight of create_backbone), within a second,
    with the message naming `model.weights=`."""
    from chestx.models.backbones import check_pretrained_available

    for job in _jobs(compose, recipe, tmp_path):
        cfg = compose([f"experiment={recipe}", *job], tmp_path)
        started = time.perf_counter()
        with pytest.raises(RuntimeError, match=r"cannot be downloaded here.*`model\.weights=/path/to/file"):
            check_pretrained_available(cfg.model.name, cfg.model.pretrained, cfg.model.weights)
        assert time.perf_counter() - started < 1.0, job


def test_imagenet_recipe_backbone_without_network_fails_with_the_same_message(compose, offline_hub,
                                                                              tmp_path: Path) -> None:
    """What chestx.train instantiates (cfg.model) raises that message itself, before building the network."""
    from hydra.utils import instantiate

    cfg = compose(["experiment=chexnet"], tmp_path)
    started = time.perf_counter()
    with pytest.raises(Exception, match=r"cannot be downloaded here.*`model\.weights=/path/to/file"):
        instantiate(cfg.model, num_outputs=14)
    assert time.perf_counter() - started < 1.0


def test_train_build_stops_on_missing_weights_before_reading_the_data(compose, offline_hub, tmp_path: Path) -> None:
    from chestx.train import build

    cfg = compose(["experiment=chexnet", "data=nih", "data.root=/nonexistent", "loader.num_workers=0", "logger=none",
                   "trainer.accelerator=cpu"], tmp_path)
    with pytest.raises(RuntimeError, match=r"`model\.weights=/path/to/file"):
        build(cfg)


def test_imagenet_recipe_offline_with_a_weights_file(compose, offline_hub, tmp_path: Path) -> None:
    """Offline, `model.weights=<file>` (pretrained=true left as the recipe sets it) builds the recipe's
    backbone with exactly the file's weights (a DenseNet121 state dict saved here, timm keys)."""
    from hydra.utils import instantiate

    from chestx.models.backbones import check_pretrained_available

    source = instantiate(compose(["experiment=chexnet", *SCRATCH], tmp_path).model, num_outputs=14).eval()
    torch.save(source.state_dict(), tmp_path / "densenet121.pth")
    cfg = compose(["experiment=chexnet", f"model.weights={tmp_path / 'densenet121.pth'}"], tmp_path)
    assert cfg.model.pretrained is True
    assert check_pretrained_available(cfg.model.name, cfg.model.pretrained, cfg.model.weights) == str(
        tmp_path / "densenet121.pth")
    loaded = instantiate(cfg.model, num_outputs=14).eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), source(images), rtol=0, atol=0)
