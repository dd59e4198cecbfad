"""Animations of the canonical factors: turntables (a yaw sweep of the textured or shape-only mesh)
and relighting (a light circling the face), and their single frames: the mesh seen from any viewpoints
(:func:`render_views`) and relit from any light directions (:func:`relight_images`).

Pure functions over the model's :class:`~unsup3d.renderer.Renderer`: tensors in, frames out, ``T x B x C x
H' x W'`` in ``[0, 1]`` (``T`` frames of ``B`` items). The viewpoint ``(rx, ry, rz, tx, ty, tz)`` and
``R = Rz Ry Rx`` are the renderer's (:mod:`unsup3d.renderer.camera`); the shading is
:mod:`unsup3d.renderer.shading`'s. Write the frames with :func:`unsup3d.files.video.write_video`.
"""

from __future__ import annotations

import math

import torch

from unsup3d.renderer import Renderer, shading
from unsup3d.shape_check import check_shape
from unsup3d.visualize.panels import normal_to_image

__all__ = ["normal_shaded", "relight_frames", "relight_images", "render_views", "turntable_frames", "yaw_views"]

# Light of the shape-only renders: from the upper left and mostly frontal. In the renderer's frame
# (y down, normals of a surface facing the camera are (0, 0, 1)), n . l > 0 lights a surface, so
# positive dx, dy light the left and top sides.
_SHAPE_LIGHT = (0.4, 0.4, 1.0)


