"""The dataset registry: every dataset chestx reads declares itself once, as timm registers its models.

    @register_dataset("vindr_cxr", findings=(...), left_out=..., regions=Regions("box", ...))
    class VinDrData(ChestXData): ...

The name is the one name of the dataset everywhere: its config (`data=vindr_cxr`, `test_data=[vindr_cxr]`), its run
folders (`external/vindr_cxr/`, `chestx.core.run_folder.dataset_name`), its column of the finding vocabulary
(docs/datasets/findings.md, `chestx.data.datasets.vocabulary`), merge's patient checks (`image_pool`) and the
every-dataset tests. `registered()` imports every module of `chestx.data.datasets` (a new module registers itself by
being there) and returns the declarations in name order; nothing lists datasets by hand.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import pandas as pd

from chestx.data.errors import DataError

# modules of chestx.data.datasets that are not datasets (the base class, this registry, shared helpers)
_NOT_DATASETS = frozenset({"base", "registry", "vocabulary", "dicom_meta", "image_finders"})
REGION_KINDS: tuple[str, ...] = ("box", "mask")


@dataclass(frozen=True)
class ImagePool:
    """The image collection a dataset's images are drawn from, and whether it keeps that collection's patient ids."""

    name: str       # e.g. "NIH ChestX-ray14"
    key: str        # patient-id prefix of the collection's real ids in a merge
    real_ids: bool  # True: the collection's own patient ids; False: anonymised (no patient can be matched)


NIH_CXR14 = ImagePool("NIH ChestX-ray14", "nih-cxr14", real_ids=True)
NIH_CXR14_ANONYMISED = ImagePool("NIH ChestX-ray14", "nih-cxr14", real_ids=False)


@dataclass(frozen=True)
class Regions:
    """Where a dataset marks findings on its images, as the pointing game reads them (`chestx.explain.pointing_game`).

    `read(path)` -> image_id, pathology, x, y, w, h (and `masks`: run-length strings, for masks); `columns`: the
    header that identifies the file; `source_size`: the side of the square grid of the coordinates (NaN: each
    image's own pixels); `files`: the file names, for messages."""

    kind: str                                    # "box" | "mask"
    columns: frozenset[str]
    read: Callable[[Path], pd.DataFrame]
    source_size: float
    files: str


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset declares once (see the module docstring)."""

    name: str                                    # config name = run-folder name = vocabulary key
    cls: type                                    # its ChestXData subclass
    findings: tuple[str, ...]                    # every finding it can label, under its own names (() for data=csv
                                                 # and data=merge, whose findings are the user's / the sources')
    left_out: Callable[[], str] | None           # what its files hold that no finding reads, and why (Markdown)
    image_pool: ImagePool | None                 # the collection its images come from (None: a pool of its own)
    regions: Regions | None                      # boxes or masks the pointing game can read


_REGISTRY: dict[str, DatasetInfo] = {}
T = TypeVar("T", bound=type)


def register_dataset(name: str, findings: tuple[str, ...] = (), left_out: Callable[[], str] | str | None = None,
                     image_pool: ImagePool | None = None, regions: Regions | None = None) -> Callable[[T], T]:
    """Class decorator: declare a dataset (see the module docstring); sets `cls.name`."""
    if regions is not None and regions.kind not in REGION_KINDS:
        raise ValueError(f"register_dataset({name!r}): regions.kind={regions.kind!r} is not one of {REGION_KINDS}")

    def register(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"dataset {name!r} is registered twice: {_REGISTRY[name].cls.__name__} and {cls.__name__}")
        text = (lambda: left_out) if isinstance(left_out, str) else left_out
        _REGISTRY[name] = DatasetInfo(name, cls, tuple(findings), text, image_pool, regions)
        cls.name = name
        return cls

    return register


def registered() -> dict[str, DatasetInfo]:
    """Every dataset of `chestx.data.datasets`, by name (every module of the package is imported once)."""
    import chestx.data.datasets as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in _NOT_DATASETS:
            importlib.import_module(f"{package.__name__}.{module.name}")
    return dict(sorted(_REGISTRY.items()))


def dataset_info(name: str) -> DatasetInfo:
    """The declaration of dataset `name`; DataError naming the registered ones otherwise."""
    every = registered()
    if name not in every:
        raise DataError(f"no dataset is registered as {name!r}; the datasets are {sorted(every)}")
    return every[name]


def info_of(cls: type) -> DatasetInfo | None:
    """The declaration of a dataset class (or of the first registered class it derives from); None if none."""
    for base in cls.__mro__:
        name = getattr(base, "name", None)
        if isinstance(name, str) and _REGISTRY.get(name) is not None and _REGISTRY[name].cls is base:
            return _REGISTRY[name]
    return None
