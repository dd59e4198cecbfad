"""Datasets, the LightningDataModule and the procedural synthetic data of unsup3d.

``Unsup3DDataModule`` reads the layout of the original release (``<root>/{train,val,test}``, with
``<split>/image`` + ``<split>/depth`` for ground-truth depth); see ``data/README.md``.
"""

from .datamodule import Unsup3DDataModule
from .datasets import (
    CorruptImageWarning,
    ImageFolderDataset,
    UnreadableFileError,
    find_depth_pairs,
    load_depth,
)

__all__ = [
    "CorruptImageWarning",
    "ImageFolderDataset",
    "UnreadableFileError",
    "Unsup3DDataModule",
    "find_depth_pairs",
    "load_depth",
]
