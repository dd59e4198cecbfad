"""Training's checkpoint files: where the trainer writes them (:func:`checkpoint_dir`,
:func:`last_checkpoint_path`) and how (:class:`AtomicCheckpointIO`: to a temporary file in the same
folder, fsynced, then renamed, so an interrupted save never leaves a half-written file or destroys the
previous one). Reading a checkpoint into a model is :mod:`unsup3d.checkpoint`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from unsup3d.files.atomic import atomic_torch_save

__all__ = ["AtomicCheckpointIO", "checkpoint_dir", "last_checkpoint_path"]


def _checkpointers(callbacks: Iterable[Any]) -> list[ModelCheckpoint]:
    return [c for c in callbacks if isinstance(c, ModelCheckpoint) and c.dirpath]


def checkpoint_dir(callbacks: Iterable[Any]) -> Path | None:
    """The folder of training's checkpoints: that of the first :class:`ModelCheckpoint` among
    ``callbacks`` that writes to a folder (None without one)."""
    found = _checkpointers(callbacks)
    return Path(found[0].dirpath) if found else None


def last_checkpoint_path(callbacks: Iterable[Any]) -> Path | None:
    """``<folder>/last.ckpt`` of the first :class:`ModelCheckpoint` among ``callbacks`` that writes one
    (``save_last``); None without one."""
    found = [c for c in _checkpointers(callbacks) if c.save_last]
    if not found:
        return None
    mc = found[0]
    return Path(mc.dirpath) / f"{mc.CHECKPOINT_NAME_LAST}{mc.FILE_EXTENSION}"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the same folder, then renamed: an interrupted
    save never leaves a half-written file or destroys the previous one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)
