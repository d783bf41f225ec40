"""Reading checkpoint files without running code: the one `torch.load` of chestx, and what chestx writes into one.

A checkpoint is a pickle inside a zip. Unpickling calls whatever function the file names (an object whose
`__reduce__` returns `(os.system, ("...",))` runs that command), so a file someone hands you (a colleague's
`best.ckpt`, a model from a paper's page) is untrusted input. Every checkpoint chestx reads goes through
`load_checkpoint` (chestx.predict, evaluate ckpt=, export, clinical heatmaps, train's `test_data` step and
metrics.json's best epoch), and train's Lightning calls (`trainer.fit/validate/test(ckpt_path=...)`) get
`weights_only=lightning_weights_only(...)` inside `refusing_unsafe(...)`:

- `torch.load(path, map_location="cpu", weights_only=True)`: torch's restricted unpickler, which builds only
  tensors, numbers, strings, bytes, None, dict / OrderedDict / list / tuple / set, torch.Size / device / dtype and
  refuses every other global before calling it (torch docs, "torch.load" and "Serialization semantics:
  weights_only"; the default of torch.load since torch 2.6). chestx allow-lists nothing more
  (`torch.serialization.add_safe_globals` is never called): its own checkpoints hold only those types.
- A file that needs more is refused (`CheckpointError`) before anything in it runs, naming the file, the globals it
  wants (`torch.serialization.get_unsafe_globals_in_checkpoint`, which scans the pickle without executing it), why,
  and the opt-in: `trust_checkpoint=true` on the command line. Only then, and only for a file that needs it, is it
  loaded with `weights_only=False`, with a WARNING naming the file.
- `plain` / `unsafe_entries` keep what chestx writes loadable that way: `ChestXModule.on_save_checkpoint` reduces
  its own fields to plain types and refuses to write a checkpoint that `weights_only=True` could not read back.

torch's restricted unpickler itself had holes before 2.6 (CVE-2025-32434, GHSA-53q9-r3pm-6pq6: code execution with
weights_only=True, torch <= 2.5.1) and before 2.10 (CVE-2026-24747: memory corruption from crafted pickle opcodes /
storage sizes, torch < 2.10); with an older torch `load_checkpoint` warns once (docs/security.md).

The other file of a run folder that can name code, config.yaml, is checked by chestx.core.handed_config.
"""
from __future__ import annotations

import contextlib
import io
import logging
import pickle
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

TRUST_KEY = "trust_checkpoint"  # the command-line opt-in of every entry point that reads a checkpoint
SAFE_TORCH = (2, 10)  # first torch whose weights_only unpickler has no published bypass (see the module docstring)

# types torch's weights_only unpickler builds by default (torch._weights_only_unpickler._get_allowed_globals)
_PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.Size, torch.device, torch.dtype)
_PLAIN_CONTAINERS = (dict, OrderedDict, Counter, list, tuple, set)
_warned_old_torch = False


class CheckpointError(ValueError):
    """A checkpoint that cannot (or may not) be loaded; the message names the file, the reason and the fix."""


def trust_setting(value: Any, key: str = TRUST_KEY) -> bool:
    """The opt-in as a bool: only true / false (or null = false); `trust_checkpoint=no` must not mean yes."""
    if value is None or isinstance(value, bool):
        return bool(value)
    raise ValueError(f"{key}={value!r}: use {key}=true (load a checkpoint that needs more than plain types, trusting "
                     f"where it comes from) or {key}=false (the default)")


def _check_torch() -> None:
    global _warned_old_torch
    if not _warned_old_torch and torch.__version__ < SAFE_TORCH:
        _warned_old_torch = True
        log.warning("torch %s: its weights_only loader has published bypasses (CVE-2025-32434, fixed in 2.6; "
                    "CVE-2026-24747, fixed in 2.10); upgrade torch to >= %d.%d before loading checkpoints you did "
                    "not write (docs/security.md)", torch.__version__, *SAFE_TORCH)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; pass the path of a .ckpt written by "
                              "`python -m chestx.train` (<run folder>/checkpoints/best.ckpt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a file (a folder?); pass the .ckpt file itself, "
                              "e.g. <run folder>/checkpoints/best.ckpt")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes): an interrupted copy or save? "
                              "Copy or train it again")


def _scan(path: str | Path) -> list[str] | None:
    """torch's scan of a zip checkpoint's pickle for globals beyond the allow-list (nothing is run); None when it
    cannot tell (a legacy non-zip file, an opcode the scan does not know, a torch without it)."""
    try:
        return sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))))
    except Exception:  # noqa: BLE001
        return None


def unsafe_globals(path: str | Path, error: BaseException | None = None) -> list[str]:
    """The globals (module.name) a checkpoint's pickle names beyond weights_only's allow-list, found without
    running it: torch's scan of a zip checkpoint, else the names in torch's refusal `error`."""
    found = _scan(path) or []
    if not found and error is not None:
        found = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(error))))
    return found


def _torch_reason(error: BaseException) -> str:
    """The specific line of torch's weights_only refusal (its message is mostly boilerplate)."""
    text = str(error)
    match = re.search(r"(Trying to load unsupported GLOBAL [^\n]+|Unsupported global: [^\n]+|Unsupported operand \d+"
                      r"|Unsupported class [^\n]+)", text)
    if match:
        return match.group(1).strip()
    return text.strip().splitlines()[-1][:300] if text.strip() else type(error).__name__


