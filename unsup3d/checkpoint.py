"""Checkpoint files and the model they hold: a Lightning checkpoint of this project or the authors'
release, read safely (training writes its checkpoints with :mod:`unsup3d.training.checkpoint_io`).

Formats:

* Lightning checkpoint (``*.ckpt``): ``{"state_dict": ..., "hyper_parameters": ...}``; the model is
  rebuilt from its saved hyper-parameters.
* The original release (``checkpoint030.pth``): ``{"netD": state_dict, "netA": ..., "netL": ...,
  "netV": ..., "netC": ...[, "optimizer..."]}`` at 64x64 and full width; ``netC`` is optional
  (the synthetic-car model has none).

Files are read with ``torch.load(weights_only=True)``; a file that needs full unpickling is refused
unless ``trust=True`` (``--trust-checkpoint``), since unpickling runs arbitrary code. A zip-format file
(what ``torch.save`` writes) is first checked against the CRC-32 checksums of its members, so a
truncated file or one with damaged bytes is refused as corrupt instead of loading wrong weights.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from unsup3d.model import NETWORK_NAMES, Unsup3D

__all__ = [
    "RETIRED_HPARAMS",
    "CheckpointError",
    "is_original_format",
    "load_checkpoint_file",
    "load_model",
    "load_weights",
    "model_from_checkpoint",
    "original_width",
]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not a checkpoint of this model."""


def load_checkpoint_file(path: str | os.PathLike, trust: bool = False, map_location="cpu") -> dict[str, Any]:
    """Read a checkpoint file into a dict.

    Raises:
        CheckpointError: missing file, not a torch file, needs unpickling without ``trust``,
            or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: '{path}'")
    if not _looks_like_torch_file(path):
        raise CheckpointError(
            f"'{path}' is not a readable PyTorch checkpoint (neither a torch zip archive nor a pickle)")
    _check_zip_members(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():
            raise CheckpointError(f"'{path}' is not a readable PyTorch checkpoint (corrupt pickle: "
                                  f"{str(exc).splitlines()[-1]})") from exc
        if not trust:
            raise CheckpointError(
                f"checkpoint '{path}' contains objects that need full unpickling, which can run "
                "arbitrary code; load it only if you trust its source, with --trust-checkpoint "
                f"(trust=True). Details: {str(exc).splitlines()[0]}") from exc
        obj = _load_untrusted(path, map_location)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"'{path}' is not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint '{path}' holds a {type(obj).__name__}, expected a dict")
    return obj


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (new format) or a pickle starting with PROTO (legacy)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as fh:
        return fh.read(1) == b"\x80"


def _check_zip_members(path: Path) -> None:
    """Refuse a zip-format checkpoint whose members do not match their CRC-32 (damaged bytes)."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"'{path}' is not a readable PyTorch checkpoint (damaged zip archive: "
                              f"{type(exc).__name__}: {exc})") from exc
    if bad is not None:
        raise CheckpointError(f"'{path}' is corrupt: its member '{bad}' does not match its checksum")


def _load_untrusted(path: Path, map_location):
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any failure of an arbitrary pickle
        raise CheckpointError(f"'{path}' could not be unpickled: {type(exc).__name__}: {exc}") from exc


def is_original_format(ckpt: dict[str, Any]) -> bool:
    """Whether ``ckpt`` is the authors' ``{"netD": ..., ...}`` format."""
    return all(k in ckpt and isinstance(ckpt[k], dict) for k in ("netD", "netA", "netL", "netV"))


def original_width(ckpt: dict[str, Any]) -> float:
    """The channel multiplier of an original-format checkpoint: netD's first convolution has
    ``64 * width`` output channels (the authors' release: 64, width 1; the same key names at another
    width come from :meth:`Unsup3D.original_state_dicts` of a narrower model). 1.0 when it cannot tell."""
    weight = ckpt.get("netD", {}).get("network.0.weight")
    if not torch.is_tensor(weight) or weight.ndim != 4 or weight.shape[0] < 1:
        return 1.0
    return weight.shape[0] / 64


#: Hyper-parameters of earlier versions that only shaped the training loss; checkpoints that carry
#: them still load (the weights and the forward pass do not depend on them).
RETIRED_HPARAMS = frozenset({"lam_view_prior"})


def _not_a_checkpoint(ckpt: dict[str, Any], source: str) -> CheckpointError:
    keys = ", ".join(sorted(map(str, ckpt))[:8])
    return CheckpointError(
        f"{source} is neither a Lightning checkpoint of this project (no 'state_dict') nor an "
        f"original-release checkpoint (keys {', '.join(NETWORK_NAMES)}); it has keys: {keys}")


def load_weights(model: Unsup3D, ckpt: dict[str, Any], source: str = "checkpoint") -> Unsup3D:
    """Load the weights of a loaded checkpoint dict (either format) into ``model``, strictly.

    A Lightning checkpoint's ``state_dict`` is loaded without its ``perceptual.*`` entries (the frozen VGG
    is never part of the model's weights); an original-format one network by network.

    Args:
        model: the model to fill (its architecture must fit the checkpoint's).
        ckpt: the dict from :func:`load_checkpoint_file`.
        source: name used in error messages.

    Returns:
        ``model``.

    Raises:
        CheckpointError: ``ckpt`` is neither format, or its weights do not fit ``model``.
    """
    if is_original_format(ckpt):
        try:
            model.core.load_original_state_dicts(ckpt, strict=True)
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{source}: original-format weights do not fit the model: {exc}") from exc
        return model
    if "state_dict" not in ckpt:
        raise _not_a_checkpoint(ckpt, source)
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("perceptual.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: weights do not fit the model: {exc}") from exc
    return model


def model_from_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint", **overrides) -> Unsup3D:
    """Build an :class:`Unsup3D` from a loaded checkpoint dict (either format) and load its weights
    (:func:`load_weights`).

    Args:
        ckpt: the dict from :func:`load_checkpoint_file`.
        source: name used in error messages.
        overrides: hyper-parameters to change (e.g. ``renderer_backend``); for the original
            format they complete the defaults (64x64; the width its netD's shapes give,
            :func:`original_width`: 1 for the authors' files).

    Raises:
        CheckpointError: ``ckpt`` is neither format, its hyper-parameters do not fit this version, or its
            weights do not fit the model they describe.
    """
    if is_original_format(ckpt):
        hp = {"use_conf_map": "netC" in ckpt, "lam_perc": 0.0, "width": original_width(ckpt)}
    elif "state_dict" not in ckpt:
        raise _not_a_checkpoint(ckpt, source)
    else:
        hp = dict(ckpt.get("hyper_parameters", {}))
        for key in RETIRED_HPARAMS.intersection(hp):  # training-only options of earlier versions
            hp.pop(key)
    hp.update(overrides)
    try:
        model = Unsup3D(**hp)
    except TypeError as exc:
        raise CheckpointError(f"{source}: its hyper-parameters do not fit this version: {exc}") from exc
    return load_weights(model, ckpt, source)


def load_model(path: str | os.PathLike, trust: bool = False, map_location="cpu", **overrides) -> Unsup3D:
    """Load a model for inference from either checkpoint format (in eval mode)."""
    ckpt = load_checkpoint_file(path, trust=trust, map_location=map_location)
    model = model_from_checkpoint(ckpt, source=f"checkpoint '{path}'", **overrides)
    return model.eval()
