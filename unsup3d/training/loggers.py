"""Training's loggers: Weights & Biases (online when an API key is configured, offline otherwise: the
package's one rule, :func:`unsup3d.tracking.wandb_mode`), and CSV and TensorBoard logs that a resumed run
continues instead of replacing.

:func:`wandb_logger` is the training logger of ``conf/logger/wandb.yaml``: a Lightning ``WandbLogger``
whose run lives in the run directory and keeps one id per run directory, so a resumed training
continues the same W&B run.

Resuming (``conf/logger/csv.yaml``, ``tensorboard.yaml``; :class:`ContinueLogs`, which training adds):

* :class:`ContinuingCSVLogger` keeps ``metrics.csv`` (Lightning's CSV logger deletes it when it starts)
  and appends to it. At the start of training, rows at or after the step the run starts from (logged by
  an interrupted run after its last checkpoint, so logged again now) leave the file: the whole earlier
  file is kept as ``metrics.previous-<time>.csv`` first. A run starting at step 0 (``resume=false``)
  moves the earlier file there entirely. Header changes rewrite the file atomically.
* :class:`ContinuingTensorBoardLogger`: TensorBoard keeps every event file; a resumed run marks its start
  step as a purge point (what ``SummaryWriter(purge_step=...)`` writes), so TensorBoard hides the earlier
  files' events at and after that step instead of drawing them twice.
* W&B continues the same run (:func:`wandb_logger`); W&B itself ignores steps below the run's last one.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import wandb
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from unsup3d.files.atomic import atomic_save_text
from unsup3d.tracking import WANDB_MODES, wandb_mode

__all__ = [
    "RUN_ID_FILE",
    "ContinueLogs",
    "ContinuingCSVLogger",
    "ContinuingTensorBoardLogger",
    "finish_loggers",
    "wandb_logger",
]

log = logging.getLogger(__name__)

#: The file, in the run directory, holding the W&B run id of that directory.
RUN_ID_FILE = "wandb_run_id.txt"


def _run_id(save_dir: Path) -> str:
    """The W&B run id of a run directory: read from its ``wandb_run_id.txt``, else made and kept there."""
    id_file = save_dir / RUN_ID_FILE
    if id_file.exists():
        return id_file.read_text().strip()
    run_id = secrets.token_hex(4)
    save_dir.mkdir(parents=True, exist_ok=True)
    id_file.write_text(run_id)
    return run_id


def wandb_logger(
    save_dir: str | os.PathLike,
    name: str | None = None,
    project: str = "unsup3d",
    entity: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    mode: str = "auto",
    log_model: bool = False,
) -> WandbLogger:
    """A Lightning ``WandbLogger`` for a training run.

    Args:
        save_dir: the run directory (``paths.output_dir``); W&B writes under ``<save_dir>/wandb``.
        name, project, entity, group, tags, log_model: as W&B's.
        mode: ``auto`` (:func:`unsup3d.tracking.wandb_mode`), ``online``, ``offline`` or ``disabled``.

    Raises:
        ValueError: an unknown ``mode``.
    """
    if mode not in WANDB_MODES:
        raise ValueError(f"mode must be one of {', '.join(WANDB_MODES)}; got {mode!r}")
    resolved = wandb_mode(mode)
    save_dir = Path(save_dir)
    logger = WandbLogger(
        project=project, entity=entity, group=group, tags=list(tags or []), name=name, save_dir=str(save_dir),
        id=_run_id(save_dir), resume="allow", mode=resolved, log_model=log_model,
    )
    if resolved == "offline":
        log.info("W&B is offline (no API key): sync later with `wandb sync %s/wandb/offline-run-*`", save_dir)
    return logger


def finish_loggers(loggers: Iterable[Logger]) -> None:
    """Close the W&B runs of ``loggers``, so a later run in the same process starts its own (wandb reuses
    an active run)."""
    if any(isinstance(logger, WandbLogger) for logger in loggers) and wandb.run is not None:
        wandb.finish()


# ------------------------------------------------------------------------------------- resumed logs
_EVENT_FILES = itertools.count()


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _csv_step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return float("nan")


class _ContinuingWriter(ExperimentWriter):
    """Lightning's CSV experiment writer, keeping an existing ``metrics.csv`` and appending to it."""

    def _check_log_dir_exists(self) -> None:
        # Lightning deletes metrics.csv here (with a warning). Keep it: its header is the starting key set,
        # so new rows are appended under it (and a new key rewrites the file with a wider header). This
        # overrides a private hook of Lightning's writer: no public option keeps the file.
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                self.metrics_keys = list(next(csv.reader(fh), []))

    def _read_rows(self) -> list[dict[str, str]]:
        with open(self.metrics_file_path, newline="") as fh:
            return list(csv.DictReader(fh))

    def _write_rows(self, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        atomic_save_text(self.metrics_file_path, buf.getvalue())

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        self._write_rows(fieldnames, self._read_rows())  # atomically: a crash keeps the old file

    def continue_at(self, step: int) -> Path | None:
        """Training (re)starts at ``step``: rows logged at ``step`` or later leave ``metrics.csv``, which is
        first kept whole as ``metrics.previous-<time>.csv``. Returns that file, or None when nothing moved."""
        self.save()
        if not os.path.isfile(self.metrics_file_path):
            return None
        rows = self._read_rows()
        earlier = [r for r in rows if not _csv_step(r) >= step]  # rows without a step stay
        if len(earlier) == len(rows):
            return None
        aside = Path(self.log_dir) / f"metrics.previous-{_stamp()}.csv"
        n = 1
        while aside.exists():
            aside = aside.with_name(f"metrics.previous-{_stamp()}-{n}.csv")
            n += 1
        if earlier:
            shutil.copy2(self.metrics_file_path, aside)
            self._write_rows(self.metrics_keys, earlier)
        else:
            os.rename(self.metrics_file_path, aside)
            self.metrics_keys = []
        log.info("CSV log: the rows from step %d on (%d) were logged before the run restarted there; the earlier "
                 "file is kept as %s", step, len(rows) - len(earlier), aside)
        return aside


class ContinuingCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` (same arguments) that keeps the metrics of the run it resumes.

    Lightning's writer deletes ``metrics.csv`` when it starts; this one appends to it, and
    :meth:`continue_at` (called by :class:`ContinueLogs` when training starts) sets aside only the rows a
    resumed run logs again (see the module docstring). Writes to a local folder.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> _ContinuingWriter:
        """Rank 0's writer, made on first use. Lightning's ``CSVLogger.experiment`` builds its own writer class
        here and keeps it in ``_experiment``; there is no public way to give it another class, so this
        property is its copy with :class:`_ContinuingWriter`."""
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment

    def continue_at(self, step: int) -> Path | None:
        """See :meth:`_ContinuingWriter.continue_at` (rank 0's writer)."""
        return self.experiment.continue_at(step)


class ContinuingTensorBoardLogger(TensorBoardLogger):
    """Lightning's ``TensorBoardLogger`` (same arguments) whose resumed run hides, in TensorBoard, the events
    an interrupted run logged after its last checkpoint (the earlier event files stay on disk).

    Each writer's event file also gets its own name (``filename_suffix`` ``.<pid>.<n>`` unless given):
    tensorboardX names the file after the second it was opened and opens it for writing, so a run
    restarted within the same second would otherwise truncate the earlier run's file.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("filename_suffix", f".{os.getpid()}.{next(_EVENT_FILES)}")
        super().__init__(*args, **kwargs)

    def continue_at(self, step: int) -> None:
        """Training (re)starts at ``step``: where ``step > 0``, write the purge marker ``SummaryWriter(
        purge_step=step)`` writes (an event with the file version and a ``SessionLog.START`` at ``step``), after
        which TensorBoard drops the earlier events at ``step`` and later."""
        if step <= 0:
            return
        writer = self.experiment
        module = type(writer).__module__
        if module.startswith("tensorboardX"):
            from tensorboardX.proto.event_pb2 import Event, SessionLog
        else:  # torch.utils.tensorboard (with the tensorboard package)
            from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        # No public API writes a purge marker into an open writer (SummaryWriter's purge_step is a constructor
        # argument, and Lightning opened the writer before the resumed step was known): write the events
        # through its event-file writer, which torch and tensorboardX expose only as _get_file_writer(), as
        # Lightning's own log_hyperparams does.
        file_writer = writer._get_file_writer()
        file_writer.add_event(Event(step=int(step), file_version="brain.Event:2"))
        file_writer.add_event(Event(step=int(step), session_log=SessionLog(status=SessionLog.START)))
        writer.flush()


class ContinueLogs(pl.Callback):
    """When training starts (after a resumed checkpoint is restored), tell every logger with a
    ``continue_at(step)`` method the step it starts from (global rank 0): see :class:`ContinuingCSVLogger`
    and :class:`ContinuingTensorBoardLogger`. :func:`unsup3d.training.run.train` adds it to every run."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            continue_at = getattr(logger, "continue_at", None)
            if callable(continue_at):
                continue_at(int(trainer.global_step))
