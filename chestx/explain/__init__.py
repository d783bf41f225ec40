"""Explainability: Grad-CAM heatmaps (`gradcam`), overlays (`overlay`) and the pointing game on NIH's
expert boxes (`pointing_game`)."""
from chestx.explain.gradcam import TARGET_LAYERS, compute_cams, target_layer, target_layer_name
from chestx.explain.overlay import overlay, save_heatmap
from chestx.explain.pointing_game import pointing_game, scale_box

__all__ = ["TARGET_LAYERS", "compute_cams", "overlay", "pointing_game", "save_heatmap", "scale_box", "target_layer",
           "target_layer_name"]
