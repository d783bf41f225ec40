"""Pre-activation ResNet-56 (CIFAR-style), registered in timm's model registry as ``resnet56v2``.

He, Zhang, Ren, Sun. "Identity Mappings in Deep Residual Networks", ECCV 2016 (arXiv:1603.05027),
using the CIFAR layout of He et al. "Deep Residual Learning for Image Recognition", CVPR 2016 (Sec. 4.2):
depth 6n+2, three stages of n *basic* pre-activation blocks (BN-ReLU-conv3x3-BN-ReLU-conv3x3) with
widths 16/32/64, stride 2 at the start of stages 2 and 3. For depth 56, n = 9. We use the basic-block
variant (not the bottleneck one); projection shortcuts (1x1 conv on the pre-activated input) are used
where the shape changes (He et al.'s "option B"). A final BN-ReLU precedes global average pooling.

The stem is a single 3x3 conv with stride 1 as in the paper (``stem_stride`` may be raised to cut the
cost at chest X-ray resolutions). The model is trained from scratch: its pretrained cfg has no weights.
Importing this module (``import chestx.models``) registers it, after which
``timm.create_model("resnet56v2", num_classes=K, in_chans=C)`` works.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch
import torch.nn as nn
from timm.layers import BatchNormAct2d, ClassifierHead
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model

__all__ = ["PreActBasicBlock", "ResNetV2Cifar", "resnet56v2"]

log = logging.getLogger(__name__)


class PreActBasicBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus (projection) shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.downsample: Optional[nn.Module] = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(x))  # (B, Cin, H, W) pre-activation, shared by both paths
        shortcut = self.downsample(out) if self.downsample is not None else x
        out = self.conv1(out)  # (B, Cout, H/s, W/s)
        out = self.conv2(self.act2(self.norm2(out)))
        return out + shortcut


class ResNetV2Cifar(nn.Module):
    """CIFAR-style pre-activation ResNet of depth 6n+2 with the timm model API."""

    def __init__(
        self,
        depth: int = 56,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        stem_stride: int = 1,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2 (e.g. 20, 32, 44, 56, 110), got {depth}")
        if kwargs:
            log.debug("ResNetV2Cifar ignores unused kwargs %s", sorted(kwargs))
        n = (depth - 2) // 6
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.stem = nn.Conv2d(in_chans, widths[0], 3, stride=stem_stride, padding=1, bias=False)
        reduction = stem_stride
        self.feature_info = [dict(num_chs=widths[0], reduction=reduction, module="stem")]
        stages = []
        prev = widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            reduction *= stride
            blocks = [PreActBasicBlock(prev if j == 0 else width, width, stride if j == 0 else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            prev = width
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm = BatchNormAct2d(prev, act_layer=nn.ReLU)  # final BN-ReLU of the pre-activation design
        self.feature_info[-1] = dict(num_chs=prev, reduction=reduction, module="norm")
        self.num_features = self.head_hidden_size = prev
        self.head = ClassifierHead(prev, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for timm's layer-wise optimisers."""
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the linear head (num_classes=0 -> identity, i.e. pooled features)."""
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, 16, H/s, W/s)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)  # (B, 64, H/4s, W/4s)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)  # (B, num_classes) or (B, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# input_size is the default image size (chestx.models.backbones.default_input_size). There are no weights
# whose training resolution it could record, and the CIFAR design size (32 px) erases chest X-ray findings
# (a nodule of a few mm is below one pixel), so it is the 224 px shared by the benchmark's other backbones
# (CheXNet's size), at which the stride-1 stem gives a 56x56 final map (pool_size).
default_cfgs = generate_default_cfgs(
    {
        "resnet56v2": dict(
            url="",
            num_classes=1000,
            input_size=(3, 224, 224),
            pool_size=(56, 56),
            crop_pct=1.0,
            interpolation="bilinear",
            first_conv="stem",
            classifier="head.fc",
        )
    }
)


def _create_resnet_v2_cifar(variant: str, pretrained: bool = False, **kwargs: Any) -> ResNetV2Cifar:
    return build_model_with_cfg(
        ResNetV2Cifar,
        variant,
        pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=kwargs.pop("out_indices", (0, 1, 2, 3))),
        **kwargs,
    )


@register_model
def resnet56v2(pretrained: bool = False, **kwargs: Any) -> ResNetV2Cifar:
    """Pre-activation ResNet-56 (basic blocks, widths 16/32/64), He et al. 2016; no pretrained weights."""
    return _create_resnet_v2_cifar("resnet56v2", pretrained=pretrained, **dict(dict(depth=56), **kwargs))
