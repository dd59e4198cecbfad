"""The installed commands of training and evaluation: Hydra apps over the packaged configs (``conf/``,
installed as ``unsup3d.conf``: :data:`unsup3d.config.CONFIG_SEARCH_PATH`).

``unsup3d-train`` (:func:`train_command`) and ``unsup3d-eval`` (:func:`eval_command`) take Hydra's
command line: ``key=value`` and ``group=option`` overrides, ``hydra.run.dir=DIR``, ``--help``,
``--cfg job``, ``-m`` for sweeps. ``scripts/train.py`` and ``scripts/eval.py`` only call them. A bad key
or value (or a resume of a run with other settings) exits with status 2 and a message naming it; a
training stopped by SIGTERM or Ctrl-C exits with 143 or 130 after saving ``last.ckpt``; a write that
fails (a full disk) exits with status 1 and a message naming the file.

The other commands live with their concepts: ``unsup3d-export`` (:mod:`unsup3d.export.cli`) and
``unsup3d-make-synthetic`` (:mod:`unsup3d.data.synthetic.cli`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig

from unsup3d.checkpoint import CheckpointError
from unsup3d.config import CONFIG_SEARCH_PATH, ConfigError
from unsup3d.evaluation import run_evaluation
from unsup3d.pretrained import resolve_checkpoint
from unsup3d.training import TrainingInterrupted, train

__all__ = ["EVAL_FLAGS", "LEGACY_OVERRIDES", "eval_command", "train_command", "translate_legacy_overrides"]

#: Overrides of earlier versions, still accepted: ``output_dir=DIR`` is ``hydra.run.dir=DIR`` now.
LEGACY_OVERRIDES = {"output_dir": "hydra.run.dir"}


def translate_legacy_overrides(args: Sequence[str]) -> list[str]:
    """``args`` with every ``<legacy key>=VALUE`` of :data:`LEGACY_OVERRIDES` renamed (a note on stderr)."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in LEGACY_OVERRIDES:
            new = LEGACY_OVERRIDES[key]
            print(f"note: {key}=... is now {new}=...; using {new}={value}", file=sys.stderr)
            arg = f"{new}={value}"
        out.append(arg)
    return out


@hydra.main(version_base="1.3", config_path=CONFIG_SEARCH_PATH, config_name="train")
def _train_app(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a full disk, a vanished dataset folder: the message names the path
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


@hydra.main(version_base="1.3", config_path=CONFIG_SEARCH_PATH, config_name="eval")
def _eval_app(cfg: DictConfig) -> None:
    try:
        cfg.checkpoint = str(resolve_checkpoint(cfg.checkpoint))  # a file, or a pretrained model's name
        run_evaluation(cfg)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:  # ConfigError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def train_command() -> None:
    """``unsup3d-train [overrides]``: train (see ``unsup3d-train --help``)."""
    sys.argv[1:] = translate_legacy_overrides(sys.argv[1:])  # Hydra, and DDP's re-launches, read sys.argv
    _train_app()


#: Flags ``unsup3d-eval`` accepts besides Hydra's overrides, and the override each one means.
EVAL_FLAGS = {"--wandb": "wandb=true"}


def eval_command() -> None:
    """``unsup3d-eval checkpoint=PATH [overrides]``: evaluate a checkpoint (see ``unsup3d-eval --help``)."""
    args = [EVAL_FLAGS.get(a, a) for a in sys.argv[1:]]  # --wandb is wandb=true
    sys.argv[1:] = translate_legacy_overrides(args)
    _eval_app()
