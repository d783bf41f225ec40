"""Explainability: Grad-CAM heatmaps, overlays and the pointing game (see ``gradcam.py``)."""
from chestx.explain.gradcam import (
    TARGET_LAYERS,
    compute_cams,
    overlay,
    pointing_game,
    scale_box,
    target_layer,
    target_layer_name,
)

__all__ = ["TARGET_LAYERS", "compute_cams", "overlay", "pointing_game", "scale_box", "target_layer", "target_layer_name"]
