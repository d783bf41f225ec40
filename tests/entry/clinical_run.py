"""One tiny real training run (with the clinical step) shared by the clinical/predict/export tests.

Trained once per pytest process (lru_cache) into a temporary folder removed at exit.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

RUN_OVERRIDES = ["model=resnet18", "data.image_size=96", "clinical.cams=3", "clinical.max_cams_per_image=2"]


@functools.lru_cache(maxsize=1)
def tiny_clinical_run() -> Path:
    """Run folder of `chestx.train` on the embedded NIH sample (resnet18, 96 px, 2 batches)."""
    from chestx.train import train
    from conftest import TINY, compose_train

    out = Path(tempfile.mkdtemp(prefix="chestx-clinical-run-"))
    atexit.register(shutil.rmtree, out, True)
    metrics = train(compose_train([*TINY, *RUN_OVERRIDES], out))
    assert metrics["status"] == "ok"
    return out
