"""Optional PyTorch3D backend: the same fragments from PyTorch3D's mesh rasterizer.

PyTorch3D has no Linux wheels on PyPI; install it by hand (see the README) to use
``Renderer(backend="pytorch3d")``. Its outputs are converted to this package's conventions:
pixel centres at integer coordinates, x along the width, y down, per-mesh face indices.
"""

from __future__ import annotations

import torch

from .rasterize import Fragments, winner_fragments

__all__ = ["EDGE_TOLERANCE_PX", "is_available", "require_pytorch3d", "rasterize_pytorch3d"]

#: Distance in pixels within which a pixel centre outside a face still counts as covered by it.
EDGE_TOLERANCE_PX = 1e-6


def is_available() -> bool:
    """Whether PyTorch3D's rasterizer can be imported."""
    try:
        import pytorch3d.renderer.mesh.rasterize_meshes  # noqa: F401
    except Exception:
        return False
    return True


def require_pytorch3d() -> None:
    """Raise a clear error when PyTorch3D is not importable."""
    try:
        import pytorch3d.renderer.mesh.rasterize_meshes  # noqa: F401
    except Exception as exc:  # ImportError, or a broken build raising OSError/RuntimeError
        raise ImportError(
            "renderer backend 'pytorch3d' needs PyTorch3D, which could not be imported "
            f"({type(exc).__name__}: {exc}). It has no Linux wheels on PyPI: build it with "
            "`pip install 'git+https://github.com/facebookresearch/pytorch3d.git'` "
            "(see the README), or use the default backend 'torch' (renderer.backend=torch)."
        ) from exc


def rasterize_pytorch3d(verts: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int]) -> Fragments:
    """Rasterize with PyTorch3D; same contract as :func:`unsup3d.renderer.rasterize.rasterize`.

    Args:
        verts: ``B x V x 3`` screen-space vertices ``(x_pixel, y_pixel, z)``.
        faces: ``F x 3`` or ``B x F x 3`` int64.
        image_size: ``(H, W)``.

    Returns:
        :class:`Fragments` ``B x H x W``. PyTorch3D selects the nearest face; the barycentrics
        and depth of the winner are recomputed by :func:`~unsup3d.renderer.rasterize.winner_fragments`,
        as the built-in backend's are, so both backends give identical gradients.
    """
    require_pytorch3d()
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    b = verts.shape[0]
    h, w = image_size
    faces = faces.to(device=verts.device, dtype=torch.int64)
    faces_b = faces.unsqueeze(0).expand(b, -1, -1) if faces.ndim == 2 else faces
    s = min(h, w)
    # PyTorch3D NDC: +x left, +y up, the shorter side spans [-1, 1]; pixel centre i of a side of
    # length n sits at 1 - (2 i + 1) / n * (n / s) scaled by the aspect ratio.
    x_ndc = (w - 1 - 2.0 * verts[..., 0]) / s
    y_ndc = (h - 1 - 2.0 * verts[..., 1]) / s
    ndc = torch.stack([x_ndc, y_ndc, verts[..., 2]], -1).detach()
    meshes = Meshes(verts=list(ndc), faces=list(faces_b))
    # PyTorch3D's inside test is strict (all barycentrics > 0), so a pixel centre exactly on an edge
    # shared by two faces belongs to neither; grid meshes seen from the identity view have every
    # pixel centre on a vertex. A blur radius of EDGE_TOLERANCE_PX pixels (squared, in NDC units) also
    # admits points that close to a face, and the z-test then picks the nearer of the two faces: the
    # built-in rasterizer's inclusive edges.
    blur = (2.0 * EDGE_TOLERANCE_PX / s) ** 2
    with torch.no_grad():
        p2f, _, _, _ = rasterize_meshes(
            meshes, image_size=(h, w), blur_radius=blur, faces_per_pixel=1,
            perspective_correct=True, cull_backfaces=False, bin_size=0,
        )
    p2f = p2f[..., 0].long()
    f = faces_b.shape[1]
    offset = torch.arange(b, device=verts.device).view(b, 1, 1) * f
    pix_to_face = torch.where(p2f >= 0, p2f - offset, p2f)
    return winner_fragments(verts, faces_b, pix_to_face)
