"""`python -m chestx.perf` / `make perf`: loader, training and inference throughput; prints a table, writes perf.json.

    python -m chestx.perf                                  # quick default: a few minutes on a 2-core CPU
    python -m chestx.perf full=true                        # every backbone, every option, more batches
    python -m chestx.perf backbones=[densenet121] options=[16+cl,bf16+cl,16+cl+compile] batch_size=64
    python -m chestx.perf images=/data/ChestX-ray14/images_001/images parts=[loader] hydra.run.dir=perf/
    python -m chestx.perf parts=[epoch]                    # one NIH-size epoch through python -m chestx.train
    python -m chestx.perf parts=[epoch] epoch_runs=2 "epoch_args=['module.compile=true']"  # compile, then warm cache

Settings are the keys of conf/perf.yaml; those left null there depend on the machine (CUDA or
not), see `resolve_settings`. Defaults: images from ../shared/data/nih/fullres1024 (real 1024 px NIH
PNGs; the embedded 256 px sample if absent), 224 px, CUDA when available. perf.json goes to the run
folder, outputs/perf/<date>/<time> (`hydra.run.dir=<folder>` to choose it). `make perf
ARGS="full=true"` passes settings through.
"""
from __future__ import annotations

from dataclasses import fields

import hydra
from omegaconf import DictConfig, OmegaConf

from chestx._hydra import CONFIG_DIR, hydra_run_dir
from chestx.throughput.suite import BenchSettings, format_table, resolve_settings, run, write_result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="perf")
def main(cfg: DictConfig) -> None:
    values = OmegaConf.to_container(cfg, resolve=True)
    settings = resolve_settings(**{f.name: values[f.name] for f in fields(BenchSettings)})
    result = run(settings)
    path = write_result(result, hydra_run_dir())
    print(format_table(result))
    print(f"\nwritten: {path}  ({result['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
