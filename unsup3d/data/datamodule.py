"""LightningDataModule over the train/val/test image folders of one dataset (``conf/dataset/*.yaml``).

Batches are dicts (batch-first)::

    {"image": B x 3 x S x S float32 in [0, 1],
     "depth": B x S x S float32 in [min_depth, max_depth] (only when has_depth),
     "path":  list[str] of B image paths}
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .datasets import ImageFolderDataset, normalize_crop
from .workers import main_exiting_event, worker_init

__all__ = ["Unsup3DDataModule"]

_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def _plain(value):
    """OmegaConf containers (from Hydra) to plain Python values."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return [_plain(v) for v in value]


class Unsup3DDataModule(pl.LightningDataModule):
    """Data of one dataset in the original release's layout ``<root>/{train,val,test}``.

    Args:
        root: dataset folder holding the split folders.
        image_size: side ``S`` of the square images fed to the model.
        batch_size: batch size of every loader.
        num_workers: loader worker processes (0: load in the main process).
        pin_memory: pin batches in page-locked memory (useful with a GPU).
        persistent_workers: keep workers alive between epochs (only with ``num_workers > 0``).
        crop: ``None``, an int (centre crop) or ``[y0, x0, h, w]`` applied before resizing.
        has_depth: load paired ground-truth depth (``<split>/image`` + ``<split>/depth``).
        depth_dir_substitution: ``[image folder name, depth folder name]``.
        depth_filename_substitution: ``[old, new]`` replaced in image file names to get the depth
            file names (``None``: same names).
        min_depth, max_depth: depth decoding range (see :func:`~unsup3d.data.datasets.load_depth`).
        seed: seed of the training shuffle order and of the random flips.
        train_flip: random horizontal flips (image and depth together) for training only.
        max_samples_per_split: keep only the first N files of each split (quick runs).
        train_split, val_split, test_split: split folder names under ``root`` (``"."``: the root itself).
        drop_last: drop the last incomplete training batch.
        name: dataset name (informational; lets ``Unsup3DDataModule(**cfg.dataset)`` work).

    Raises (at :meth:`setup`):
        FileNotFoundError: the root or a needed split folder is missing, a split holds no images,
            or images lack their depth file; the message names the path and the expected layout.
    """

    def __init__(
        self,
        root: str | Path = "data/synthetic",
        image_size: int = 64,
        batch_size: int = 64,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        crop: int | Sequence[int] | None = None,
        has_depth: bool = False,
        depth_dir_substitution: Sequence[str] = ("image", "depth"),
        depth_filename_substitution: Sequence[str] | None = ("image", "depth"),
        min_depth: float = 0.9,
        max_depth: float = 1.1,
        seed: int = 0,
        train_flip: bool = True,
        max_samples_per_split: int | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        drop_last: bool = True,
        name: str | None = None,
    ):
        super().__init__()
        self.name = name
        if root is None or str(root) in ("", "???"):
            raise ValueError("dataset root is not set: pass dataset.root=/path/to/data (see data/README.md)")
        self.root = Path(str(root)).expanduser()
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.crop = normalize_crop(_plain(crop))
        self.has_depth = bool(has_depth)
        self.depth_dir_substitution = _plain(depth_dir_substitution)
        self.depth_filename_substitution = _plain(depth_filename_substitution)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.seed = int(seed)
        self.train_flip = bool(train_flip)
        self.max_samples_per_split = None if max_samples_per_split is None else int(max_samples_per_split)
        self.split_names = {"train": train_split, "val": val_split, "test": test_split}
        self.drop_last = bool(drop_last)
        self.datasets: dict[str, ImageFolderDataset] = {}
        self.save_hyperparameters(
            {
                "root": str(self.root),
                "image_size": self.image_size,
                "crop": self.crop if not isinstance(self.crop, tuple) else list(self.crop),
                "has_depth": self.has_depth,
                "min_depth": self.min_depth,
                "max_depth": self.max_depth,
                "seed": self.seed,
                "name": name,
            }
        )

    # ----------------------------------------------------------------------------------- setup
    def split_dir(self, split: str) -> Path:
        """Folder of ``split`` ("train", "val" or "test")."""
        return self.root / self.split_names[split]

    def _check_layout(self, split: str) -> None:
        expected = ", ".join(dict.fromkeys(str(self.root / n) for n in self.split_names.values()))
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"dataset root '{self.root}' does not exist; expected folders {expected} "
                "(see data/README.md for how to prepare each dataset)"
            )
        folder = self.split_dir(split)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{split} split folder '{folder}' does not exist; dataset root '{self.root}' should "
                f"hold the folders {expected} (see data/README.md)"
            )

    def build_dataset(self, split: str) -> ImageFolderDataset:
        """Create the dataset of one split (random flips only for "train" when ``train_flip``)."""
        self._check_layout(split)
        return ImageFolderDataset(
            self.split_dir(split),
            image_size=self.image_size,
            crop=self.crop,
            flip=self.train_flip and split == "train",
            has_depth=self.has_depth,
            depth_dir_substitution=self.depth_dir_substitution,
            depth_filename_substitution=self.depth_filename_substitution,
            min_depth=self.min_depth,
            max_depth=self.max_depth,
            max_samples=self.max_samples_per_split,
            seed=self.seed,
        )

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets a stage needs ("fit": train + val, "validate", "test"/"predict"; None: all)."""
        splits = _STAGE_SPLITS.get(stage, ("train", "val", "test")) if stage else ("train", "val", "test")
        for split in splits:
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)

    # ------------------------------------------------------------------------------- loaders
    def dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        """Loader of any split ("train", "val", "test"), e.g. the training split without shuffling."""
        return self._loader(split, shuffle)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        workers = self.num_workers
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and workers > 0,
            drop_last=self.drop_last and shuffle and len(self.datasets[split]) >= self.batch_size,
            generator=generator,
            worker_init_fn=functools.partial(worker_init, main_exiting=main_exiting_event()) if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    # ------------------------------------------------------------------------------ reporting
    @property
    def num_skipped(self) -> int:
        """Unreadable files skipped so far, over all splits and loader workers (log this)."""
        return sum(ds.num_skipped for ds in self.datasets.values())

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.datasets.items())
        return f"Unsup3DDataModule(name={self.name!r}, root='{self.root}', image_size={self.image_size}, {sizes})"
