"""Rendering the synthetic faces through the project's renderer, exactly as the model forms its reconstruction.

* canonical depth ``D`` (``H x W``, in ``[min_depth, max_depth]``, mirror-symmetric in x), canonical
  albedo ``A`` in ``[0, 1]`` (:mod:`.shapes`); normals ``n = renderer.normals(D)``; Lambertian shading
  (:mod:`unsup3d.renderer.shading`): light ``l = normalize(dx, dy, 1)``, ``s = a + b * max(0, n . l)``;
  canonical image ``A * s``,
* viewpoint ``(rx, ry, rz, tx, ty, tz)``: the canonical depth-map mesh is rasterized in the view
  (``renderer.rasterize_view``, one pass), giving the depth seen and the canonical position of every
  visible surface point, where the canonical image is sampled (``grid_sample``). This is the exact
  render of the mesh that the model's ``warp_canon_depth`` + ``inverse_warp_grid`` approximate,
* pixels whose visible surface point lies on the head ellipse (``foreground="head"``) or on the face
  region of it (``"face"``: :func:`~.shapes.face_region`) are foreground; the image is composited over
  the background, and the ground-truth depth is the rendered depth on the foreground, ``max_depth``
  elsewhere.

The canonical maps and the mesh are built at the output size (``canonical_supersample = 1``), the
model's own resolution; the view is rasterized at ``supersample`` times the output size, then
images, masks and depth are area-averaged (antialiasing; silhouette depth pixels blend with the
background like the original synface data, whose evaluation erodes the mask by one pixel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unsup3d.renderer import (
    Renderer,
    grid_faces,
    interpolate_face_attributes,
    pixel_grid,
    pixels_to_normalized,
    shading,
)

from .params import SyntheticConfig
from .shapes import background_image, canonical_albedo, canonical_shape, face_region, head_coordinates

__all__ = ["make_renderer", "render_samples"]


def make_renderer(cfg: SyntheticConfig, size: int) -> Renderer:
    """The renderer of the data: the model's camera (``cfg``'s fov, depth range, rotation centre) at ``size``."""
    return Renderer(
        image_size=size,
        fov=cfg.fov,
        min_depth=cfg.min_depth,
        max_depth=cfg.max_depth,
        rot_center_depth=cfg.rot_center_depth,
        backend="torch",
    )


@torch.no_grad()
def render_samples(params: dict, cfg: SyntheticConfig | None = None, renderer=None) -> dict:
    """Render samples from their parameters, as the model forms images.

    Returns:
        dict with ``"image"`` ``B x 3 x S x S`` in [0, 1], ``"depth"`` ``B x S x S`` ground truth in
        ``[min_depth, max_depth]`` (background ``max_depth``), ``"mask"`` ``B x S x S`` foreground
        coverage in [0, 1], and the canonical factors at ``C = S * canonical_supersample`` (by
        default the output size, like the model's canonical maps): ``"canon_depth"`` ``B x C x C``,
        ``"canon_albedo"`` / ``"canon_image"`` ``B x 3 x C x C``, ``"canon_mask"`` ``B x C x C``.
    """
    cfg = cfg or SyntheticConfig()
    ss = int(cfg.supersample)
    size = cfg.image_size * ss  # render resolution
    csize = cfg.image_size * cfg.canonical_supersample  # canonical maps and mesh resolution
    renderer = renderer or make_renderer(cfg, size)
    depth, head = canonical_shape(params, csize, cfg.min_depth, cfg.max_depth)
    albedo = canonical_albedo(params, csize, detail=cfg.albedo_detail, hair=cfg.foreground == "head")
    light = params["light"]
    normal = renderer.normals(depth)  # B x R x R x 3
    lambert = shading.lambertian(normal, shading.light_direction(light[:, 2:4]))
    canon_image = shading.shade(albedo, shading.shading_map(light[:, 0], light[:, 1], lambert)).clamp(0, 1)

    # One rasterization gives both the depth seen and, per pixel, the canonical position of the
    # visible surface point (perspective-correct), i.e. an exact render of the mesh. The model's
    # inverse warp (renderer.inverse_warp_grid) approximates the same lookup from the depth.
    frags = renderer.rasterize_view(depth, params["view"], image_size=size)
    faces = grid_faces(csize, csize)
    uv = pixel_grid(csize, csize).view(-1, 2)[faces]  # F x 3 x 2 canonical pixel of each corner
    grid = pixels_to_normalized(interpolate_face_attributes(frags, uv), csize, csize)
    far = torch.full_like(frags.zbuf, renderer.background_depth)
    recon_depth = torch.where(frags.mask, frags.zbuf, far)
    warped = F.grid_sample(canon_image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    # foreground: the visible surface point lies on the head or the face (analytic ellipse tests,
    # antialiased by the supersampling)
    u, v = head_coordinates(params, *grid.unbind(-1))
    inside = (u**2 + v**2 < 1) if cfg.foreground == "head" else (face_region(u, v) < 1)
    alpha = (inside & frags.mask).unsqueeze(1).float()
    image = warped * alpha + background_image(params, size, cfg.background) * (1 - alpha)
    gt = torch.where(alpha[:, 0] > 0.5, recon_depth, torch.full_like(recon_depth, cfg.max_depth))
    gt = gt.clamp(cfg.min_depth, cfg.max_depth)
    if ss > 1:
        image = F.avg_pool2d(image, ss)
        gt = F.avg_pool2d(gt.unsqueeze(1), ss)[:, 0]
        alpha = F.avg_pool2d(alpha, ss)
    return {
        "image": image.clamp(0, 1),
        "depth": gt,
        "mask": alpha[:, 0],
        "canon_depth": depth,
        "canon_albedo": albedo,
        "canon_image": canon_image,
        "canon_mask": head,
    }
