"""From a dataset to batches: transforms, the torch Dataset, sampling, the LightningDataModule."""
