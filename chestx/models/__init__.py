"""Model layer: timm backbones (incl. the registered ``resnet56v2``) and masked multi-label losses.

Importing this package registers ``resnet56v2`` in timm's model registry.
"""
from chestx.models import resnet_v2_cifar  # noqa: F401  (registers "resnet56v2" with timm)
from chestx.models.backbones import (
    BACKBONE_SPECS,
    BACKBONES,
    BackboneSpec,
    LoadReport,
    create_backbone,
    default_input_size,
    default_mean_std,
    resolve_model_name,
    weights_report,
)
from chestx.models.losses import (
    MaskedBCELoss,
    MaskedFocalLoss,
    MulticlassUncertaintyLoss,
    WeightedBCELoss,
    class_weights_from_labels,
    multiclass_positive_probability,
    probabilities,
    weighted_bce,
)

__all__ = [
    "BACKBONES",
    "BACKBONE_SPECS",
    "BackboneSpec",
    "LoadReport",
    "create_backbone",
    "default_input_size",
    "default_mean_std",
    "resolve_model_name",
    "weights_report",
    "MaskedBCELoss",
    "MaskedFocalLoss",
    "MulticlassUncertaintyLoss",
    "WeightedBCELoss",
    "class_weights_from_labels",
    "multiclass_positive_probability",
    "probabilities",
    "weighted_bce",
]
