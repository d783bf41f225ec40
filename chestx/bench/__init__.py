"""Throughput benchmark: `python -m chestx.bench` (also `make perf`).

Three parts, each one table row per measurement, all written to `bench.json`:
- `loader`: images/s of decode + resize of the real 1024 px NIH originals with Pillow, OpenCV (the
  project's `load_grayscale` + `resize_square`) and torchvision, versus reading the pixel cache
  (chestx.data.cache) and, as the alternative cache format, re-decoding PNG files already resized;
  per core (one process, one thread) and with N DataLoader workers.
- `train`: images/s of the real Lightning loop (ChestXModule + Trainer) against a bare PyTorch loop
  over the same model, weights and batches from the cache, per backbone and option (precision,
  channels_last, torch.compile); the ratio is Lightning's overhead.
- `infer`: inference images/s per backbone; peak memory of every training / inference measurement.
"""
