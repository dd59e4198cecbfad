"""Build and run a training job from a composed Hydra config (used by ``scripts/train.py``).

Everything here is plain functions over the config: validation (unknown keys and bad values fail
at start-up with a message naming them), the datamodule, model, logger, callbacks and trainer.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.plugins.io import TorchCheckpointIO

from unsup3d.data import Unsup3DDataModule
from unsup3d.io import atomic_torch_save
from unsup3d.loggers import wandb_mode
from unsup3d.model import Unsup3D

log = logging.getLogger(__name__)

__all__ = [
    "ConfigError", "validate_config", "build_datamodule", "build_model", "build_logger",
    "build_callbacks", "build_trainer", "train", "AtomicCheckpointIO", "wandb_mode",
]


class ConfigError(ValueError):
    """A configuration key is unknown or has a bad value."""


# ---------------------------------------------------------------------------------- validation
def _signature_defaults(fn) -> dict[str, Any]:
    sig = inspect.signature(fn)
    return {n: p.default for n, p in sig.parameters.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _type_ok(value: Any, default: Any) -> bool:
    """Whether ``value`` has the kind of the parameter's default (only simple defaults are checked;
    the constructors validate ranges and the rest with messages of their own)."""
    if value is None or default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return True


def _check_group(cfg: DictConfig, group: str, fn, ignore: tuple[str, ...] = (), check_values: bool = True) -> None:
    section = cfg.get(group)
    if section is None:
        raise ConfigError(f"config group '{group}' is missing")
    defaults = _signature_defaults(fn)
    for key in section:
        if key in ignore:
            continue
        if key not in defaults:
            close = [k for k in defaults if k.startswith(str(key)[:3])]
            raise ConfigError(f"unknown key '{group}.{key}'" + (f" (did you mean {close}?)" if close else "")
                              + f"; valid keys: {', '.join(sorted(defaults))}")
        value = OmegaConf.to_object(section[key]) if OmegaConf.is_config(section[key]) else section[key]
        default = defaults[key]
        if not check_values or default is inspect.Parameter.empty:
            continue
        if not _type_ok(value, default):
            raise ConfigError(f"bad value for '{group}.{key}': {value!r} (expected a value like {default!r})")


_LOGGER_TYPES = ("wandb", "csv", "tensorboard", "none")


def validate_config(cfg: DictConfig) -> None:
    """Check every group of a composed config; raise :class:`ConfigError` naming the bad key."""
    try:
        OmegaConf.resolve(cfg)
    except Exception as exc:  # noqa: BLE001 - interpolation errors name the key themselves
        raise ConfigError(f"config does not resolve: {exc}") from exc
    _check_group(cfg, "model", Unsup3D.__init__)
    _check_group(cfg, "dataset", Unsup3DDataModule.__init__, ignore=("_target_",))
    _check_group(cfg, "trainer", pl.Trainer.__init__, check_values=False)  # Lightning checks values
    if cfg.logger.get("type") not in _LOGGER_TYPES:
        raise ConfigError(f"bad value for 'logger.type': {cfg.logger.get('type')!r}; choose one of {_LOGGER_TYPES}")
    if cfg.logger.type == "wandb" and cfg.logger.get("mode", "auto") not in ("auto", "online", "offline", "disabled"):
        raise ConfigError(f"bad value for 'logger.mode': {cfg.logger.mode!r}; choose auto, online, offline or disabled")
    if cfg.model.image_size != cfg.dataset.image_size:
        raise ConfigError(f"model.image_size ({cfg.model.image_size}) must equal dataset.image_size "
                          f"({cfg.dataset.image_size})")
    for key in ("batch_size", "image_size"):
        if int(cfg.dataset[key]) <= 0:
            raise ConfigError(f"bad value for 'dataset.{key}': {cfg.dataset[key]} (must be positive)")
    if cfg.dataset.get("num_workers", 0) < 0:
        raise ConfigError(f"bad value for 'dataset.num_workers': {cfg.dataset.num_workers} (must be >= 0)")


# -------------------------------------------------------------------------------------- builders
def _plain(section: DictConfig) -> dict[str, Any]:
    return {k: v for k, v in OmegaConf.to_container(section, resolve=True).items() if k != "_target_"}


def build_datamodule(cfg: DictConfig) -> Unsup3DDataModule:
    return Unsup3DDataModule(**_plain(cfg.dataset))


def build_model(cfg: DictConfig) -> Unsup3D:
    try:
        return Unsup3D(**_plain(cfg.model))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad model configuration: {exc}") from exc


def build_logger(cfg: DictConfig, output_dir: Path):
    kind = cfg.logger.type
    if kind == "none":
        return False
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(output_dir), name="csv", version="")
    if kind == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(output_dir), name="tensorboard", version="")
    from pytorch_lightning.loggers import WandbLogger

    mode = wandb_mode(cfg.logger.get("mode", "auto"))
    # A stable run id per run directory, so a resumed training continues the same W&B run.
    id_file = output_dir / "wandb_run_id.txt"
    if id_file.exists():
        run_id = id_file.read_text().strip()
    else:
        import secrets

        run_id = secrets.token_hex(4)
        output_dir.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id)
    logger = WandbLogger(
        project=cfg.logger.project, entity=cfg.logger.get("entity"), group=cfg.logger.get("group"),
        tags=list(cfg.logger.get("tags") or []), name=cfg.name, save_dir=str(output_dir), id=run_id,
        resume="allow", mode=mode, log_model=cfg.logger.get("log_model", False),
    )
    if mode == "offline":
        log.info("W&B is offline (no API key): sync later with `wandb sync %s/wandb/offline-run-*`", output_dir)
    return logger


def _finish_wandb(logger) -> None:
    """Close the W&B run so a later run in the same process starts its own (wandb reuses an active run)."""
    from pytorch_lightning.loggers import WandbLogger

    if isinstance(logger, WandbLogger) and logger._experiment is not None:
        logger.experiment.finish()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the same folder, then renamed: an interrupted
    save never leaves a half-written file or destroys the previous one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)


def build_callbacks(cfg: DictConfig, output_dir: Path, has_logger: bool) -> list[pl.Callback]:
    cb_cfg = cfg.callbacks
    callbacks: list[pl.Callback] = []
    mc = cb_cfg.model_checkpoint
    callbacks.append(ModelCheckpoint(
        dirpath=str(output_dir / "checkpoints"), filename="epoch{epoch:03d}", auto_insert_metric_name=False,
        every_n_epochs=int(mc.every_n_epochs), save_top_k=int(mc.save_top_k), monitor="step", mode="max",
        save_last=bool(mc.save_last),
    ))
    if cb_cfg.get("lr_monitor") and has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    bar = cb_cfg.get("progress_bar", "tqdm")
    if bar == "tqdm":
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    elif bar == "rich":
        from pytorch_lightning.callbacks import RichProgressBar

        callbacks.append(RichProgressBar())
    il = cb_cfg.get("image_logger")
    if il is not None and il.get("enabled", True):
        from unsup3d.callbacks import ImageLogger

        kwargs = {k: v for k, v in _plain(il).items() if k != "enabled"}
        callbacks.append(ImageLogger(**kwargs))
    return callbacks


def build_trainer(cfg: DictConfig, output_dir: Path, logger, callbacks) -> pl.Trainer:
    kwargs = {k: v for k, v in _plain(cfg.trainer).items() if v is not None}
    if cfg.callbacks.get("progress_bar", "tqdm") == "none":
        kwargs["enable_progress_bar"] = False
    return pl.Trainer(default_root_dir=str(output_dir), logger=logger, callbacks=callbacks,
                      plugins=[AtomicCheckpointIO()], **kwargs)


def resume_checkpoint(cfg: DictConfig, output_dir: Path) -> str | None:
    """``<output_dir>/checkpoints/last.ckpt`` when resuming is on and it exists."""
    last = output_dir / "checkpoints" / "last.ckpt"
    return str(last) if cfg.get("resume", True) and last.is_file() else None


def train(cfg: DictConfig) -> dict[str, Any]:
    """Validate ``cfg``, build everything, fit; returns a summary (paths, steps, metrics)."""
    validate_config(cfg)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    if cfg.get("init_checkpoint"):
        from unsup3d.checkpoint import load_checkpoint_file

        ckpt = load_checkpoint_file(cfg.init_checkpoint)
        if "state_dict" in ckpt:
            state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("perceptual.")}
            model.load_state_dict(state, strict=True)
        else:
            model.load_original_state_dicts(ckpt, strict=True)
    logger = build_logger(cfg, output_dir)
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    callbacks = build_callbacks(cfg, output_dir, has_logger=bool(logger))
    trainer = build_trainer(cfg, output_dir, logger, callbacks)
    ckpt_path = resume_checkpoint(cfg, output_dir)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    finally:
        _finish_wandb(logger)
    summary = {
        "output_dir": str(output_dir),
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "last_checkpoint": str(output_dir / "checkpoints" / "last.ckpt"),
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
        "skipped_images": getattr(datamodule, "num_skipped", 0),
    }
    if trainer.is_global_zero:
        log.info("training done: %s", summary)
    return summary
