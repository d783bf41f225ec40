"""One module per dataset, each a `ChestXData` subclass (`base`) with its label-file reader: `nih`, `chexpert`,
`mimic`, `padchest`, `vindr`, `rsna`, `siim`, `nih_expert` (Google's relabels of NIH images), `csv_folder` (any
labelled folder). `conf/data/<name>.yaml` instantiates them; docs/datasets/ has a page each."""
