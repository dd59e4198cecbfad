"""Image panels of the model's factors: grids, the symmetry line, depth / normal / confidence maps.

Pure functions: tensors in, tensors (or numpy arrays) out. ``B`` is the batch size, ``H x W`` the
model's image size. Images returned here are in ``[0, 1]`` (the model's factors are in ``[-1, 1]``,
see :mod:`unsup3d.factors`). :func:`factor_images` is the one mapping of factors to images: the logged
panels, the evaluation's per-image maps and the export's maps are all drawn by it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from unsup3d.core import core_of
from unsup3d.factors import Factors
from unsup3d.files.depth_encoding import depth_to_unit
from unsup3d.renderer import Renderer

__all__ = [
    "FACTOR_IMAGES",
    "confidence_to_image",
    "depth_to_image",
    "factor_images",
    "factor_panels",
    "frames_to_grids",
    "make_grid",
    "normal_to_image",
    "symmetry_line",
    "to_uint8",
]


# ---------------------------------------------------------------------------------------------- grids
def make_grid(
    images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 0.0
) -> torch.Tensor:
    """Tile a batch of images into one image, like ``torchvision.utils.make_grid``.

    Args:
        images: ``B x C x H x W`` (a single ``C x H x W`` image is treated as ``B = 1``).
        nrow: images per row; default ``ceil(sqrt(B))`` (a square-ish grid).
        padding: pixels between images and around the border.
        pad_value: value of the padding.

    Returns:
        ``C x H' x W'`` with ``H' = rows (H + padding) + padding``, ``W' = cols (W + padding) + padding``,
        ``cols = min(nrow, B)``, ``rows = ceil(B / cols)``; image ``i`` is at row ``i // cols``, column
        ``i % cols``. Unlike torchvision, channels are kept as they are (1-channel stays 1-channel)
        and a single image is padded too.
    """
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape B x C x H x W, got {tuple(images.shape)}")
    b, c, h, w = images.shape
    if b == 0:
        raise ValueError("make_grid needs at least one image")
    if padding < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    nrow = math.ceil(math.sqrt(b)) if nrow is None else int(nrow)
    if nrow < 1:
        raise ValueError(f"nrow must be positive, got {nrow}")
    cols = min(nrow, b)
    rows = math.ceil(b / cols)
    grid = images.new_full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value)
    for i in range(b):
        y = (i // cols) * (h + padding) + padding
        x = (i % cols) * (w + padding) + padding
        grid[:, y:y + h, x:x + w] = images[i]
    return grid


def frames_to_grids(
    frames: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 0.0
) -> torch.Tensor:
    """Tile the batch of every frame: ``T x B x C x H x W`` -> ``T x C x H' x W'`` (see :func:`make_grid`)."""
    if frames.ndim != 5:
        raise ValueError(f"expected frames of shape T x B x C x H x W, got {tuple(frames.shape)}")
    return torch.stack([make_grid(f, nrow=nrow, padding=padding, pad_value=pad_value) for f in frames])


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """Convert images in ``[0, 1]`` to channel-last 8-bit arrays (values are clipped, then rounded).

    Args:
        image: ``C x H x W`` or ``B x C x H x W`` float tensor in ``[0, 1]``.

    Returns:
        numpy ``H x W x C`` (or ``B x H x W x C``) ``uint8``.
    """
    if image.ndim not in (3, 4):
        raise ValueError(f"expected C x H x W or B x C x H x W, got {tuple(image.shape)}")
    x = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    x = x.movedim(-3, -1)
    return x.cpu().numpy()


# ---------------------------------------------------------------------------------------- factor maps
def _renderer_of(model_or_renderer) -> Renderer:
    if isinstance(model_or_renderer, Renderer):
        return model_or_renderer
    try:
        return core_of(model_or_renderer).renderer
    except TypeError:
        raise TypeError(f"expected a Renderer, an Unsup3DCore or the training module holding one, got "
                        f"{type(model_or_renderer).__name__}") from None


def symmetry_line(model_or_renderer, factors: Factors) -> torch.Tensor:
    """The input image with the canonical symmetry axis drawn in green, as in the original method.

    A canonical map with ones on the columns ``w//2 - 1 : w//2 + 1`` is warped into the input view with
    the reconstructed depth (``grid_sample(axis, inverse_warp_grid(recon_depth, view))``), masked by
    ``recon_mask`` and blended: ``0.5 axis green + (1 - 0.5 axis) input`` with ``green = (-1, 1, -1)``.

    Args:
        model_or_renderer: :class:`~unsup3d.renderer.Renderer`, or the model (core or training module).
        factors: the model's output for ``B`` images of size ``H x W``.

    Returns:
        ``B x 3 x H x W`` in ``[0, 1]``.
    """
    renderer = _renderer_of(model_or_renderer)
    x = factors.input.detach()
    b, _, h, w = x.shape
    axis = x.new_zeros(b, 1, h, w)
    axis[..., w // 2 - 1:w // 2 + 1] = 1
    grid = renderer.inverse_warp_grid(factors.recon_depth.detach(), factors.view.detach())
    axis = F.grid_sample(axis, grid, mode="bilinear", align_corners=True) * factors.recon_mask.detach().to(x)
    green = x.new_tensor([-1.0, 1.0, -1.0]).view(1, 3, 1, 1)
    out = 0.5 * axis * green + (1 - 0.5 * axis) * x
    return (out / 2 + 0.5).clamp(0, 1)


def depth_to_image(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Depth as a grey image, nearer is brighter (:func:`unsup3d.files.depth_encoding.depth_to_unit`, the
    rule of the depth PNGs): ``clip((max_depth - d) / (max_depth - min_depth), 0, 1)``.

    Args:
        depth: ``B x H x W`` (or ``B x 1 x H x W``).

    Returns:
        ``B x 1 x H x W`` in ``[0, 1]``.
    """
    if depth.ndim == 3:
        depth = depth.unsqueeze(1)
    if depth.ndim != 4 or depth.shape[1] != 1:
        raise ValueError(f"expected depth of shape B x H x W, got {tuple(depth.shape)}")
    return depth_to_unit(depth.detach(), min_depth, max_depth)


