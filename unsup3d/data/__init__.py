"""Datasets, the LightningDataModule and the procedural synthetic data of unsup3d.

``Unsup3DDataModule`` reads the layout of the original release (``<root>/{train,val,test}``, with
``<split>/image`` + ``<split>/depth`` for ground-truth depth); see ``data/README.md``.
"""

from .datamodule import Unsup3DDataModule
from .datasets import (
    IMG_EXTENSIONS,
    CorruptImageWarning,
    ImageFolderDataset,
    UnreadableFileError,
    depth_to_png_value,
    depth_to_uint16,
    find_depth_pairs,
    find_images,
    load_depth,
    png_value_to_depth,
)

__all__ = [
    "IMG_EXTENSIONS",
    "CorruptImageWarning",
    "ImageFolderDataset",
    "UnreadableFileError",
    "Unsup3DDataModule",
    "depth_to_png_value",
    "depth_to_uint16",
    "find_depth_pairs",
    "find_images",
    "load_depth",
    "png_value_to_depth",
]
