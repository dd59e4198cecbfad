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

from unsup3d.shape_check import check_shape

from .precision import geometry_precision

__all__ = ["light_direction", "lambertian", "shading_map", "shade"]


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
    return (normal * direction.unsqueeze(-2).unsqueeze(-2)).sum(-1).clamp(min=0)


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
    return a[..., None, None] + b[..., None, None] * lambert


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
    return albedo * shade_map.unsqueeze(-3)