def normal_to_image(normals: torch.Tensor) -> torch.Tensor:
    """Normal map as colours ``(n + 1) / 2``.

    Args:
        normals: ``B x H x W x 3`` unit normals.

    Returns:
        ``B x 3 x H x W`` in ``[0, 1]``.
    """
    if normals.ndim != 4 or normals.shape[-1] != 3:
        raise ValueError(f"expected normals of shape B x H x W x 3, got {tuple(normals.shape)}")
    return (normals.detach().permute(0, 3, 1, 2) / 2 + 0.5).clamp(0, 1)


def confidence_to_image(sigma: torch.Tensor) -> torch.Tensor:
    """Confidence ``1 / (1 + sigma)`` of a predicted uncertainty map (bright = confident).

    Args:
        sigma: ``B x C x h x w`` (any shape), positive.

    Returns:
        Tensor of the same shape in ``(0, 1]``.
    """
    return 1.0 / (1.0 + sigma.detach().clamp_min(0))


_COLOUR_FACTORS = ("input", "canon_albedo", "canon_image", "recon_image", "recon_image_flip")  # in [-1, 1]
_DEPTH_FACTORS = ("canon_depth", "recon_depth")
_NORMAL_FACTORS = ("canon_normal", "recon_normal")
_SHADING_FACTORS = ("canon_diffuse_shading", "canon_shading")
#: The factors :func:`factor_images` draws.
FACTOR_IMAGES = _COLOUR_FACTORS + _DEPTH_FACTORS + _NORMAL_FACTORS + _SHADING_FACTORS


