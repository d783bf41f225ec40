"""The data wing's errors, below every other module of it (labels, images, datasets and loading raise them)."""
from __future__ import annotations


class DataError(ValueError):
    """A label file or a data option is wrong; the message names the file/option, the value and the fix."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A label or list file does not exist (also a FileNotFoundError)."""


class ImageReadError(Exception):
    """An image file cannot be read or decoded; the message names the path and the reason."""
