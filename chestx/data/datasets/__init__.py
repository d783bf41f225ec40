"""One module per dataset, each named as its config and registered under that name (`registry`): `nih`,
`chexpert`, `mimic_cxr`, `padchest`, `vindr_cxr`, `rsna_pneumonia`, `siim`, `nih_expert` (Google's relabels of NIH
images), `openi`, `csv` (any labelled folder), `merge` (several as one). Each is a `ChestXData` subclass (`base`:
the chores) with its label-file reader and its declarations (`label_files`; `images`, one of the finders of
`image_finders`); `vocabulary` renders the findings table from the registry.
`conf/data/<name>.yaml` instantiates them; docs/datasets/ has a page each."""


def dataset_targets() -> frozenset[str]:
    """The exact `_target_` of every registered dataset class (`registry`): the only ones chestx calls from a
    config.yaml someone hands it (chestx.core.handed_config); tests/core/test_handed_config.py checks them against
    conf/data/*.yaml."""
    from chestx.data.datasets.registry import registered

    return frozenset(f"{info.cls.__module__}.{info.cls.__qualname__}" for info in registered().values())
