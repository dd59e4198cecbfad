"""Lambertian shading of the method: light direction, diffuse term, shading, shaded image.

The model's light is ``(a, b, dx, dy)``: ambient and diffuse strengths and a direction
``l = normalize(dx, dy, 1)`` in the camera frame of the normals (x right, y down, z forward: a
fronto-parallel surface has the normal ``(0, 0, 1)``, so ``dx = dy = 0`` lights it head-on). The
shading is ``s = a + b max(0, n . l)`` and the shaded image ``albedo * s``. Every place that shades
(the model, the synthetic data generator, relighting and shape renders) uses these functions.

All functions broadcast over leading batch dimensions, run in full precision under autocast
(:mod:`unsup3d.renderer.precision`) and follow their input's device and dtype.
"""

from __future__ import annotations

import torch

from unsup3d.fused import fused
from unsup3d.shape_check import check_shape

from .precision import geometry_precision

__all__ = ["light_direction", "lambertian", "shading_map", "shade", "shade_lambertian"]


# The arithmetic of lambertian, shading_map and shade, shared by them and by shade_lambertian's fused pass.
def _lambert(normal: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    return (normal * direction.unsqueeze(-2).unsqueeze(-2)).sum(-1).clamp(min=0)


def _shading(a: torch.Tensor, b: torch.Tensor, lambert: torch.Tensor) -> torch.Tensor:
    return a[..., None, None] + b[..., None, None] * lambert


def _shade(albedo: torch.Tensor, shade_map: torch.Tensor) -> torch.Tensor:
    return albedo * shade_map.unsqueeze(-3)


def _shade_lambertian(albedo: torch.Tensor, normal: torch.Tensor, direction: torch.Tensor, ambient: torch.Tensor,
                      diffuse: torch.Tensor, scale: float, offset: float):
    lambert = _lambert(normal, direction)
    shade_map = _shading(ambient, diffuse, lambert)
    return lambert, shade_map, _shade(albedo * scale + offset, shade_map) * (1 / scale) - offset / scale


@geometry_precision
def light_direction(dxdy: torch.Tensor) -> torch.Tensor:
    """Unit light direction ``(dx, dy, 1) / |(dx, dy, 1)|``.

    Args:
        dxdy: ``... x 2`` (the last two light parameters).

    Returns:
        ``... x 3`` unit vectors.

    Example:
        >>> light_direction(torch.zeros(1, 2)).tolist()  # head-on
        [[0.0, 0.0, 1.0]]
    """
    check_shape(dxdy, "... x 2", "light (dx, dy)")
    d = torch.cat([dxdy, torch.ones_like(dxdy[..., :1])], -1)
    return d / d.norm(dim=-1, keepdim=True)


@geometry_precision
def lambertian(normal: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Diffuse term ``max(0, n . l)``.

    Args:
        normal: ``... x H x W x 3`` unit normals (``B x H x W x 3`` from ``Renderer.normals``).
        direction: ``... x 3`` unit light directions, broadcastable against ``normal``'s leading
            dimensions (``B x 3`` for one light per image, ``3`` for a fixed light).

    Returns:
        ``... x H x W``.

    Example:
        >>> facing = torch.tensor([0.0, 0.0, 1.0]).expand(1, 2, 2, 3)  # normals facing the camera
        >>> lambertian(facing, light_direction(torch.zeros(1, 2))).tolist()
        [[[1.0, 1.0], [1.0, 1.0]]]
    """
    check_shape(normal, "... x H x W x 3", "normals")
    check_shape(direction, "... x 3", "light directions")
    return _lambert(normal, direction)


@geometry_precision
def shading_map(ambient: torch.Tensor | float, diffuse: torch.Tensor | float, lambert: torch.Tensor) -> torch.Tensor:
    """Ambient + diffuse shading ``a + b max(0, n . l)``.

    Args:
        ambient, diffuse: ``...`` strengths (``B``), or floats.
        lambert: ``... x H x W`` diffuse term from :func:`lambertian`.

    Returns:
        ``... x H x W``.

    Example:
        >>> shading_map(0.5, 0.25, torch.ones(1, 2, 2)).tolist()
        [[[0.75, 0.75], [0.75, 0.75]]]
    """
    a = torch.as_tensor(ambient, device=lambert.device, dtype=lambert.dtype)
    b = torch.as_tensor(diffuse, device=lambert.device, dtype=lambert.dtype)
    return _shading(a, b, lambert)


@geometry_precision
def shade(albedo: torch.Tensor, shade_map: torch.Tensor) -> torch.Tensor:
    """Shaded image ``albedo * s`` (both in linear ``[0, 1]`` units; not clipped).

    Args:
        albedo: ``... x C x H x W`` in ``[0, 1]``.
        shade_map: ``... x H x W`` shading (from :func:`shading`).

    Returns:
        ``... x C x H x W``.

    Example:
        >>> shade(torch.ones(1, 3, 2, 2), torch.full((1, 2, 2), 0.5)).unique().tolist()
        [0.5]
    """
    return _shade(albedo, shade_map)


@geometry_precision
def shade_lambertian(albedo: torch.Tensor, normal: torch.Tensor, direction: torch.Tensor, ambient: torch.Tensor,
                     diffuse: torch.Tensor, signed: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`lambertian`, :func:`shading_map` and :func:`shade` in one pass: what the model computes for
    every training image, as one element-wise kernel (forward and backward) that :func:`unsup3d.fused.fused`
    compiles, instead of ~25 passes over ``B x 3 x H x W`` maps.

    Args:
        albedo: ``B x C x H x W``, in ``[0, 1]`` (or ``[-1, 1]`` with ``signed=True``).
        normal: ``B x H x W x 3`` unit normals.
        direction: ``B x 3`` unit light directions.
        ambient, diffuse: ``B`` strengths.
        signed: albedo and the returned image in ``[-1, 1]`` (the networks' range: the image is
            ``(albedo / 2 + 0.5) s * 2 - 1``) instead of ``[0, 1]``.

    Returns:
        ``(lambert, shade_map, image)``: ``B x H x W``, ``B x H x W``, ``B x C x H x W``, as the three
        functions give them.

    Example:
        >>> n = torch.tensor([0.0, 0.0, 1.0]).expand(1, 2, 2, 3)
        >>> lam, s, im = shade_lambertian(torch.ones(1, 3, 2, 2), n, light_direction(torch.zeros(1, 2)),
        ...                               torch.tensor([0.25]), torch.tensor([0.5]))
        >>> im.unique().tolist()
        [0.75]
    """
    n = check_shape(normal, "B x H x W x 3", "normals")
    check_shape(direction, "B x 3", "light directions", B=n["B"])
    check_shape(albedo, "B x C x H x W", "albedo", B=n["B"], H=n["H"], W=n["W"])
    check_shape(ambient, "B", "ambient strengths", B=n["B"])
    check_shape(diffuse, "B", "diffuse strengths", B=n["B"])
    scale, offset = (0.5, 0.5) if signed else (1.0, 0.0)
    return fused(_shade_lambertian)(albedo, normal, direction, ambient, diffuse, scale, offset)
