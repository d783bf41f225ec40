"""One module per dataset, each a `ChestXData` subclass (`base`) with its label-file reader: `nih`, `chexpert`,
`mimic`, `padchest`, `vindr`, `rsna`, `siim`, `nih_expert` (Google's relabels of NIH images), `csv_folder` (any
labelled folder). `conf/data/<name>.yaml` instantiates them; docs/datasets/ has a page each."""


def dataset_targets() -> frozenset[str]:
    """The exact `_target_` of every chestx dataset class (conf/data/*.yaml, the classes of this package): the only
    ones chestx calls from a config.yaml someone hands it (chestx.core.handed_config). One place, to become the
    dataset registry's list where one exists; tests/core/test_handed_config.py checks it against both."""
    return frozenset({
        "chestx.data.datasets.chexpert.CheXpertData",
        "chestx.data.datasets.csv_folder.CSVData",
        "chestx.data.datasets.merge.MergedData",
        "chestx.data.datasets.mimic.MIMIC_CXRData",
        "chestx.data.datasets.nih.NIHData",
        "chestx.data.datasets.nih_expert.NIHExpertData",
        "chestx.data.datasets.padchest.PadChestData",
        "chestx.data.datasets.rsna.RSNAPneumoniaData",
        "chestx.data.datasets.siim.SIIMData",
        "chestx.data.datasets.vindr.VinDrData",
    })
