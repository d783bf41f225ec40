"""The audit of issue 25: every reader of a file chestx did not write in this process is one docs/security.md lists
with its guard, and the guards hold (a pickle payload in a pixel cache never runs).

The source check parses chestx/ (ast, no import): a new `np.load` without `allow_pickle=False`, a `torch.load`
outside chestx.core.checkpoint_io, any pickle / pd.read_pickle / yaml.load / eval / exec / joblib, or a reader in a
module the security page does not name fails here."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FORBIDDEN = {"pickle.load", "pickle.loads", "pd.read_pickle", "pandas.read_pickle", "yaml.load", "yaml.unsafe_load",
             "yaml.full_load", "joblib.load", "marshal.load", "marshal.loads", "dill.load", "dill.loads", "eval",
             "exec", "torch.jit.load", "np.fromfile", "shelve.open"}
READERS = {"np.load", "numpy.load", "torch.load", "yaml.safe_load", "OmegaConf.load", "OmegaConf.create",
           "instantiate", "onnx.load", "ort.InferenceSession", "load_state_dict", "ast.literal_eval",
           "safetensors.torch.load_file", "timm.create_model"}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _calls(repo_root: Path):
    """(module path relative to the repo, dotted callee, call node) for every call in chestx/."""
    for path in sorted((repo_root / "chestx").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                yield path.relative_to(repo_root).as_posix(), _name(node.func), node


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return "<absent>"


def test_every_reader_is_guarded_and_documented(repo_root: Path) -> None:
    security = (repo_root / "docs" / "security.md").read_text()
    problems, readers = [], set()
    for module, callee, call in _calls(repo_root):
        where = f"{module}:{call.lineno} {callee}"
        if callee in FORBIDDEN:
            problems.append(f"{where}: never call it on a file")
        if callee in ("np.load", "numpy.load") and _keyword(call, "allow_pickle") is not False:
            problems.append(f"{where}: pass allow_pickle=False")
        if callee == "torch.load" and module != "chestx/core/checkpoint_io.py":
            problems.append(f"{where}: read checkpoints through chestx.core.checkpoint_io.load_checkpoint")
        if callee == "OmegaConf.load" and module != "chestx/clinical.py":
            problems.append(f"{where}: a handed-in config goes through chestx.core.handed_config")
        if callee == "instantiate" and module.count("/") > 1:
            problems.append(f"{where}: only entry points instantiate (library code takes plain arguments)")
        if callee.endswith("to_container") and _keyword(call, "resolve") is True:
            readers.add(module)
        if callee in READERS:
            readers.add(module)
    problems += [f"{m}: reads files but docs/security.md does not list it" for m in sorted(readers)
                 if f"`{m}`" not in security]
    assert not problems, "\n".join(problems)
    assert {"chestx/data/images/cache.py", "chestx/core/checkpoint_io.py", "chestx/clinical.py"} <= readers


class _Touch:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pixel_cache_with_a_pickle_payload_is_refused(tmp_path: Path) -> None:
    """A cache folder is a file chestx may not have written (a shared cache_dir, a copied folder): its .npy files are
    read without pickles, so an object array carrying a payload is an error and never runs; a partial cache holding
    one is rebuilt."""
    from chestx.data.images import cache

    images = []
    for i in range(2):
        images.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((40, 40), 60 * i, dtype=np.uint8)).save(images[-1])
    source = cache.cached_pixels(images, 32, cache_dir=tmp_path / "cache", workers=1)
    assert source(1).shape == (32, 32)
    marker = tmp_path / "ran"
    evil = np.array([_Touch(marker), 0], dtype=object)  # np.save pickles an object array
    np.save(source.folder / cache.PIXELS, evil, allow_pickle=True)
    with pytest.raises(ValueError):
        cache.CachedPixels(source.folder).array
    partial = tmp_path / "partial"
    partial.mkdir()
    np.save(partial / cache.DONE, evil, allow_pickle=True)
    with pytest.raises(ValueError):
        cache._rows_to_decode(partial, source.folder, None, 1)
    np.save(partial / cache.PIXELS, evil, allow_pickle=True)
    spec = type("Spec", (), {"paths": images, "size": 32})()
    assert cache._pixels_ok(partial, spec) is False
    assert not marker.exists()
    np.load(partial / cache.DONE, allow_pickle=True)  # the payload is real: read with pickles, it runs
    assert marker.exists()
