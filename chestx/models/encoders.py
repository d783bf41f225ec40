"""Image encoders from Hugging Face ``transformers`` and ``open_clip`` behind the backbone interface of timm models.

``create_hf_encoder`` (``model=hf``) and ``create_open_clip_encoder`` (``model=open_clip``) return an
``EncoderClassifier``: (B, in_chans, H, W) -> (B, num_outputs) logits, with ``forward_features`` (pooled features,
(B, D)), ``forward_head``, ``num_features``, ``pretrained_cfg`` (``input_size``, ``mean``, ``std``: the encoder's own
preprocessing, as timm's pretrained cfg) and ``cam_target_layer`` (``"feature_map"``: the patch tokens laid out as a
(B, C, h, w) map, what Grad-CAM hooks).

Pooling follows the DINOv2 linear-evaluation protocol (Oquab et al. 2023): the class token concatenated with the
mean of the patch tokens (D = 2 x width), then dropout and one Linear. For open_clip the class side is the tower's
own pooled, projected embedding (the CLIP image embedding) and the patch side the mean of its tokens.

Weights never come from the network here: ``name`` is a local folder (``save_pretrained`` / open_clip's
``open_clip_config.json`` layout) or a Hugging Face hub id already in the user's cache (``HF_HOME``); a hub id is
resolved with ``snapshot_download(local_files_only=True)``, so ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` hold
trivially and nothing waits on a connection. Absent weights raise at once, naming the model and the one command
that fetches them (``hf download <id>``) on a machine with network. ``arch_config`` rebuilds the architecture with
random weights and no files (checkpoints carry it, so predict and export need no hub copy).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

__all__ = [
    "EncoderClassifier",
    "EncoderError",
    "create_hf_encoder",
    "create_open_clip_encoder",
    "encoder_preprocessing",
    "resolve_encoder_folder",
]

log = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPEN_CLIP_CONFIG = "open_clip_config.json"


class EncoderError(RuntimeError):
    """An encoder's files cannot be found or read (the message says how to fetch them once)."""


