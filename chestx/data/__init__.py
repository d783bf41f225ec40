"""The data wing, one sub-package per job (docs/design.md, "The data wing"):

    errors     DataError, DataFileNotFoundError, ImageReadError
    labels/    the LabelTable and label-file helpers, the finding vocabulary, patient splits, label statistics
    images/    format and header checks, decoding (PNG / JPEG / DICOM), the resize cache
    datasets/  the base class and the registry, one module per dataset, merge
    loading/   transforms, the torch Dataset, sampling, the LightningDataModule

Each imports only those listed below it (labels and images not each other): an import-linter contract
(pyproject.toml, tests/test_layers.py). Import from the modules; this package imports nothing, so that
`import chestx.data.labels.table` loads no OpenCV and no torch.
"""
