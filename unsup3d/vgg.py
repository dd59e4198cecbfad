"""Torchvision's VGG16 ``features[:16]`` (up to relu3_3) without torchvision, and where its ImageNet
weights are found: the feature extractor of the perceptual loss (:class:`unsup3d.losses.PerceptualLoss`).

:class:`VGG16Features` has torchvision's layer indices and parameter names, so ``vgg16-397923af.pth``
loads as it is; :func:`load_vgg16_features` looks for that file (an explicit path,
``$UNSUP3D_VGG16_WEIGHTS``, torch hub's cache, then a download).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "VGG16_FILENAME",
    "VGG16_URL",
    "VGG16_WEIGHTS_ENV",
    "VGG16Features",
    "hub_cache_path",
    "load_vgg16_features",
]

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FILENAME = "vgg16-397923af.pth"
VGG16_WEIGHTS_ENV = "UNSUP3D_VGG16_WEIGHTS"

# (index in torchvision's vgg16().features, in channels, out channels) of the convolutions kept.
_VGG16_CONVS: tuple[tuple[int, int, int], ...] = (
    (0, 3, 64),
    (2, 64, 64),
    (5, 64, 128),
    (7, 128, 128),
    (10, 128, 256),
    (12, 256, 256),
    (14, 256, 256),
)
_VGG16_POOLS: tuple[int, ...] = (4, 9)
_VGG16_NUM_LAYERS = 16  # up to and including relu3_3 (index 15)


class VGG16Features(nn.Sequential):
    """torchvision's ``vgg16().features[:16]``: conv1_1 ... relu3_3, without torchvision.

    Parameter names equal torchvision's (``0.weight``, ``0.bias``, ``2.weight``, ...,
    ``14.bias``) so the ImageNet state dict loads. The module is frozen: its parameters do not
    require grad and it stays in eval mode whatever ``train()`` is called with (it has no
    dropout or batch norm, so this only matters for correctness of intent and hooks).

    Input ``B x 3 x H x W`` (ImageNet-normalised RGB) -> relu3_3 ``B x 256 x H/4 x W/4``.
    """

    def __init__(self) -> None:
        convs = {i: (cin, cout) for i, cin, cout in _VGG16_CONVS}
        layers: list[nn.Module] = []
        for i in range(_VGG16_NUM_LAYERS):
            if i in convs:
                cin, cout = convs[i]
                layers.append(nn.Conv2d(cin, cout, kernel_size=3, padding=1))
            elif i in _VGG16_POOLS:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> VGG16Features:
        """Stay in eval mode (the features are a fixed, pretrained function)."""
        del mode
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """``B x 3 x H x W -> B x 256 x H/4 x W/4`` (relu3_3 features)."""
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f"VGG16Features expects a B x 3 x H x W tensor; got shape {tuple(x.shape)}")
        return super().forward(x)


def _extract_features_state_dict(state: Mapping[str, Any], source: str) -> dict[str, Tensor]:
    """Keep the ``features.N.*`` (or bare ``N.*``) entries of a VGG16 state dict for N < 16."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        k = key.removeprefix("module.").removeprefix("features.")
        head, _, rest = k.partition(".")
        if head.isdigit() and int(head) < _VGG16_NUM_LAYERS and rest in ("weight", "bias"):
            out[k] = value
    expected = {f"{i}.{p}" for i, _, _ in _VGG16_CONVS for p in ("weight", "bias")}
    missing = sorted(expected - out.keys(), key=lambda s: (int(s.split(".")[0]), s))
    if missing:
        raise RuntimeError(
            f"{source} does not look like a torchvision VGG16 state dict: missing {missing} "
            f"(expected keys like 'features.0.weight' or '0.weight')"
        )
    return {k: out[k] for k in sorted(expected)}


def _load_file(path: Path) -> dict[str, Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise TypeError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return _extract_features_state_dict(state, str(path))


def hub_cache_path() -> Path:
    """Where torch hub keeps (and :func:`load_vgg16_features` looks for) ``vgg16-397923af.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILENAME


def load_vgg16_features(
    weights_path: str | os.PathLike[str] | None = None,
    allow_random: bool = False,
    download: bool = True,
) -> VGG16Features:
    """Frozen VGG16 relu3_3 features with ImageNet weights.

    Looks for the weights, in this order:

    1. ``weights_path``: a full torchvision VGG16 state dict (``vgg16-397923af.pth``, keys
       ``features.N.weight``, ...) or a features-only dict (keys ``N.weight``);
    2. the file named by the environment variable ``UNSUP3D_VGG16_WEIGHTS``;
    3. torch hub's cache, ``torch.hub.get_dir()/checkpoints/vgg16-397923af.pth``;
    4. a download of ``https://download.pytorch.org/models/vgg16-397923af.pth`` into that cache
       (only if ``download``; any failure is caught).

    Files are read with ``torch.load(..., weights_only=True)``.

    Args:
        weights_path: explicit file; must exist if given.
        allow_random: if no weights are found, warn and return randomly initialised features
            (for benchmarks and tests) instead of raising.
        download: try step 4.

    Returns:
        :class:`VGG16Features` in eval mode with ``requires_grad=False``.

    Raises:
        FileNotFoundError: ``weights_path`` or ``$UNSUP3D_VGG16_WEIGHTS`` names a missing file.
        RuntimeError: no weights found and ``allow_random`` is False (the message says how to
            provide them), or a file's state dict lacks VGG16 feature weights.
        TypeError: a file does not hold a state dict at all.
    """
    vgg = VGG16Features()
    state: dict[str, Tensor] | None = None
    tried: list[str] = []

    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"VGG16 weights file not found: {path}")
        state = _load_file(path)
    if state is None:
        env = os.environ.get(VGG16_WEIGHTS_ENV)
        if env:
            path = Path(env).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"${VGG16_WEIGHTS_ENV} names a missing file: {path}")
            state = _load_file(path)
        else:
            tried.append(f"${VGG16_WEIGHTS_ENV} (not set)")
    if state is None:
        cached = hub_cache_path()
        if cached.is_file():
            state = _load_file(cached)
        else:
            tried.append(f"{cached} (no such file)")
    if state is None and download:
        try:
            full = torch.hub.load_state_dict_from_url(
                VGG16_URL, map_location="cpu", progress=False, weights_only=True
            )
            state = _extract_features_state_dict(full, VGG16_URL)
        except Exception as err:  # noqa: BLE001 - offline machines fail in many ways
            tried.append(f"download of {VGG16_URL} ({type(err).__name__}: {err})")
    elif state is None:
        tried.append("download (disabled)")

    if state is not None:
        vgg.load_state_dict(state, strict=True)
        return vgg

    if allow_random:
        warnings.warn(
            "VGG16 ImageNet weights not found; using randomly initialised features for the perceptual "
            "loss (fine for benchmarks and tests, not for training). Tried: " + "; ".join(tried),
            RuntimeWarning,
            stacklevel=2,
        )
        return vgg
    raise RuntimeError(
        "The perceptual loss needs torchvision's ImageNet VGG16 weights (vgg16-397923af.pth, from "
        f"{VGG16_URL}), and none were found. Tried: " + "; ".join(tried) + ". Provide the file in one "
        f"of these ways: pass its path (weights_path=...); set the environment variable "
        f"{VGG16_WEIGHTS_ENV}=/path/to/{VGG16_FILENAME}; or copy it to the torch hub cache at "
        f"{hub_cache_path()}. Or disable the perceptual loss with model.lam_perc=0."
    )
