"""Resuming a training run: what its checkpoints record, what must match to continue it, and which
checkpoint it continues from.

* :class:`RecordRunConfig` stores the run's resolved training config (:func:`run_record`) in every
  checkpoint, under :data:`CONFIG_KEY`.
* :func:`check_resume` compares that record with the config of the command that resumes:
  the keys that decide what is trained (:data:`MUST_MATCH`: the model, the renderer, the dataset's
  identity) must be equal, else :class:`ResumeMismatchError` names each differing key with both values
  and how to proceed. Everything else (steps, epochs, time, devices, loggers, workers, batch size,
  callbacks, paths) may change.
* :func:`find_resume_checkpoint` picks the checkpoint to continue from: the one of the highest step
  among the readable ``*.ckpt`` of the checkpoint folder (``last.ckpt`` on a tie). An unreadable or
  corrupt file (a truncated copy, a full disk, damaged bytes) is renamed ``<name>.corrupt-<time>``,
  never deleted, with a :class:`CheckpointWarning` naming it.
* :class:`SetAsidePreviousRun`: ``resume=false`` in a folder that already holds checkpoints keeps them
  in place until the new run writes its first checkpoint, then moves them to ``previous-<time>/``.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from unsup3d.checkpoint import CheckpointError, load_checkpoint_file
from unsup3d.config import ConfigError

__all__ = [
    "CONFIG_KEY",
    "MAY_CHANGE",
    "MUST_MATCH",
    "CheckpointWarning",
    "RecordRunConfig",
    "ResumeMismatchError",
    "ResumePoint",
    "SetAsidePreviousRun",
    "check_resume",
    "config_differences",
    "find_resume_checkpoint",
    "run_record",
]

log = logging.getLogger(__name__)

#: The checkpoint entry holding the training config of the run that wrote it.
CONFIG_KEY = "unsup3d_config"

#: Config keys, or whole sections, that decide what is trained: a run resumes only when they match.
MUST_MATCH = (
    "model",
    "renderer",
    "dataset._target_",
    "dataset.name",
    "dataset.root",
    "dataset.image_size",
    "dataset.crop",
    "dataset.has_depth",
    "dataset.train_split",
    "dataset.depth_dir_substitution",
    "dataset.depth_filename_substitution",
    "dataset.min_depth",
    "dataset.max_depth",
    "dataset.max_samples_per_split",
    "dataset.train_flip",
)
#: Keys inside :data:`MUST_MATCH` that may change all the same: where the VGG weights are found, what
#: to do on a non-finite loss, and the rasterizer backend (both give the same fragments).
MAY_CHANGE = ("model.vgg_weights", "model.on_nonfinite", "model.renderer_backend", "renderer.backend")
_ABSENT = "<absent>"


class ResumeMismatchError(ConfigError):
    """The run in the checkpoint folder was trained with another configuration than this command's."""


class CheckpointWarning(UserWarning):
    """A checkpoint file could not be used and was set aside, or earlier checkpoints were moved."""


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _absolute_root(record: dict[str, Any]) -> dict[str, Any]:
    dataset = record.get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("root"), str):
        dataset["root"] = str(Path(dataset["root"]).expanduser().resolve())
    return record


def run_record(cfg: DictConfig) -> dict[str, Any]:
    """The resolved training config as plain Python values (what :class:`RecordRunConfig` stores),
    with ``dataset.root`` made absolute so that a run started from another folder compares right."""
    return _absolute_root(_plain(OmegaConf.to_container(cfg, resolve=True)))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _under(key: str, names: Iterable[str]) -> bool:
    return any(key == n or key.startswith(f"{n}.") for n in names)


def config_differences(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """Every ``(dotted key, saved value, new value)`` where two config records differ (a key missing on
    one side has the value ``"<absent>"`` there), sorted by key."""
    a, b = _flatten(_plain(saved)), _flatten(_plain(new))
    pairs = ((k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b)))
    return [(k, old, new) for k, old, new in pairs if old != new]


