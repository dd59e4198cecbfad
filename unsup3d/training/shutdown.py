"""Stopping training on a signal: SIGTERM (pre-emption, ``kill``) and SIGINT (Ctrl-C) save ``last.ckpt``
and end the run cleanly with :class:`TrainingInterrupted`.

SIGTERM is handled by Lightning: its handler sets ``trainer.received_sigterm`` (and forwards the signal
to DDP worker processes). While training runs, SIGINT gets a handler of :class:`GracefulShutdown` that
does the same for the first Ctrl-C; a second Ctrl-C stops at once, without saving (as Lightning does).
Data-loader workers ignore both, except SIGTERM once the main process is exiting or gone
(:func:`unsup3d.data.workers.worker_init`). A stop is acted on at the end of a
training step (all ranks agree on it), so the checkpoint holds a finished optimizer step: the trainer
writes ``last.ckpt`` (weights, optimizer, step count, loops) and :class:`TrainingInterrupted` ends
``trainer.fit``. A SIGTERM that arrives during validation stops there (Lightning's
``SIGTERMException``) and is saved the same way.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from unsup3d.training.checkpoint_io import last_checkpoint_path

__all__ = ["GracefulShutdown", "TrainingInterrupted"]

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Training stopped on ``signal_name`` at ``step``; ``checkpoint`` is the file saved then (None when
    nothing was saved). :attr:`exit_code` is the shell's status for that signal (128 + its number)."""

    def __init__(self, signal_name: str, step: int | None = None, checkpoint: Path | None = None):
        self.signal_name = signal_name
        self.step = step
        self.checkpoint = checkpoint
        super().__init__(signal_name)

    @property
    def exit_code(self) -> int:
        return 128 + int(getattr(signal, self.signal_name, signal.SIGTERM))

    def __str__(self) -> str:
        where = f" at step {self.step}" if self.step is not None else ""
        if self.checkpoint is None:
            return f"training stopped by {self.signal_name}{where}; no checkpoint was saved on the way out"
        return (f"training stopped by {self.signal_name}{where}: saved '{self.checkpoint}'; run the same "
                "command again to resume from it")


class GracefulShutdown(pl.Callback):
    """On SIGTERM or SIGINT: finish the current training step, save ``last.ckpt``, stop the run.

    ``trainer.fit`` then raises :class:`TrainingInterrupted` (``unsup3d-train`` prints its message and
    exits with status 143 for SIGTERM, 130 for SIGINT). The checkpoint goes to the ``last.ckpt`` of the
    trainer's :class:`~pytorch_lightning.callbacks.ModelCheckpoint` (nothing is saved without one).
    """

    def __init__(self) -> None:
        self.sigint_received = False
        self.saved: Path | None = None
        self._previous_sigint: Any = None

    # ----------------------------------------------------------------------------- signals
    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.sigint_received = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once
        print("\nCtrl-C: stopping after this training step and saving last.ckpt "
              "(press Ctrl-C again to stop at once without saving)", file=sys.stderr, flush=True)

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
        self._previous_sigint = None

    # ------------------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after Lightning registered its SIGTERM handler (it restores the handlers it found at the end)
        self.sigint_received = False
        self.saved = None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_sigint()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        requested = self.sigint_received or trainer.received_sigterm
        if trainer.strategy.reduce_boolean_decision(requested, all=False):  # any rank: every rank stops
            raise TrainingInterrupted("SIGINT" if self.sigint_received else "SIGTERM", trainer.global_step)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        if not isinstance(exception, (TrainingInterrupted, SIGTERMException)) or trainer.sanity_checking:
            return
        path = last_checkpoint_path(trainer.checkpoint_callbacks)
        if path is not None:
            trainer.save_checkpoint(path)
            self.saved = path
        if isinstance(exception, TrainingInterrupted):
            exception.checkpoint = self.saved
