"""One module per dataset, each named as its config and registered under that name (`registry`): `nih`,
`chexpert`, `mimic_cxr`, `padchest`, `vindr_cxr`, `rsna_pneumonia`, `siim`, `nih_expert` (Google's relabels of NIH
images), `openi`, `csv` (any labelled folder), `merge` (several as one). Each is a `ChestXData` subclass (`base`:
the chores) with its label-file reader; `vocabulary` renders the findings table from the registry.
`conf/data/<name>.yaml` instantiates them; docs/datasets/ has a page each."""