def refusal(path: str | Path, error: BaseException | None = None) -> CheckpointError:
    """The error for a checkpoint that weights_only refuses: the file, what it wants, why, how to proceed."""
    wanted = unsafe_globals(path, error)
    if wanted:
        what = f"it asks to import and call {', '.join(wanted)}"
    else:
        what = ("it holds more than tensors and plain values, or is no torch checkpoint at all"
                + (f" (torch: {_torch_reason(error)})" if error else ""))
    return CheckpointError(
        f"checkpoint {str(path)!r} refused: {what}, and loading it could run code (unpickling calls whatever "
        f"function the file names). chestx loads only checkpoints made of tensors and plain values "
        f"(torch.load weights_only=True), as chestx.train writes them. If you trust where this file comes from, "
        f"pass {TRUST_KEY}=true on the command line to load it with weights_only=False; otherwise ask its author "
        f"for a plain state dict or a safetensors file. See docs/security.md"
    )


def _torch_load(path: Path, weights_only: bool, mmap: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except RuntimeError as err:
        if mmap and "mmap can only be used" in str(err):  # a legacy (non-zip) file: read it whole
            return torch.load(path, map_location="cpu", weights_only=weights_only)
        raise


def load_checkpoint(path: str | Path, trust: bool = False, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint file -> its content, on the CPU, without running code unless `trust`.

    `torch.load(weights_only=True)`; a file that needs more raises `refusal(...)`, or with `trust=True` is loaded
    again with weights_only=False (logged at WARNING with the file and what it needed). `mmap`: map the tensors
    instead of reading them (cheap reads of `epoch` and such). An empty, missing or unreadable file is a
    `CheckpointError` too.
    """
    path = Path(path).expanduser()
    _check_file(path)
    _check_torch()
    try:
        try:
            return _torch_load(path, weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as err:
            if not trust:
                raise refusal(path, err) from None  # torch's own text says "retry with weights_only=False"
            wanted = ", ".join(unsafe_globals(path, err)) or "non-plain objects"
            log.warning("%s=true: loading %s with weights_only=False although it asks for %s: this runs any code "
                        "the file carries", TRUST_KEY, path, wanted)
            return _torch_load(path, weights_only=False, mmap=mmap)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001  (truncated zip, a text file, a TorchScript archive, a broken pickle ...)
        raise CheckpointError(f"checkpoint {str(path)!r} is not a readable torch checkpoint (truncated, or another "
                              f"kind of file?): {type(err).__name__}: {str(err)[:300]}") from err


def lightning_weights_only(ckpt_path: str | Path | None, trust: bool = False) -> bool:
    """`weights_only` for Lightning's `trainer.fit/validate/test(ckpt_path=...)`: True, unless `trust` and the
    file needs more (a local file is scanned first, without running it; `last`, `hpc` or a URL is not). Logged."""
    if not trust or not ckpt_path:
        return True
    path = Path(str(ckpt_path)).expanduser()
    wanted = _scan(path) if path.is_file() else None
    if wanted == []:
        log.info("%s=true not needed for %s: it holds plain values only (weights_only=True)", TRUST_KEY, path)
        return True
    log.warning("%s=true: Lightning loads %s with weights_only=False%s: this runs any code the file carries",
                TRUST_KEY, ckpt_path, f" (it asks for {', '.join(wanted)})" if wanted else "")
    return False


@contextlib.contextmanager
def refusing_unsafe(path_of: Callable[[], str | Path | None]) -> Iterator[None]:
    """Around a call that loads a checkpoint with weights_only=True (Lightning's): torch's refusal becomes
    `refusal(path)`; `path_of()` gives the file (e.g. the path Lightning resolved `ckpt_path=last` to)."""
    try:
        yield
    except pickle.UnpicklingError as err:
        raise refusal(path_of() or "<unknown>", err) from None


def plain(value: Any, where: str = "value") -> Any:
    """`value` as types weights_only loads: numpy scalars / arrays -> Python numbers / lists, enums and other
    subclasses of int / float / str -> the base type, paths -> str, mappings (OmegaConf's too) -> dict with str
    keys, tuples -> tuples, other sequences and sets -> lists; anything else is a TypeError naming `where`."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (np.generic, np.ndarray)):  # before float: np.float64 is a float subclass
        return value.tolist()
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return base(value.value) if isinstance(value, Enum) else base(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, (Sequence, AbstractSet)) and not isinstance(value, (bytes, bytearray)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which a checkpoint read with "
                    "weights_only=True cannot hold: store plain values (numbers, strings, lists, dicts)")


def _loads_weights_only(value: Any) -> bool:
    buffer = io.BytesIO()
    try:
        torch.save(value, buffer)
    except Exception:  # noqa: BLE001  (cannot even be pickled: torch.save of the checkpoint would fail too)
        return False
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=True)
    except pickle.UnpicklingError:
        return False
    return True


def unsafe_entries(obj: Any, where: str = "checkpoint") -> list[str]:
    """Key paths of `obj` (a checkpoint dict about to be saved) that weights_only=True would refuse, with their
    types; [] when the whole of it loads safely. Known plain types are accepted at once, anything else is tried."""
    kind = type(obj)
    if kind in _PLAIN_LEAVES or kind in (torch.Tensor, torch.nn.Parameter):
        return []
    if kind in _PLAIN_CONTAINERS:
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        out = []
        for key, value in items:
            out += unsafe_entries(key, f"{where} key") if not isinstance(key, (str, int)) else []
            out += unsafe_entries(value, f"{where}[{key!r}]")
        return out
    return [] if _loads_weights_only(obj) else [f"{where}: {kind.__module__}.{kind.__qualname__}"]

