"""Predict pathologies for X-ray files with a trained checkpoint, with optional Grad-CAM heatmaps.

    python -m chestx.predict ckpt=outputs/train/.../checkpoints/best.ckpt inputs=some_xray.png
    python -m chestx.predict ckpt=... inputs=/folder/of/pngs hydra.run.dir=preds/ cam=true
    python -m chestx.predict ckpt=... inputs=data/nih_sample/images labels=data/nih_sample/Data_Entry_sample.csv \
        bbox=../shared/data/nih/BBox_List_2017.csv

The checkpoint supplies backbone, image size, normalisation and pathologies; thresholds come from
`thresholds.csv` in its run folder (`chestx.inference.load_for_inference`). Writes to the run folder
(outputs/predict/<date>/<time>, or `hydra.run.dir=<folder>`):
`predictions_tta.csv` with `tta=hflip|tencrop` (the same columns, the mean of the views' probabilities;
chestx.inference.tta), `predictions.csv` (image_id, patient_id, path, prob_<P>, label_<P> (ground truth, empty without
`labels`), pred_<P> (0/1 at the threshold)), `unreadable.csv` (path, reason) when files could not
be decoded (they are skipped, never fatal), `heatmaps/` with `cam=true`, and with `bbox`
`localization.csv` (one row per box) and `pointing_game.csv` (hit fraction per pathology).
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from chestx._hydra import CONFIG_DIR, hydra_run_dir
from chestx.core.checkpoint_io import trust_setting
from chestx.inference.batch import format_result, predict
from chestx.inference.predictor import load_for_inference


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    inputs = OmegaConf.to_container(cfg.inputs) if OmegaConf.is_list(cfg.inputs) else str(cfg.inputs)
    cam_pathologies = list(cfg.cam_pathologies) if cfg.cam_pathologies else None
    predictor = load_for_inference(cfg.ckpt, thresholds=cfg.thresholds, device=cfg.device,
                                   trust=trust_setting(cfg.get("trust_checkpoint")), tta=str(cfg.get("tta") or "none"))
    out_dir = hydra_run_dir()
    result = predict(predictor, inputs, out_dir, cam=cfg.cam, cam_pathologies=cam_pathologies, labels=cfg.labels,
                     bbox=cfg.bbox, batch_size=cfg.batch_size, target_layer=cfg.target_layer,
                     recursive=cfg.recursive, dicom_window=cfg.dicom_window or predictor.dicom_window)
    print(format_result(predictor, result, out_dir, show=cfg.show, bbox=cfg.bbox))


if __name__ == "__main__":
    main()
