"""The differentiable renderer of the method: depth-map meshes warped between canonical and view.

Small composable steps, PyTorch3D style: lift (camera), transform (viewpoint), project,
rasterize to fragments, then read out depth or interpolate texture coordinates. The renderer holds
only constants (camera and depth range); the viewpoint is always an argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unsup3d.shape_check import check_shape

from . import camera
from .grid import grid_face_vertices, grid_faces, rasterize_grid
from .precision import geometry_precision
from .rasterize import Fragments

__all__ = ["Renderer"]

_BACKENDS = ("torch", "pytorch3d")


class Renderer:
    """Renderer with the original method's camera conventions.

    Args:
        image_size: side ``S`` of the square images the model works at (64 in the paper).
        fov: field of view in degrees (10 in the paper).
        min_depth, max_depth: range of canonical depth values (0.9, 1.1).
        rot_center_depth: the viewpoint rotates about ``(0, 0, rot_center_depth)`` (1.0).
        backend: ``"torch"`` (built-in pure-PyTorch rasterizer) or ``"pytorch3d"`` (PyTorch3D's
            mesh rasterizer, when installed).
    """

    def __init__(
        self,
        image_size: int = 64,
        fov: float = 10.0,
        min_depth: float = 0.9,
        max_depth: float = 1.1,
        rot_center_depth: float = 1.0,
        backend: str = "torch",
    ) -> None:
        if int(image_size) < 2:
            raise ValueError(f"renderer image_size must be at least 2, got {image_size}")
        if not 0.0 < float(fov) < 180.0:
            raise ValueError(f"renderer fov must be in (0, 180) degrees, got {fov}")
        if not 0.0 < float(min_depth) < float(max_depth):
            raise ValueError(
                f"renderer depth range must satisfy 0 < min_depth < max_depth, got {min_depth}, {max_depth}"
            )
        if backend not in _BACKENDS:
            raise ValueError(f"unknown renderer backend {backend!r}; choose one of {_BACKENDS}")
        if backend == "pytorch3d":
            from .pytorch3d_backend import require_pytorch3d

            require_pytorch3d()
        self.image_size = int(image_size)
        self.fov = float(fov)
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.rot_center_depth = float(rot_center_depth)
        self.backend = backend

    def __repr__(self) -> str:
        return (
            f"Renderer(image_size={self.image_size}, fov={self.fov}, min_depth={self.min_depth}, "
            f"max_depth={self.max_depth}, rot_center_depth={self.rot_center_depth}, "
            f"backend={self.backend!r})"
        )

    # ----------------------------------------------------------------------------------- camera
    @property
    def margin(self) -> float:
        """Depth margin allowed outside ``[min_depth, max_depth]``: half the range."""
        return (self.max_depth - self.min_depth) / 2.0

    @property
    def background_depth(self) -> float:
        """Depth of pixels no surface covers: ``max_depth + margin``."""
        return self.max_depth + self.margin

    def K(self, height: int, width: int | None = None, *, like: torch.Tensor | None = None) -> torch.Tensor:
        """``3 x 3`` intrinsics for an ``H x W`` image, on ``like``'s device and dtype."""
        width = height if width is None else width
        kw = {} if like is None else {"device": like.device, "dtype": like.dtype}
        return camera.intrinsics(height, width, self.fov, **kw)

    @geometry_precision
    def depth_to_points(self, depth: torch.Tensor) -> torch.Tensor:
        """Lift a depth map to camera space.

        Args:
            depth: ``B x H x W``.

        Returns:
            ``B x H x W x 3`` points ``d * K^-1 [u, v, 1]``.
        """
        _check_depth(depth)
        return camera.lift_depth(depth, self.K(*depth.shape[-2:], like=depth))

    @geometry_precision
    def normals(self, depth: torch.Tensor) -> torch.Tensor:
        """Unit normals by central differences of the lifted points.

        Args:
            depth: ``B x H x W``.

        Returns:
            ``B x H x W x 3``; border rows and columns are ``(0, 0, 1)``.
        """
        return camera.normals_from_points(self.depth_to_points(depth))

    @geometry_precision
    def view_points(self, canon_depth: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Canonical depth lifted and moved into ``view``: ``P' = R (P - c) + c + t``.

        Args:
            canon_depth: ``B x H x W``.
            view: ``B x 6``.

        Returns:
            ``B x H x W x 3`` camera-space points of the posed mesh's vertices.
        """
        _check_depth(canon_depth)
        _check_view(view, canon_depth)
        return camera.transform_points(self.depth_to_points(canon_depth), view, self.rot_center_depth)

    def visible_mask(self, recon_depth: torch.Tensor) -> torch.Tensor:
        """Where a reconstruction is valid: pixels the warped surface covers.

        ``recon_depth < max_depth + margin`` (uncovered pixels hold ``background_depth`` =
        ``max_depth + margin``), as the original's reconstruction mask.

        Args:
            recon_depth: ``B x H x W`` output of :meth:`warp_canon_depth`.

        Returns:
            ``B x H x W`` bool.
        """
        return recon_depth < self.max_depth + self.margin

    # ------------------------------------------------------------------------------ rasterizing
    @geometry_precision
    def rasterize_view(
        self, canon_depth: torch.Tensor, view: torch.Tensor, image_size: int | tuple[int, int] | None = None
    ) -> Fragments:
        """Rasterize the canonical depth-map mesh transformed into ``view``.

        Args:
            canon_depth: ``B x H x W`` canonical depth (vertex ``(i, j)`` per pixel).
            view: ``B x 6`` viewpoint ``(rx, ry, rz, tx, ty, tz)``.
            image_size: output size ``S'`` or ``(H', W')``; default the depth map's size. The
                camera keeps the same field of view at every size.

        Returns:
            :class:`~unsup3d.renderer.rasterize.Fragments` of size ``B x H' x W'`` over the
            ``2 (H - 1) (W - 1)`` grid faces.
        """
        _check_depth(canon_depth)
        _check_view(view, canon_depth)
        b, h, w = canon_depth.shape
        oh, ow = _size_pair(image_size, (h, w))
        # (u, v, z) of every vertex: lift, transform and project fused in one pass (camera.reproject_depth)
        screen = camera.reproject_depth(canon_depth, view, self.fov, (oh, ow), self.rot_center_depth)
        if self.backend == "pytorch3d":
            from .pytorch3d_backend import rasterize_pytorch3d

            faces = grid_faces(h, w, device=canon_depth.device)
            return rasterize_pytorch3d(screen.view(b, h * w, 3), faces, (oh, ow))
        return rasterize_grid(screen, (oh, ow))

    @geometry_precision
    def warp_canon_depth(self, canon_depth: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Depth of the canonical mesh transformed into ``view``, as seen by the camera.

        Args:
            canon_depth: ``B x H x W``.
            view: ``B x 6``.

        Returns:
            ``B x H x W`` depth of the nearest surface; pixels no surface covers get
            ``background_depth``; values clamped to ``[min_depth - margin, max_depth + margin]``
            as in the original method. Differentiable w.r.t. ``canon_depth`` and ``view``.
        """
        frags = self.rasterize_view(canon_depth, view)
        depth = torch.where(frags.mask, frags.zbuf, frags.zbuf.new_tensor(self.background_depth))
        return depth.clamp(self.min_depth - self.margin, self.max_depth + self.margin)

    @geometry_precision
    def inverse_warp_grid(self, depth: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Sampling grid from the view back into the canonical image.

        Args:
            depth: ``B x H x W`` depth in the view (e.g. ``warp_canon_depth`` output).
            view: ``B x 6``.

        Returns:
            ``B x H x W x 2``: for each pixel of the view, where its 3D point lands in the
            canonical image, normalised to ``[-1, 1]`` for ``grid_sample(align_corners=True)``.
        """
        _check_depth(depth)
        _check_view(view, depth)
        b, h, w = depth.shape
        uv = camera.reproject_depth(depth, view, self.fov, None, self.rot_center_depth, inverse=True)[..., :2]
        return camera.pixels_to_normalized(uv, h, w)

    @geometry_precision
    def render_view(
        self,
        texture: torch.Tensor,
        canon_depth: torch.Tensor,
        view: torch.Tensor,
        background: float | torch.Tensor = 0.0,
        image_size: int | tuple[int, int] | None = None,
        return_mask: bool = False,
    ):
        """Render the textured canonical mesh from ``view``.

        Texture coordinates are the canonical pixel positions of the mesh vertices, interpolated
        perspective-correctly and sampled bilinearly, so the output can be larger than the
        texture (turntables, relighting).

        Args:
            texture: ``B x C x H x W`` texture in the canonical frame.
            canon_depth: ``B x H x W`` canonical depth.
            view: ``B x 6``.
            background: value of pixels no surface covers: a float or a tensor broadcastable to
                ``B x C x H' x W'``.
            image_size: output size ``S'`` or ``(H', W')``; default the texture's size.
            return_mask: also return the ``B x 1 x H' x W'`` coverage mask.

        Returns:
            ``B x C x H' x W'`` image (and the mask when asked).
        """
        _check_depth(canon_depth)
        b, h, w = canon_depth.shape
        check_shape(texture, "B x C x H x W", "a texture matching the canonical depth", B=b, H=h, W=w)
        frags = self.rasterize_view(canon_depth, view, image_size)
        # Canonical pixel (u, v) = (j, i) of each winning face's corners, by the grid's arithmetic.
        corners = grid_face_vertices(frags.pix_to_face, h, w)  # B x H' x W' x 3 vertex indices
        uv = torch.stack([corners % w, corners // w], -1).to(texture.dtype)  # B x H' x W' x 3 x 2
        uv_pix = (frags.bary_coords.unsqueeze(-1) * uv).sum(-2)  # B x H' x W' x 2 (empty pixels: bary 0)
        grid = camera.pixels_to_normalized(uv_pix, h, w)
        image = F.grid_sample(texture, grid, mode="bilinear", padding_mode="border", align_corners=True)
        mask = frags.mask.unsqueeze(1)
        if not torch.is_tensor(background):
            background = image.new_tensor(float(background))
        image = torch.where(mask, image, background.to(image))
        return (image, mask) if return_mask else image


def _check_depth(depth: torch.Tensor) -> None:
    check_shape(depth, "B x H x W", "a depth map")
    if not depth.is_floating_point():
        raise ValueError(f"expected a floating-point depth map, got {depth.dtype}")


def _check_view(view: torch.Tensor, depth: torch.Tensor) -> None:
    check_shape(view, "B x 6", "a viewpoint (rx, ry, rz, tx, ty, tz)", B=depth.shape[0])


def _size_pair(size, default: tuple[int, int]) -> tuple[int, int]:
    if size is None:
        return default
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])
