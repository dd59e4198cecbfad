"""Experiment tracking: Weights & Biases, online when an API key is configured and offline otherwise.

:func:`wandb_mode` is the one rule for every W&B run of the package (training and export);
:func:`wandb_logger` is the training logger of ``conf/logger/wandb.yaml``: a Lightning ``WandbLogger``
whose run lives in the run directory and keeps one id per run directory, so a resumed training
continues the same W&B run.
"""

from __future__ import annotations

import logging
import netrc
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path

import wandb
from pytorch_lightning.loggers import Logger, WandbLogger

__all__ = ["WANDB_MODES", "finish_loggers", "wandb_logger", "wandb_mode"]

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")
#: The file, in the run directory, holding the W&B run id of that directory.
RUN_ID_FILE = "wandb_run_id.txt"


def wandb_mode(requested: str = "auto") -> str:
    """Resolve ``auto`` to ``online`` when a W&B API key is configured, else ``offline``.

    An explicit ``WANDB_MODE`` (``online``, ``offline``, ``disabled``; ``dryrun`` means offline) wins;
    a key is ``WANDB_API_KEY`` or an ``api.wandb.ai`` entry in ``~/.netrc`` (``wandb login``).
    """
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE") in ("offline", "online", "disabled", "dryrun"):
        return "offline" if os.environ["WANDB_MODE"] == "dryrun" else os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        auth = netrc.netrc(os.path.expanduser("~/.netrc")).authenticators("api.wandb.ai")
        if auth and auth[2]:
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


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
        mode: ``auto`` (:func:`wandb_mode`), ``online``, ``offline`` or ``disabled``.

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
