"""Every config composes, and every object config instantiates."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from chestx._hydra import CONFIG_DIR
from chestx.models.backbones import default_input_size
from conftest import compose_train

CONF = Path(CONFIG_DIR)
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if p.stem != "timm")


def group(name: str) -> list[str]:
    return sorted(p.stem for p in (CONF / name).glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_builds_a_backbone(model: str, tmp_path: Path) -> None:
    cfg = compose_train([f"model={model}"], tmp_path)
    net = instantiate(cfg.model, num_outputs=14)
    assert sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.parametrize("name", ["loss", "optimizer", "scheduler", "trainer", "callbacks", "logger"])
def test_every_group_option_instantiates(name: str, tmp_path: Path) -> None:
    import torch

    for option in group(name):
        if name == "trainer" and option in ("gpu", "ddp") and not torch.cuda.is_available():
            cfg = compose_train([f"trainer={option}"], tmp_path)  # GPU trainers compose here, build on GPU machines
            assert cfg.trainer.accelerator == "gpu"
            continue
        cfg = compose_train([f"{name}={option}"], tmp_path)
        node = cfg.get(name)
        if not node:
            continue
        if name in ("callbacks", "logger"):
            objects = [instantiate(c) for c in node.values()]
            assert all(o is not None for o in objects)
        elif name in ("optimizer",):
            opt = instantiate(node)(params=[torch.nn.Parameter(torch.zeros(1))])
            assert opt.param_groups
        elif name == "scheduler":
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
            assert instantiate(node)(optimizer=opt) is not None
        else:
            assert instantiate(node) is not None


def test_data_configs_compose(tmp_path: Path) -> None:
    for option in group("data"):
        cfg = compose_train([f"data={option}", "data.root=/nonexistent"], tmp_path)
        assert cfg.data._target_.startswith("chestx.data.sources.")
    cfg = compose_train(["model=inceptionv3", "data=nih", "data.root=/x"], tmp_path)
    # the data group no longer reads the model group: the size comes from the backbone at train time
    assert cfg.data.image_size is None and default_input_size(cfg.model.name) == 299


def test_experiment_configs_compose(tmp_path: Path) -> None:
    for option in group("experiment"):
        cfg = compose_train([f"experiment={option}"], tmp_path)
        assert cfg.model.name


def test_model_weights_from_the_command_line_load_the_file(tmp_path: Path) -> None:
    """`model.weights=<file>` builds the backbone with exactly the saved weights (saved by this test)."""
    import torch

    source = instantiate(compose_train(["model=resnet18"], tmp_path).model, num_outputs=14).eval()
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    cfg = compose_train(["model=resnet18", f"model.weights={tmp_path / 'resnet18.pth'}"], tmp_path)
    loaded = instantiate(cfg.model, num_outputs=14).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), source(images), rtol=0, atol=0)


def test_pretrained_without_network_says_how_to_pass_a_file(tmp_path: Path) -> None:
    cfg = compose_train(["model=densenet121", "model.pretrained=true"], tmp_path)
    with pytest.raises(Exception, match="model.weights="):
        instantiate(cfg.model, num_outputs=14)
