"""Training machinery: a run built from its config and fitted (:mod:`.run`: :func:`train`), its
checkpoint files (:mod:`.checkpoint_io`), resuming it (:mod:`.resume`), stopping it on a signal
(:mod:`.shutdown`), its loggers (:mod:`.loggers`) and callbacks (:mod:`.callbacks`).

``unsup3d.training.train(cfg)`` is the entry point (``unsup3d-train`` calls it).
"""

from unsup3d.config import ConfigError

from .run import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_model,
    build_trainer,
    resume_checkpoint,
    train,
    validate_config,
)
from .shutdown import TrainingInterrupted

__all__ = [
    "ConfigError", "validate_config", "build_datamodule", "build_model", "build_loggers",
    "build_callbacks", "build_trainer", "resume_checkpoint", "train", "TrainingInterrupted",
]
