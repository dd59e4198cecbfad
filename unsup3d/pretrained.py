"""Named pretrained models: the original release's checkpoints by name, downloaded once into a cache.

    unsup3d-export --checkpoint celeba --output out/ photo.jpg
    unsup3d-demo --checkpoint celeba
    unsup3d-eval checkpoint=synface dataset=synface

    import unsup3d
    model = unsup3d.load_pretrained("celeba")          # Unsup3D in eval mode

The names are those of the authors' release (:data:`PRETRAINED_MODELS`): ``celeba`` (real faces),
``synface`` (synthetic faces), ``cat`` (cat faces) and ``syncar`` (synthetic cars). The first use of a
name downloads ``pretrained_<name>.zip`` (:mod:`unsup3d.data.download`: the release's URL, or the same
file under ``$UNSUP3D_DOWNLOAD_URL``), checks it (complete transfer, zip CRCs, safe member names),
unpacks it into a temporary folder, verifies that ``pretrained_<name>/checkpoint030.pth`` reads as an
original-format checkpoint, and only then renames the folder into the cache, ``$UNSUP3D_CACHE_DIR``
(default ``~/.cache/unsup3d``). Later uses read ``<cache>/pretrained_<name>/checkpoint030.pth`` without
touching the network. A failed or truncated download leaves nothing in the cache; offline, the error
says which file to fetch and where to unpack it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from unsup3d.checkpoint import CheckpointError, is_original_format, load_checkpoint_file, load_model
from unsup3d.data.download import RESOURCES, DownloadError, fetch, resource_url
from unsup3d.model import Unsup3D

__all__ = [
    "CACHE_DIR_ENV",
    "CHECKPOINT_FILE",
    "PRETRAINED_MODELS",
    "PretrainedModelError",
    "cache_dir",
    "load_pretrained",
    "pretrained_checkpoint",
    "resolve_checkpoint",
]

#: The pretrained models of the original release: name -> what it was trained on.
PRETRAINED_MODELS: dict[str, str] = {
    name: RESOURCES[f"pretrained_{name}"].description for name in ("celeba", "synface", "cat", "syncar")
}
#: Environment variable naming the cache folder (default ``~/.cache/unsup3d``).
CACHE_DIR_ENV = "UNSUP3D_CACHE_DIR"
#: The checkpoint file inside each release archive's ``pretrained_<name>/`` folder.
CHECKPOINT_FILE = "checkpoint030.pth"


class PretrainedModelError(CheckpointError):
    """A pretrained model name is unknown, or its checkpoint is not cached and cannot be downloaded."""


def cache_dir() -> Path:
    """The cache folder: ``$UNSUP3D_CACHE_DIR``, else ``~/.cache/unsup3d`` (not created here)."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "unsup3d").expanduser()


def _check_name(name: str) -> str:
    if name not in PRETRAINED_MODELS:
        raise PretrainedModelError(
            f"unknown pretrained model '{name}'; choose from {', '.join(PRETRAINED_MODELS)}")
    return name


def _verify(folder: Path) -> None:
    """Refuse an unpacked release folder whose ``checkpoint030.pth`` is missing or not an original-format
    checkpoint (raises :class:`DownloadError`)."""
    path = folder / CHECKPOINT_FILE
    if not path.is_file():
        raise DownloadError(f"the archive has no '{folder.name}/{CHECKPOINT_FILE}': not the release's archive")
    try:
        ckpt = load_checkpoint_file(path)
    except CheckpointError as exc:
        raise DownloadError(f"the archive's checkpoint cannot be read: {exc}") from exc
    if not is_original_format(ckpt):
        raise DownloadError(f"the archive's '{folder.name}/{CHECKPOINT_FILE}' is not an original-release "
                            f"checkpoint (keys: {', '.join(sorted(map(str, ckpt))[:8])})")


def pretrained_checkpoint(name: str, *, download: bool = True, timeout: float = 30.0) -> Path:
    """The cached checkpoint file of pretrained model ``name``, downloaded first if it is not cached.

    Args:
        name: one of :data:`PRETRAINED_MODELS`.
        download: fetch it when it is not cached (False: only look in the cache).
        timeout: network timeout in seconds.

    Returns:
        ``<cache>/pretrained_<name>/checkpoint030.pth``.

    Raises:
        PretrainedModelError: an unknown name, or the file is not cached and cannot be downloaded (the
            message names the URL to fetch by hand and the folder to unpack it into).
    """
    _check_name(name)
    resource = f"pretrained_{name}"
    root = cache_dir()
    folder = root / RESOURCES[resource].folder
    path = folder / CHECKPOINT_FILE
    if path.is_file():
        return path
    url = resource_url(resource)
    release = RESOURCES[resource].url
    where = url if url == release else f"{url} (the release's {release})"
    how = (f"download {where} (from a machine with network access) and unpack it into '{root}', so that "
           f"'{path}' exists (or set ${CACHE_DIR_ENV} to the folder that holds pretrained_{name}/)")
    if not download:
        raise PretrainedModelError(f"pretrained model '{name}' is not in the cache: {how}")
    try:
        # A cache folder without its checkpoint (emptied by hand) is replaced by the download.
        fetch(resource, root, timeout=timeout, force=folder.exists(), verify=_verify, hint="")
    except (DownloadError, OSError) as exc:
        raise PretrainedModelError(
            f"pretrained model '{name}' is not in the cache and could not be downloaded ({str(exc).rstrip('.')}). "
            f"To use it "
            f"offline, {how}.") from exc
    return path


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A checkpoint argument of the commands: an existing file, else a pretrained model name.

    A file of that name wins (``./celeba`` if there is one); a name of :data:`PRETRAINED_MODELS` gives
    :func:`pretrained_checkpoint` (downloaded on first use).

    Raises:
        CheckpointError: neither an existing file nor a pretrained model name.
        PretrainedModelError: a pretrained model that is not cached and cannot be downloaded.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if str(spec) in PRETRAINED_MODELS:
        return pretrained_checkpoint(str(spec))
    raise CheckpointError(f"checkpoint not found: '{spec}' (give a checkpoint file, or a pretrained model: "
                          f"{', '.join(PRETRAINED_MODELS)})")


def load_pretrained(name: str, device: str | torch.device = "cpu", **overrides) -> Unsup3D:
    """The pretrained model ``name`` (see the module docstring), in eval mode on ``device``.

    Args:
        name: one of :data:`PRETRAINED_MODELS`.
        device: where the model goes.
        overrides: hyper-parameters to change (e.g. ``renderer_backend="pytorch3d"``).

    Raises:
        PretrainedModelError: see :func:`pretrained_checkpoint`.
    """
    return load_model(pretrained_checkpoint(name), **overrides).to(device)  # in eval mode