def yaw_views(
    num_frames: int,
    max_yaw_deg: float = 90.0,
    pitch_deg: float = -6.0,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Viewpoints of a yaw sweep from ``-max_yaw_deg`` to ``+max_yaw_deg`` at a fixed pitch.

    The original's ``render_yaw`` first tilted the mesh by ``-0.1 * 60`` degrees about x
    (``v_before``), then swept the yaw over ``[-90, 90]`` degrees; with ``R = Rz Ry Rx`` (rotations
    about the same centre) the view ``(pitch, yaw, 0, 0, 0, 0)`` is exactly that composition.

    Args:
        num_frames: ``T`` (1 gives yaw 0).

    Returns:
        ``T x 6`` viewpoints ``(pitch, yaw, 0, 0, 0, 0)`` in radians; yaw increases with the frame
        index, and the middle frame of an odd ``T`` has yaw 0.
    """
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    t = int(num_frames)
    views = torch.zeros(t, 6, device=device, dtype=dtype)
    if t > 1:
        views[:, 1] = torch.linspace(-max_yaw_deg, max_yaw_deg, t, device=device, dtype=dtype) * (math.pi / 180)
    views[:, 0] = pitch_deg * math.pi / 180
    return views


def render_views(
    renderer: Renderer,
    texture: torch.Tensor,
    canon_depth: torch.Tensor,
    views: torch.Tensor,
    image_size: int | tuple[int, int] | None = None,
    background: float | torch.Tensor = 0.0,
    max_batch: int = 256,
) -> torch.Tensor:
    """Render each textured canonical mesh from several viewpoints (``Renderer.render_view``, batched).

    Args:
        renderer: the model's renderer.
        texture: ``B x C x H x W`` texture in the canonical frame.
        canon_depth: ``B x H x W`` canonical depth.
        views: ``T x 6`` (the same views for every item) or ``T x B x 6`` viewpoints
            ``(rx, ry, rz, tx, ty, tz)``, radians (the renderer's convention, ``R = Rz Ry Rx``).
        image_size: output size ``S'`` or ``(H', W')``; default ``H x W``.
        background: value of uncovered pixels (float or tensor broadcastable to ``N x C x H' x W'``).
        max_batch: at most this many images per renderer call (``max(1, max_batch // B)`` views).

    Returns:
        ``T x B x C x H' x W'``: frame ``t`` of item ``b`` is ``texture[b]`` on ``canon_depth[b]`` seen
        from ``views[t]`` (or ``views[t, b]``).
    """
    b = check_shape(canon_depth, "B x H x W", "canon_depth")["B"]
    check_shape(texture, "B x C x H x W", "texture", B=b)
    check_shape(views, "T x 6 or T x B x 6", "views", B=b)
    if views.ndim == 2:
        views = views.unsqueeze(1).expand(-1, b, -1)
    t = views.shape[0]
    per_call = max(1, int(max_batch) // max(b, 1))
    out = []
    with torch.no_grad():
        texture, canon_depth, views = texture.detach(), canon_depth.detach(), views.detach().to(canon_depth)
        for s in range(0, t, per_call):
            v = views[s:s + per_call]
            k = v.shape[0]
            img = renderer.render_view(
                texture.repeat(k, 1, 1, 1), canon_depth.repeat(k, 1, 1), v.reshape(k * b, 6),
                background=background, image_size=image_size,
            )
            out.append(img.view(k, b, *img.shape[1:]))
    return torch.cat(out, 0)


def turntable_frames(
    renderer: Renderer,
    texture: torch.Tensor,
    canon_depth: torch.Tensor,
    num_frames: int = 15,
    max_yaw_deg: float = 90.0,
    pitch_deg: float = -6.0,
    image_size: int | tuple[int, int] | None = None,
    background: float | torch.Tensor = 0.0,
    max_batch: int = 256,
) -> torch.Tensor:
    """Render the textured canonical meshes rotating about the vertical axis (see :func:`yaw_views`).

    Args:
        renderer: the model's renderer.
        texture: ``B x C x H x W`` texture in the canonical frame (e.g. the canonical image mapped to
            ``[0, 1]``, or :func:`normal_shaded`).
        canon_depth: ``B x H x W`` canonical depth.
        num_frames: ``T``.
        max_yaw_deg, pitch_deg: sweep range and fixed pitch (degrees).
        image_size, background, max_batch: as in :func:`render_views`.

    Returns:
        ``T x B x C x H' x W'``, values from ``texture`` and ``background``.
    """
    views = yaw_views(num_frames, max_yaw_deg, pitch_deg, device=canon_depth.device, dtype=canon_depth.dtype)
    return render_views(renderer, texture, canon_depth, views, image_size, background, max_batch)


def relight_images(
    renderer: Renderer,
    albedo: torch.Tensor,
    canon_depth: torch.Tensor,
    ambient: torch.Tensor,
    diffuse: torch.Tensor,
    light_dxdy: torch.Tensor,
    view: torch.Tensor | None = None,
    image_size: int | tuple[int, int] | None = None,
    background: float | torch.Tensor = 0.0,
    max_batch: int = 256,
) -> torch.Tensor:
    """Relight the canonical albedo with given light directions, shaded as the model shades.

    Frame ``t`` is lit from ``l_t = normalize(dx_t, dy_t, 1)`` (:func:`unsup3d.renderer.shading.light_direction`):
    ``img = (albedo / 2 + 0.5) (ambient + diffuse max(0, n . l_t))`` clipped to ``[0, 1]``, with the
    normals ``renderer.normals(canon_depth)``. With the model's own light (``Factors.light_direction``
    as ``(dx, dy)``) this is its canonical image.

    Args:
        renderer: the model's renderer.
        albedo: ``B x 3 x H x W`` canonical albedo in ``[-1, 1]``.
        canon_depth: ``B x H x W``.
        ambient, diffuse: ``B`` light strengths (``Factors.light_ambient``, ``light_diffuse``).
        light_dxdy: ``T x 2`` (the same lights for every item) or ``T x B x 2`` light parameters
            ``(dx, dy)``, the model's (netL's) units.
        view: optional ``B x 6`` viewpoint: render the relit canonical image into it (e.g.
            ``Factors.view`` to relight the input as seen). When ``view`` is None and ``image_size`` is
            None, the canonical images are returned as they are; with only ``image_size``, they are
            rendered from the canonical view at that size.
        image_size, background, max_batch: as in :func:`render_views` (used when rendering).

    Returns:
        ``T x B x 3 x H' x W'`` in ``[0, 1]`` (``H' x W' = H x W`` unless rendered at ``image_size``).
    """
    b = check_shape(canon_depth, "B x H x W", "canon_depth")["B"]
    check_shape(albedo, "B x C x H x W", "albedo", B=b)
    check_shape(light_dxdy, "T x 2 or T x B x 2", "light_dxdy", B=b)
    with torch.no_grad():
        depth = canon_depth.detach()
        normal = renderer.normals(depth)  # B x H x W x 3
        light = shading.light_direction(light_dxdy.detach().to(depth))  # T x 3 or T x B x 3
        if light.ndim == 2:
            light = light.unsqueeze(1)
        lambert = shading.lambertian(normal.unsqueeze(0), light)  # T x B x H x W
        ambient, diffuse = ambient.detach().view(1, b).to(depth), diffuse.detach().view(1, b).to(depth)
        shade_map = shading.shading_map(ambient, diffuse, lambert)
        frames = shading.shade((albedo.detach().to(depth) / 2 + 0.5).unsqueeze(0), shade_map).clamp(0, 1)
        if view is None and image_size is None:
            return frames
        views = depth.new_zeros(b, 6) if view is None else view.detach().to(depth)
        # One view for all frames: rasterize once, sample the T textures stacked as channels.
        t, _, c, h, w = frames.shape
        stacked = frames.permute(1, 0, 2, 3, 4).reshape(b, t * c, h, w)
        out = render_views(renderer, stacked, depth, views.unsqueeze(0), image_size, background, max_batch)[0]
        return out.view(b, t, c, *out.shape[-2:]).permute(1, 0, 2, 3, 4).clamp(0, 1)


def relight_frames(
    renderer: Renderer,
    albedo: torch.Tensor,
    canon_depth: torch.Tensor,
    ambient: torch.Tensor,
    diffuse: torch.Tensor,
    num_frames: int = 30,
    radius: float = 0.8,
    view: torch.Tensor | None = None,
    image_size: int | tuple[int, int] | None = None,
    background: float | torch.Tensor = 0.0,
    max_batch: int = 256,
) -> torch.Tensor:
    """Relight the canonical albedo with a light moving on a circle (:func:`relight_images`).

    The light of frame ``t`` is ``(dx, dy) = (r cos a_t, r sin a_t)``, ``a_t = 2 pi t / T``.

    Args:
        num_frames: ``T``.
        radius: radius ``r`` of the circle of ``(dx, dy)``.
        renderer, albedo, canon_depth, ambient, diffuse, view, image_size, background, max_batch: as in
            :func:`relight_images`.

    Returns:
        ``T x B x 3 x H' x W'`` in ``[0, 1]``.
    """
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    t = int(num_frames)
    ang = torch.arange(t, device=canon_depth.device, dtype=canon_depth.dtype) * (2 * math.pi / t)
    dxdy = torch.stack([radius * ang.cos(), radius * ang.sin()], -1)  # T x 2
    return relight_images(renderer, albedo, canon_depth, ambient, diffuse, dxdy, view, image_size, background,
                          max_batch)


def normal_shaded(
    renderer: Renderer,
    canon_depth: torch.Tensor,
    mode: str = "lambertian",
    light: tuple[float, float, float] = _SHAPE_LIGHT,
    ambient: float = 0.25,
    diffuse: float = 0.75,
) -> torch.Tensor:
    """A shape-only texture of the canonical depth, for the untextured turntable.

    Args:
        renderer: the model's renderer.
        canon_depth: ``B x H x W``.
        mode: ``"lambertian"``: grey ``ambient + diffuse max(0, n . l)`` with the fixed light ``light``
            (normalised; the default lights from the upper left); ``"normal"``: the normal map
            ``(n + 1) / 2`` (what the original's turntable used).

    Returns:
        ``B x 3 x H x W`` in ``[0, 1]``.
    """
    with torch.no_grad():
        normal = renderer.normals(canon_depth.detach())
        if mode == "normal":
            return normal_to_image(normal)
        if mode != "lambertian":
            raise ValueError(f"mode must be 'lambertian' or 'normal', got {mode!r}")
        l_dir = normal.new_tensor(light)
        l_dir = l_dir / l_dir.norm()
        grey = shading.shading_map(ambient, diffuse, shading.lambertian(normal, l_dir)).clamp(0, 1)  # B x H x W
        return grey.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
