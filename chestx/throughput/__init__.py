"""Throughput measurements behind `python -m chestx.perf` / `make perf`: image loading (`loader`)
and training / inference through the real Lightning loop against a bare PyTorch loop (`training`)."""
