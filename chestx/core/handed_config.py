"""A config.yaml someone hands chestx (a run folder's): what of it may be instantiated, decided on what is called.

Hydra's `instantiate` imports and calls every `_target_` of the node it gets, after resolving its `${...}`
interpolations, so a run folder's config.yaml can run code as a checkpoint can. chestx.clinical instantiates such a
file's data node (to find the test images) only through `handed_node`, which refuses it unless:

- it is plain YAML (`yaml.safe_load`: a `!!python/...` tag is an error, never an object) without aliases
  (`*name`: OmegaConf never writes them, and nested ones expand exponentially);
- no key or value holds `${`: no interpolation, no resolver (`${oc.env:...}`, `${oc.decode:...}`, ...), no escaped
  `\\${...}` (which resolves to the text `${...}` and would be an interpolation the next time it is read). chestx
  writes config.yaml resolved (`OmegaConf.to_yaml(cfg, resolve=True)`), so an interpolation there was put in by
  hand. Refusing, rather than resolving and then checking, keeps resolvers from running at all (`oc.env` reads the
  environment, any registered resolver runs code) and makes the checked tree the very tree handed to `instantiate`:
  a plain dict without interpolations is its own resolution;
- every `_target_`, at any depth (nested nodes, list items, `_args_`, merge sources), is exactly one of `allowed`
  (chestx's dataset classes: `chestx.data.datasets.dataset_targets()`), never a prefix of one: Hydra follows
  attributes, so `chestx.data.datasets.csv.pd.read_pickle` is `pandas.read_pickle`;
- no other Hydra key (`_args_`, `_partial_`, `_recursive_`, `_convert_`): chestx's data configs use none.

Each refusal names the file, the key path (`data.sources.x._target_`, `data.views[1]`) and the target or value.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

TARGET = "_target_"
HYDRA_KEYS = ("_args_", "_partial_", "_recursive_", "_convert_")  # Hydra's other instantiate keys: none allowed
INTERPOLATION = "${"
MAX_CONFIG_BYTES = 1 << 20  # a config.yaml chestx writes is a few kB; a larger handed-in one is not read


class UnsafeConfigError(ValueError):
    """A handed-in config that may not be instantiated; the message names the file, the key paths and the targets."""


def _child(where: str, key: Any) -> str:
    return f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}"


def refusals(tree: Any, allowed: Collection[str], where: str = "data") -> list[str]:
    """'<key path>: <why>' for everything in the plain tree `tree` (the node at key path `where`) that stops it from
    being instantiated: `_target_`s not exactly in `allowed`, other Hydra keys, `${` in a key or a value."""
    found: list[str] = []
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            path = _child(where, key)
            if isinstance(key, str) and INTERPOLATION in key:
                found.append(f"{path}: the key {key!r} is an interpolation")
            if key == TARGET:
                if not (isinstance(value, str) and value in allowed):
                    shown = value if isinstance(value, str) else repr(value)
                    found.append(f"{path}: calls {shown}, which is not a chestx dataset class")
                    if not isinstance(value, str):
                        found += refusals(value, allowed, path)
                continue
            if key in HYDRA_KEYS:
                found.append(f"{path}: Hydra's {key} (= {value!r}), which chestx's data configs never use")
            found += refusals(value, allowed, path)
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            found += refusals(value, allowed, _child(where, index))
    elif isinstance(tree, str) and INTERPOLATION in tree:
        found.append(f"{where}: {tree!r} is an interpolation or a resolver, which chestx never writes into "
                     "config.yaml")
    return found


def read_handed(path: str | Path) -> dict[str, Any]:
    """A handed-in config.yaml as plain data (`yaml.safe_load`); `UnsafeConfigError` naming the file otherwise."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UnsafeConfigError(f"{path}: {path.stat().st_size:,} bytes, more than a config chestx writes "
                                    f"({MAX_CONFIG_BYTES:,} at most): not read")
        text = path.read_text()
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise UnsafeConfigError(f"{path}: uses YAML aliases (*name), which chestx never writes (a few nested "
                                    "aliases expand to billions of nodes, a recursive one never ends)")
        tree = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UnsafeConfigError(f"{path}: not a readable plain YAML file ({type(err).__name__}: {err})") from err
    if not isinstance(tree, dict):
        raise UnsafeConfigError(f"{path}: not a config (a YAML mapping), but {type(tree).__name__}")
    return tree


def handed_node(path: str | Path, key: str, allowed: Collection[str]) -> dict[str, Any]:
    """The `key` node of the handed-in config file `path`, checked by `refusals`: what may be given to Hydra's
    `instantiate` as it is. `UnsafeConfigError` naming the file, each key path and target otherwise."""
    node = read_handed(path).get(key)
    if not isinstance(node, dict):
        raise UnsafeConfigError(f"{path}: no '{key}' node (a mapping with a _target_) to instantiate")
    found = refusals(node, allowed, key)
    if found:
        raise UnsafeConfigError(f"{path}: {'; '.join(found)}. Not called: Hydra would import and call it, and only "
                                f"chestx's dataset classes, written out without interpolations, are called from a "
                                f"config.yaml someone hands you (docs/security.md)")
    return node
