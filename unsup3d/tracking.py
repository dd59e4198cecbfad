"""Weights & Biases for every run of the package (training, export, evaluation, the demo): one rule for
online or offline (:func:`wandb_mode`), and an evaluation's scores and per-image rows logged as a run of
their own (:func:`log_evaluation`, ``unsup3d-eval wandb=true``). Training's loggers are
:mod:`unsup3d.training.loggers`; the export's, :mod:`unsup3d.export.wandb_log`.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping, Sequence
from typing import Any

import wandb

__all__ = ["WANDB_MODES", "log_evaluation", "wandb_mode"]

#: The modes the package's W&B runs accept (``auto``: :func:`wandb_mode`).
WANDB_MODES = ("auto", "online", "offline", "disabled")


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


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


def log_evaluation(
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    save_dir: str | os.PathLike,
    config: Mapping[str, Any] | None = None,
    project: str = "unsup3d-eval",
    name: str | None = None,
    mode: str = "auto",
) -> str:
    """Log an evaluation to a new W&B run: the per-image scores as a ``wandb.Table`` (``eval/per_image``)
    and the summary (nested keys joined with ``/``, e.g. ``scores/model/side/mean``) as the run's summary.

    Args:
        summary: the scores (``EvalReport.to_json()`` and what else the report records).
        rows: one mapping per table row (``per_image.csv``'s rows).
        columns: the table's columns, keys of every row.
        save_dir: W&B writes under ``<save_dir>/wandb`` (``$WANDB_DIR`` wins when set).
        config: the run's config (the evaluation's settings).
        project, name: as W&B's.
        mode: ``auto`` (:func:`wandb_mode`: online with an API key, else offline), ``online``, ``offline``.

    Returns:
        The run's local files folder (``<save_dir>/wandb/<run>/files``).
    """
    if mode not in WANDB_MODES:
        raise ValueError(f"mode must be one of {', '.join(WANDB_MODES)}; got {mode!r}")
    run = wandb.init(project=project, name=name, mode=wandb_mode(mode), job_type="eval", config=dict(config or {}),
                     dir=os.environ.get("WANDB_DIR") or str(save_dir))
    try:
        table = wandb.Table(columns=list(columns), data=[[row.get(c) for c in columns] for row in rows])
        run.log({"eval/per_image": table})
        run.summary.update(_flatten(summary))
        folder = run.dir
    finally:
        run.finish()
    return str(folder)
