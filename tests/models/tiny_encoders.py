"""Tiny random-initialised encoders saved to a folder, as `hf download` / open_clip would leave them (no network)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # not ImageNet's: a test can see them travel with the checkpoint


def save_tiny_dinov2(folder: Path, image_size: int = 32) -> Path:
    """A 2-layer Dinov2Model (hidden 32, patch 8) and its preprocessor_config.json."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          patch_size=8, image_size=image_size)
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessor(crop_size={"height": image_size, "width": image_size}, image_mean=list(MEAN),
                      image_std=list(STD)).save_pretrained(folder)
    return folder


def save_tiny_open_clip(folder: Path, image_size: int = 32) -> Path:
    """A tiny open_clip CLIP (ViT 2 layers, width 32, patch 8; text 1 layer) as open_clip_config.json + weights."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model_cfg = {"embed_dim": 16,
                 "vision_cfg": {"image_size": image_size, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
                 "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    model = open_clip.CLIP(**model_cfg)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": {"mean": list(MEAN), "std": list(STD), "size": image_size}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder
