"""Throughput measurements behind `python -m chestx.perf` / `make perf`: image loading (`loader`), training /
inference through the real Lightning loop against a bare PyTorch loop, both fed by chestx.train's datamodule
(`training`, `bench_data`), the simulated full NIH workload (`scale`), and one NIH-size epoch through a real
`python -m chestx.train` with its phase times and GPU / host usage (`epoch`, `monitor`)."""
