"""Using a trained model: a checkpoint loaded with its preprocessing and frozen thresholds
(`predictor`), and its ONNX export (`onnx`)."""