def resolve_encoder_folder(name: str, kind: str) -> Path:
    """``name`` (a local folder, or a hub id in the Hugging Face cache) -> the local folder holding its files."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") != 1:
        raise EncoderError(f"model.name={name!r}: no such folder, and not a Hugging Face hub id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))  # the cache only: never the network
    except Exception as e:  # noqa: BLE001  (LocalEntryNotFoundError, RepositoryNotFoundError, OSError ...)
        raise EncoderError(
            f"model={kind} model.name={name!r}: its weights are not in the Hugging Face cache "
            f"({type(e).__name__}) and chestx never downloads them. Fetch them once on a machine with network: "
            f"`hf download {name}` (HF_HOME decides where the cache is; copy it here), or pass the downloaded "
            f"folder as model.name=/path/to/folder"
        ) from e


def _size(value: Any) -> Optional[int]:
    if isinstance(value, dict):
        value = value.get("height") or value.get("shortest_edge")
    return int(value) if isinstance(value, (int, float)) else None


def encoder_preprocessing(name: str, kind: str) -> dict[str, Any]:
    """The encoder's own ``input_size`` (px), ``mean``, ``std`` (RGB) read from its files, without building it.

    hf: ``preprocessor_config.json`` (``crop_size`` / ``size``, ``image_mean``, ``image_std``), else
    ``config.json``'s ``image_size`` and ImageNet statistics. open_clip: ``open_clip_config.json``'s
    ``preprocess_cfg`` and ``model_cfg.vision_cfg.image_size``. ``source`` says which file gave them.
    """
    folder = resolve_encoder_folder(name, kind)
    if kind == "open_clip":
        cfg = _read_json(folder / OPEN_CLIP_CONFIG, name, kind)
        pre, vision = cfg.get("preprocess_cfg") or {}, (cfg.get("model_cfg") or {}).get("vision_cfg") or {}
        size = _size(pre.get("size")) or _size(vision.get("image_size")) or 224
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        return dict(input_size=size, mean=tuple(pre.get("mean", OPENAI_DATASET_MEAN)),
                    std=tuple(pre.get("std", OPENAI_DATASET_STD)), source=OPEN_CLIP_CONFIG)
    config = _read_json(folder / "config.json", name, kind)
    pre_file = folder / "preprocessor_config.json"
    pre = _read_json(pre_file, name, kind) if pre_file.is_file() else {}
    size = _size(pre.get("crop_size")) or _size(pre.get("size")) or _size(config.get("image_size")) or 224
    return dict(input_size=size, mean=tuple(pre.get("image_mean", IMAGENET_MEAN)),
                std=tuple(pre.get("image_std", IMAGENET_STD)),
                source="preprocessor_config.json" if pre else "config.json (ImageNet mean/std)")


def _read_json(path: Path, name: str, kind: str) -> dict[str, Any]:
    if not path.is_file():
        raise EncoderError(f"model={kind} model.name={name!r}: {path.name} not found in {path.parent}")
    if path.stat().st_size > 10_000_000:
        raise EncoderError(f"{path}: {path.stat().st_size} bytes is too large for a config file")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise EncoderError(f"{path}: not valid JSON ({e})") from e


class EncoderClassifier(nn.Module):
    """Encoder -> [class token ; mean of patch tokens] -> dropout -> Linear(D, num_outputs).

    ``tokens_fn(x)`` returns (cls (B, Dc), patches (B, C, h, w)); ``feature_map`` (an Identity on the patch map) is
    the Grad-CAM layer. Single-channel input is repeated to the 3 channels the encoders were trained on.
    """

    cam_target_layer = "feature_map"

    def __init__(self, encoder: nn.Module, kind: str, num_outputs: int, cls_dim: int, patch_dim: int,
                 in_chans: int, drop_rate: float, pretrained_cfg: dict[str, Any], arch_config: dict[str, Any]) -> None:
        super().__init__()
        self.encoder = encoder
        self.kind = kind
        self.in_chans = int(in_chans)
        self.feature_map = nn.Identity()
        self.num_features = cls_dim + patch_dim
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_outputs)
        self.pretrained_cfg = dict(pretrained_cfg)
        self.arch_config = arch_config  # plain dict: rebuilds the architecture (checkpoint info)

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "hf":
            hidden = self.encoder(pixel_values=x).last_hidden_state
            if hidden.ndim == 4:  # a CNN in transformers (ConvNext, ResNet): (B, C, h, w)
                return hidden.new_zeros(len(x), 0), hidden
            patch = int(self.encoder.config.patch_size)
            h, w = x.shape[-2] // patch, x.shape[-1] // patch
            tokens = hidden[:, -h * w:]  # (B, h*w, D): after the class (and register) tokens
            return hidden[:, 0], tokens.transpose(1, 2).reshape(len(x), -1, h, w)
        pooled, tokens = self.encoder(x)  # open_clip VisionTransformer(output_tokens=True): (B, E), (B, h*w, W)
        side = int(round(math.sqrt(tokens.shape[1])))
        return pooled, tokens.transpose(1, 2).reshape(len(x), -1, side, side)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, num_features) pooled features."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        cls, patches = self._tokens(x)  # (B, Dc), (B, C, h, w)
        patches = self.feature_map(patches)
        return torch.cat([cls, patches.mean(dim=(2, 3))], dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, num_features) -> (B, num_outputs) logits."""
        return self.head(self.head_drop(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def create_hf_encoder(name: str, num_outputs: int, in_chans: int = 3, drop_rate: float = 0.0,
                      arch_config: Optional[dict[str, Any]] = None) -> EncoderClassifier:
    """A ``transformers`` vision model (``AutoModel``, e.g. RAD-DINO's ``Dinov2Model``) with a K-way head.

    ``name``: a local folder or a cached hub id (see the module docstring). ``arch_config``: a ``config.to_dict()``
    to build the architecture with random weights instead (checkpoint loading; no files read).
    """
    from transformers import AutoConfig, AutoModel

    if arch_config is not None:
        config = AutoConfig.for_model(**arch_config)
        encoder, pre = AutoModel.from_config(config), dict(arch_config.get("chestx_preprocessing") or {})
    else:
        folder = resolve_encoder_folder(name, "hf")
        pre = encoder_preprocessing(str(folder), "hf")
        try:
            encoder = AutoModel.from_pretrained(str(folder), local_files_only=True).train()  # loaded in eval mode
        except (OSError, ValueError) as e:
            raise EncoderError(f"model=hf model.name={name!r}: cannot load the weights in {folder} ({e})") from e
        config = encoder.config
    width = int(getattr(config, "hidden_size", 0) or getattr(config, "hidden_sizes", [0])[-1])
    is_cnn = not hasattr(config, "patch_size")
    arch = config.to_dict()
    arch["chestx_preprocessing"] = {k: pre[k] for k in ("input_size", "mean", "std") if k in pre}
    model = EncoderClassifier(encoder, "hf", num_outputs, 0 if is_cnn else width, width, in_chans, drop_rate,
                              arch["chestx_preprocessing"], arch)
    log.info("created hf encoder %s (%s): %d outputs, %d features, %.2fM params, preprocessing %s", name,
             type(encoder).__name__, num_outputs, model.num_features,
             sum(p.numel() for p in model.parameters()) / 1e6, arch["chestx_preprocessing"])
    return model


def create_open_clip_encoder(name: str, num_outputs: int, in_chans: int = 3, drop_rate: float = 0.0,
                             arch_config: Optional[dict[str, Any]] = None) -> EncoderClassifier:
    """The image tower of an ``open_clip`` model (a ViT: ``model.visual``) with a K-way head.

    ``name``: a local folder with ``open_clip_config.json`` and its weights, or a cached hub id (``hf-hub:`` models).
    ``arch_config``: the ``open_clip_config.json`` content, to build the tower with random weights (no files).
    """
    import open_clip

    if arch_config is not None:
        cfg = dict(arch_config)
        model = open_clip.CLIP(**{k: v for k, v in cfg["model_cfg"].items() if k in ("embed_dim", "vision_cfg",
                                                                                       "text_cfg", "quick_gelu")})
    else:
        folder = resolve_encoder_folder(name, "open_clip")
        cfg = _read_json(folder / OPEN_CLIP_CONFIG, name, "open_clip")
        try:
            model = open_clip.create_model(f"local-dir:{folder}", load_weights=True, require_pretrained=True)
        except Exception as e:  # noqa: BLE001  (open_clip raises RuntimeError / ValueError / OSError)
            raise EncoderError(f"model=open_clip model.name={name!r}: cannot load {folder} ({e})") from e
    visual = model.visual
    if not hasattr(visual, "output_tokens"):
        raise EncoderError(f"model=open_clip model.name={name!r}: its image tower {type(visual).__name__} does not "
                           "return patch tokens; only open_clip VisionTransformer towers are supported")
    visual.output_tokens = True
    pre_cfg = {}
    if arch_config is None:
        pre_cfg = encoder_preprocessing(str(folder), "open_clip")
    else:
        pre_cfg = dict(cfg.get("chestx_preprocessing") or {})
    cfg["chestx_preprocessing"] = {k: pre_cfg[k] for k in ("input_size", "mean", "std") if k in pre_cfg}
    embed = int(cfg["model_cfg"]["embed_dim"])
    width = int(visual.transformer.width)
    out = EncoderClassifier(visual, "open_clip", num_outputs, embed, width, in_chans, drop_rate,
                            cfg["chestx_preprocessing"], cfg)
    del model  # the text tower is not kept
    log.info("created open_clip image tower %s: %d outputs, %d features, %.2fM params, preprocessing %s", name,
             num_outputs, out.num_features, sum(p.numel() for p in out.parameters()) / 1e6,
             cfg["chestx_preprocessing"])
    return out
