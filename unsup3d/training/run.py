"""Build and run a training job from a composed Hydra config (``unsup3d-train``, ``scripts/train.py``).

Every component is built from its ``_target_`` (:func:`unsup3d.config.instantiate_node`): the datamodule
(``dataset``), the model, the loggers (``logger.<name>``), the callbacks (``callbacks.<name>``, null ones
left out) and the trainer. :func:`validate_config` checks them all against their targets' signatures
first, so an unknown key or a bad value fails at start-up with a message naming it. Everything is
written under the run directory :func:`unsup3d.config.run_dir` (``paths.output_dir``: Hydra's run
directory in the app, or what a composed config sets).

Resuming (:func:`resume_checkpoint`, :mod:`unsup3d.training.resume`): every checkpoint records the run's
config; ``resume=true`` continues from the newest readable checkpoint of the run's checkpoint folder
only when the keys that decide what is trained match, and sets corrupt files aside. A SIGTERM or
Ctrl-C saves ``last.ckpt`` and ends :func:`train` with :class:`~unsup3d.training.shutdown.TrainingInterrupted`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.callbacks import LearningRateMonitor, ProgressBar
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from unsup3d.checkpoint import load_checkpoint_file, load_weights
from unsup3d.config import ConfigError, check_entries, check_node, instantiate_node, run_dir
from unsup3d.data import Unsup3DDataModule
from unsup3d.files.atomic import remove_stale_temp_files
from unsup3d.fused import set_auto_compile
from unsup3d.model import Unsup3D
from unsup3d.training.checkpoint_io import AtomicCheckpointIO, checkpoint_dir, last_checkpoint_path
from unsup3d.training.loggers import ContinueLogs, finish_loggers
from unsup3d.training.resume import (
    RecordRunConfig,
    SetAsidePreviousRun,
    check_resume,
    find_resume_checkpoint,
    run_record,
)
from unsup3d.training.shutdown import GracefulShutdown, TrainingInterrupted
from unsup3d.training.threads import AdaptiveThreads

log = logging.getLogger(__name__)

__all__ = [
    "validate_config", "build_datamodule", "build_model", "build_loggers", "build_callbacks", "build_trainer",
    "resume_checkpoint", "train",
]


def validate_config(cfg: DictConfig) -> None:
    """Check every group of a composed training config; raise :class:`ConfigError` naming the bad key.

    The config is resolved in place (its interpolations replaced by their values).
    """
    run_dir(cfg)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:  # interpolation errors name the key themselves
        raise ConfigError(f"config does not resolve: {exc}") from exc
    for group in ("dataset", "model", "trainer"):
        if cfg.get(group) is None:
            raise ConfigError(f"config group '{group}' is missing")
        check_node(cfg[group], group)
    check_entries(cfg.get("callbacks"), "callbacks")
    check_entries(cfg.get("logger"), "logger")
    if cfg.model.image_size != cfg.dataset.image_size:
        raise ConfigError(f"model.image_size ({cfg.model.image_size}) must equal dataset.image_size "
                          f"({cfg.dataset.image_size})")
    for key in ("batch_size", "image_size"):
        if int(cfg.dataset[key]) <= 0:
            raise ConfigError(f"bad value for 'dataset.{key}': {cfg.dataset[key]} (must be positive)")
    threads = cfg.get("threads")
    if threads is not None and threads != "auto" and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"bad value for 'threads': {threads!r} (a positive number of CPU threads, 'auto' "
                          "or null)")
    if cfg.dataset.get("num_workers", 0) < 0:
        raise ConfigError(f"bad value for 'dataset.num_workers': {cfg.dataset.num_workers} (must be >= 0)")
    allow = cfg.get("resume_allow_changes") or []
    if isinstance(allow, str) or not all(isinstance(k, str) for k in allow):
        raise ConfigError(f"bad value for 'resume_allow_changes': {allow!r} (expected a list of keys, "
                          "e.g. [dataset.root])")


def build_datamodule(cfg: DictConfig) -> Unsup3DDataModule:
    return instantiate_node(cfg.dataset, "dataset")


def build_model(cfg: DictConfig) -> Unsup3D:
    """The model of ``cfg.model``, initialised from ``cfg.init_checkpoint`` when one is given (either
    checkpoint format, :func:`unsup3d.checkpoint.load_weights`; a checkpoint that does not fit raises
    :class:`~unsup3d.checkpoint.CheckpointError`)."""
    model = instantiate_node(cfg.model, "model")
    if cfg.get("init_checkpoint"):
        path = cfg.init_checkpoint
        load_weights(model, load_checkpoint_file(path), source=f"init_checkpoint '{path}'")
    return model


def _entries(cfg: DictConfig, group: str) -> list[tuple[str, DictConfig]]:
    section = cfg.get(group) or {}
    return [(str(name), node) for name, node in section.items() if node is not None]


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """The loggers of ``cfg.logger`` (none for ``logger=none``)."""
    return [instantiate_node(node, f"logger.{name}") for name, node in _entries(cfg, "logger")]


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[pl.Callback]:
    """The callbacks of ``cfg.callbacks``; a learning-rate monitor only when there is a logger."""
    callbacks = [instantiate_node(node, f"callbacks.{name}") for name, node in _entries(cfg, "callbacks")]
    return [c for c in callbacks if has_logger or not isinstance(c, LearningRateMonitor)]


def build_trainer(cfg: DictConfig, loggers: list[Logger], callbacks: list[pl.Callback]) -> pl.Trainer:
    """The trainer of ``cfg.trainer`` with the loggers, the callbacks and :class:`AtomicCheckpointIO`.

    The progress bar is the callbacks' (``callbacks.progress_bar``): none when there is none (or when
    the trainer config says ``enable_progress_bar: false``).
    """
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    make = instantiate_node(cfg.trainer, "trainer", _partial_=True)
    try:
        return make(logger=loggers or False, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
                    enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks))
    except (TypeError, ValueError, MisconfigurationException) as exc:
        raise ConfigError(f"bad configuration of 'trainer': {exc}") from exc


def _remove_unfinished_writes(folder: Path) -> None:
    """Temporary files that a killed process left in the checkpoint folder (rank 0 only)."""
    if rank_zero_only.rank == 0:
        stale = remove_stale_temp_files(folder)
        if stale:
            log.info("removed %d unfinished temporary file(s) of interrupted checkpoint writes in %s",
                     len(stale), folder)


def resume_checkpoint(cfg: DictConfig, callbacks: list[pl.Callback]) -> str | None:
    """The checkpoint to continue from when ``cfg.resume`` is on, else None; refuses another run's.

    In the checkpoint folder (that of ``callbacks.model_checkpoint``): temporary files left by a killed
    write are removed, then :func:`unsup3d.training.resume.find_resume_checkpoint` picks the readable checkpoint of
    the highest step (corrupt ones are set aside with a warning), and :func:`unsup3d.training.resume.check_resume`
    compares its recorded config with ``cfg``.

    Raises:
        ResumeMismatchError: the checkpoint's run was trained with other model, renderer or dataset
            settings (each key named, with both values and what to do).
    """
    folder = checkpoint_dir(callbacks)
    if not cfg.get("resume", True) or folder is None or not folder.is_dir():
        return None
    _remove_unfinished_writes(folder)
    point = find_resume_checkpoint(folder)
    if point is None:
        if any(folder.glob("*.ckpt.corrupt-*")):
            log.warning("no readable checkpoint left in %s: training starts from step 0", folder)
        return None
    changed = check_resume(point.checkpoint, run_record(cfg), f"'{point.path}' (step {point.step})",
                           allow=list(cfg.get("resume_allow_changes") or []))
    log.info("resuming from %s at step %d", point.path, point.step)
    if changed:
        log.info("settings changed since that checkpoint: %s",
                 "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in changed))
    return str(point.path)


def _fresh_start(cfg: DictConfig, callbacks: list[pl.Callback]) -> SetAsidePreviousRun | None:
    """``resume=false`` where checkpoints exist: a callback that moves them aside at the first save."""
    folder = checkpoint_dir(callbacks)
    if cfg.get("resume", True) or folder is None or not folder.is_dir():
        return None
    _remove_unfinished_writes(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(".ckpt"))
    if not files:
        return None
    aside = SetAsidePreviousRun(folder, files)
    log.warning("resume=false: starting over in %s; its %d checkpoint file(s) stay until this run saves its "
                "first checkpoint, then move to %s", folder, len(files), aside.target)
    return aside


def train(cfg: DictConfig, extra_callbacks: list[pl.Callback] | None = None) -> dict[str, Any]:
    """Validate ``cfg``, build everything, fit; returns a summary (paths, steps, metrics).

    ``extra_callbacks`` are added to the configured ones (e.g. a learning-curve evaluator). Before anything
    is built, a resumed run's checkpoint is chosen and checked (:func:`resume_checkpoint`).

    Raises:
        ConfigError: a bad key or value; :class:`~unsup3d.training.resume.ResumeMismatchError` (a ConfigError)
            when the run directory holds a run trained with other settings.
        TrainingInterrupted: SIGTERM or SIGINT stopped training (``last.ckpt`` saved; see its message).
    """
    validate_config(cfg)
    set_auto_compile(True)  # thousands of steps pay the compiled kernels back (unsup3d.fused)
    output_dir = run_dir(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    callbacks = build_callbacks(cfg, has_logger=bool(_entries(cfg, "logger"))) + list(extra_callbacks or [])
    ckpt_path = resume_checkpoint(cfg, callbacks)
    callbacks.append(RecordRunConfig(run_record(cfg)))
    callbacks.append(ContinueLogs())  # CSV / TensorBoard logs continue from the step training starts at
    aside = _fresh_start(cfg, callbacks)
    if aside is not None:
        callbacks.append(aside)
    if cfg.get("threads") == "auto":
        callbacks.append(AdaptiveThreads())
    elif cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(int(cfg.seed), workers=True)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    loggers = build_loggers(cfg)
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer = build_trainer(cfg, loggers, callbacks)
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        except SIGTERMException:  # Lightning stopped on a SIGTERM by itself (e.g. during validation)
            saved = next((c.saved for c in callbacks if isinstance(c, GracefulShutdown)), None)
            raise TrainingInterrupted("SIGTERM", trainer.global_step, saved) from None
    finally:
        finish_loggers(loggers)
    last = last_checkpoint_path(callbacks)
    skipped = getattr(datamodule, "num_skipped", 0)
    summary = {
        "output_dir": str(output_dir),
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "last_checkpoint": str(last) if last is not None else None,
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
        "skipped_images": skipped,
    }
    if trainer.is_global_zero:
        if skipped:
            log.warning("%d unreadable image file(s) were skipped during training (see the warnings)", skipped)
        log.info("training done: %s", summary)
    return summary