def factor_images(
    factors: Factors, min_depth: float, max_depth: float, names: Iterable[str] | None = None
) -> dict[str, torch.Tensor]:
    """The factors as images in ``[0, 1]``, one rule each: colours ``(x + 1) / 2`` (input, albedo, canonical
    image, reconstructions), depth grey with nearer brighter (:func:`depth_to_image`), normals as colours
    (:func:`normal_to_image`), shading as it is; all clipped to ``[0, 1]`` and detached.

    Args:
        factors: the model's output for ``B`` images (a forward pass without reconstruction has no
            ``recon_*``: those are left out).
        min_depth, max_depth: the depth range the depth images span.
        names: the factors to draw (of :data:`FACTOR_IMAGES`; default all).

    Returns:
        Dict name -> ``B x C x H x W`` (``C`` is 3, or 1 for depth and shading), in the order of ``names``.
    """
    out: dict[str, torch.Tensor] = {}
    for name in FACTOR_IMAGES if names is None else names:
        if name not in FACTOR_IMAGES:
            raise ValueError(f"unknown factor image {name!r}; choose among {', '.join(FACTOR_IMAGES)}")
        x = getattr(factors, name)
        if x is None:
            continue
        x = x.detach()
        if name in _COLOUR_FACTORS:
            out[name] = (x / 2 + 0.5).clamp(0, 1)
        elif name in _DEPTH_FACTORS:
            out[name] = depth_to_image(x, min_depth, max_depth)
        elif name in _NORMAL_FACTORS:
            out[name] = normal_to_image(x)
        else:
            out[name] = x.clamp(0, 1)
    return out


def factor_panels(model, factors: Factors, max_items: int = 16, nrow: int | None = None) -> dict[str, torch.Tensor]:
    """Grids of every factor of the first ``max_items`` images, for logging.

    Args:
        model: the model (:class:`~unsup3d.core.Unsup3DCore` or the training module) or its renderer that produced ``factors``.
        factors: forward output for ``B`` images.
        max_items: at most this many images per grid.
        nrow: images per grid row (default ``ceil(sqrt(n))``).

    Returns:
        Ordered dict name -> ``C x H' x W'`` grid in ``[0, 1]`` (``C`` is 3 or 1, see
        :func:`make_grid`): ``input``, ``input_symline``, ``canon_albedo``, ``canon_image``,
        ``canon_depth``, ``canon_normal``, ``canon_diffuse_shading``, ``recon_image``,
        ``recon_image_flip`` (with the flip branch), ``conf_map_l1``, ``conf_map_l1_flip``,
        ``conf_map_percl``, ``conf_map_percl_flip`` (with confidence maps; the perceptual ones are
        ``H/4 x W/4`` per image), ``recon_depth``, ``recon_normal``, and with the static background layer
        ``canon_alpha`` (the canonical foreground alpha: white where the 3D layer renders the object, black
        where the background layer paints it) and ``background``.
    """
    renderer = _renderer_of(model)
    n = max(1, int(max_items))
    with torch.no_grad():
        f = factors.select(slice(0, n)).detach()
        images = factor_images(f, renderer.min_depth, renderer.max_depth)

        def grid(x: torch.Tensor) -> torch.Tensor:
            return make_grid(x.float(), nrow=nrow)

        panels: dict[str, torch.Tensor] = {"input": grid(images["input"]),
                                           "input_symline": grid(symmetry_line(renderer, f))}
        for name in ("canon_albedo", "canon_image", "canon_depth", "canon_normal", "canon_diffuse_shading",
                     "recon_image", "recon_image_flip"):
            if name in images:
                panels[name] = grid(images[name])
        for name, sigma in (("conf_map_l1", f.conf_sigma_l1), ("conf_map_percl", f.conf_sigma_percl)):
            if sigma is None:
                continue
            panels[name] = grid(confidence_to_image(sigma[:, :1]))
            if sigma.shape[1] > 1:
                panels[f"{name}_flip"] = grid(confidence_to_image(sigma[:, 1:2]))
        panels["recon_depth"] = grid(images["recon_depth"])
        panels["recon_normal"] = grid(images["recon_normal"])
        if f.canon_alpha is not None:
            panels["canon_alpha"] = grid(f.canon_alpha.clamp(0, 1))
        if f.background is not None:
            panels["background"] = grid((f.background / 2 + 0.5).clamp(0, 1))
    return panels