def _legacy_record(ckpt: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a checkpoint written before :data:`CONFIG_KEY` existed tells of its run: the model's and
    the datamodule's saved hyper-parameters."""
    model = ckpt.get("hyper_parameters")
    dataset = ckpt.get("datamodule_hyper_parameters")
    if not model and not dataset:
        return None
    return _absolute_root(_plain({"model": dict(model or {}), "dataset": dict(dataset or {})}))


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_resume(ckpt: Mapping[str, Any], record: Mapping[str, Any], source: str,
                 allow: Sequence[str] = ()) -> list[tuple[str, Any, Any]]:
    """Refuse to resume from ``ckpt`` when its run was trained with another configuration.

    Only keys that both configs have are compared for :data:`MUST_MATCH`: a key that one version of the
    package has and the other does not is reported, not refused. A checkpoint of an earlier version
    (without :data:`CONFIG_KEY`) is compared on the model's and the datamodule's saved hyper-parameters.

    Args:
        ckpt: the loaded checkpoint.
        record: this command's :func:`run_record`.
        source: the checkpoint's name for messages.
        allow: further keys (or sections) that may differ (``resume_allow_changes``).

    Returns:
        The differences that do not block (to be reported), as :func:`config_differences` gives them.

    Raises:
        ResumeMismatchError: naming each differing key of :data:`MUST_MATCH`, both values, and what to do.
    """
    saved = ckpt.get(CONFIG_KEY)
    if saved is None:
        saved = _legacy_record(ckpt)
        if saved is None:
            return []
        record = {k: record.get(k, {}) for k in saved}
    may_change = (*MAY_CHANGE, *allow)
    diffs = config_differences(saved, record)
    blocking = [d for d in diffs if _ABSENT not in d[1:] and _under(d[0], MUST_MATCH) and not _under(d[0], may_change)]
    if blocking:
        lines = "\n".join(f"  {k}: {_fmt(old)} (saved run) -> {_fmt(new)} (this command)" for k, old, new in blocking)
        keys = ",".join(k for k, _, _ in blocking)
        raise ResumeMismatchError(
            f"cannot resume from {source}: that run was trained with another configuration "
            f"({len(blocking)} key(s) differ):\n{lines}\n"
            "Continue it with its own settings, or start over in the same directory with resume=false "
            "(its checkpoints are kept until the new run saves its own), or train a separate run with "
            "another name=... (or hydra.run.dir=...). If it is the same data or model in another place, "
            f"allow the change with resume_allow_changes=[{keys}].")
    return diffs


class RecordRunConfig(pl.Callback):
    """Adds the run's training config (:func:`run_record`) to every checkpoint, under :data:`CONFIG_KEY`."""

    def __init__(self, record: Mapping[str, Any]):
        self.record = dict(record)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.record


@dataclass
class ResumePoint:
    """The checkpoint a run continues from: its file and its loaded contents."""

    path: Path
    checkpoint: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.checkpoint.get("global_step", 0))


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}-{n}")
        n += 1
    return candidate


def _set_aside(path: Path, reason: str) -> None:
    """Rename an unusable checkpoint to ``<name>.corrupt-<time>`` (on rank 0) and warn naming it."""
    kept = path
    if rank_zero_only.rank == 0:
        kept = _free_name(path.with_name(f"{path.name}.corrupt-{_stamp()}"))
        try:
            path.rename(kept)
        except OSError as exc:
            kept = path
            reason += f"; it could not be renamed ({exc.strerror or exc}) and is ignored"
    warnings.warn(f"checkpoint '{path}' is unreadable ({reason}); kept as '{kept}', not deleted; resuming "
                  "from the newest readable checkpoint instead", CheckpointWarning, stacklevel=3)


def _peek_step(path: Path) -> int:
    """The ``global_step`` of a Lightning checkpoint, read without loading its tensors (memory-mapped)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, pickle or zip errors
        raise CheckpointError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if not isinstance(ckpt, dict) or "global_step" not in ckpt:
        raise CheckpointError("not a Lightning checkpoint (no global_step)")
    return int(ckpt["global_step"])


def find_resume_checkpoint(folder: str | Path, last_name: str = "last.ckpt") -> ResumePoint | None:
    """The readable checkpoint of the highest step in ``folder`` (``*.ckpt``; ``last_name`` wins a tie),
    loaded and verified (:func:`unsup3d.checkpoint.load_checkpoint_file`: checksums, safe unpickling).

    Each unreadable file met on the way is renamed ``<name>.corrupt-<time>`` (by rank 0; never deleted)
    with a :class:`CheckpointWarning`. Returns None when no readable checkpoint is left.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    ranked = []
    for path in sorted(p for p in folder.glob("*.ckpt") if p.is_file()):
        try:
            step = _peek_step(path)
        except CheckpointError as exc:
            _set_aside(path, str(exc))
            continue
        ranked.append((step, path.name == last_name, path.stat().st_mtime_ns, path))
    for *_, path in sorted(ranked, key=lambda r: r[:3], reverse=True):
        try:
            return ResumePoint(path, load_checkpoint_file(path))
        except CheckpointError as exc:
            _set_aside(path, str(exc).replace(f"'{path}' ", "", 1))
    return None


class SetAsidePreviousRun(pl.Callback):
    """``resume=false`` in a checkpoint folder that holds checkpoints: they stay where they are until this
    run saves its first checkpoint; just before that, rank 0 moves them into ``<folder>/previous-<time>/``
    (nothing is deleted, and the new run's files are not mixed with the old ones)."""

    def __init__(self, folder: str | Path, files: Sequence[str | Path]):
        self.files = [Path(f) for f in files]
        self.target = Path(folder) / f"previous-{_stamp()}"

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if not self.files:
            return
        files, self.files = self.files, []
        if not trainer.is_global_zero:
            return
        target = _free_name(self.target)
        target.mkdir(parents=True)
        moved = [f.rename(target / f.name) for f in files if f.exists()]
        log.warning("resume=false: moved the %d checkpoint file(s) of the earlier run to %s", len(moved), target)
