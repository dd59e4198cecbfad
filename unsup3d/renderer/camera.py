"""Camera conventions of the original method (Wu et al., CVPR 2020), as small functional ops.

Conventions (identical to the original release so checkpoints and numbers are comparable):

* Pinhole camera for an ``S x S`` image: ``fx = fy = (S - 1) / 2 / tan(fov / 2)``,
  ``cx = cy = (S - 1) / 2``. Pixel ``(u, v)`` has its centre at integer coordinates, ``u`` runs
  along the width (x, to the right), ``v`` along the height (y, downwards); the camera looks
  along +z. This is the OpenCV camera frame.
* A depth map ``d`` lifts to points ``P = d * K^-1 [u, v, 1]^T``.
* Viewpoint vector ``(rx, ry, rz, tx, ty, tz)``: rotations in radians, ``R = Rz @ Ry @ Rx``;
  the warp to the view is ``P' = R (P - c) + c + t`` with ``c = (0, 0, rot_center_depth)``; the view of
  the left-right mirrored image is ``(rx, -ry, -rz, -tx, ty, tz)`` (:func:`mirror_view`).
* Normals by central differences of the lifted points (:func:`normal_cross_products`,
  :func:`normals_from_points`), as the original.

Every function is batch-first, device- and dtype-agnostic (tensors are created on the input's
device with the input's dtype).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.geometry.camera import project_points, unproject_points

from unsup3d.fused import fused
from unsup3d.shape_check import check_shape

__all__ = [
    "VIEW_MIRROR_SIGNS",
    "depth_tilt",
    "fit_plane",
    "intrinsics",
    "intrinsics_values",
    "pixel_grid",
    "ellipsoid_depth",
    "euler_to_rotation_matrix",
    "shift_view",
    "turn_about",
    "split_view",
    "mirror_view",
    "lift_depth",
    "project",
    "transform_points",
    "inverse_transform_points",
    "normal_cross_products",
    "normals_from_points",
    "pixels_to_normalized",
    "reproject_depth",
]

#: How a viewpoint ``(rx, ry, rz, tx, ty, tz)`` changes when the image is mirrored left-right
#: (x -> -x in the camera frame): the pitch and the vertical and depth shifts stay, the yaw, the roll
#: and the horizontal shift change sign.
VIEW_MIRROR_SIGNS = (1.0, -1.0, -1.0, -1.0, 1.0, 1.0)


def intrinsics(
    height: int, width: int, fov: float, *, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Pinhole intrinsics of the original method.

    Args:
        height, width: image size in pixels.
        fov: field of view in degrees (the same for x and y, as the original uses square images;
            for non-square images the focal length is derived from the width and shared).

    Returns:
        ``3 x 3`` matrix ``K`` with ``fx = fy = (W - 1) / 2 / tan(fov / 2)``,
        ``cx = (W - 1) / 2``, ``cy = (H - 1) / 2``.

    Example:
        >>> intrinsics(64, 64, fov=10.0)[:, 2].tolist()  # the principal point (cx, cy, 1)
        [31.5, 31.5, 1.0]
    """
    f, _, cx, cy = intrinsics_values(height, width, fov)
    return torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], device=device, dtype=dtype)


def intrinsics_values(height: int, width: int, fov: float) -> tuple[float, float, float, float]:
    """:func:`intrinsics` as Python floats ``(fx, fy, cx, cy)`` (no tensor, no device synchronisation).

    Example:
        >>> intrinsics_values(64, 64, fov=10.0)[2:]
        (31.5, 31.5)
    """
    f = (width - 1) / 2.0 / math.tan(math.radians(fov) / 2.0)
    return f, f, (width - 1) / 2.0, (height - 1) / 2.0


def pixel_grid(height: int, width: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Integer pixel centres.

    Returns:
        ``H x W x 2`` tensor whose ``[v, u]`` entry is ``(u, v)`` (x along width first).

    Example:
        >>> pixel_grid(2, 3)[1, 2].tolist()  # row v = 1, column u = 2
        [2.0, 1.0]
    """
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def _unit_grid(height: int, width: int, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``, each ``H x W``: normalised image coordinates, ``-1`` to ``1`` across the image (``y`` down);
    ``kw``: the ``device`` / ``dtype`` of ``torch.linspace``. The ellipsoid prior and the plane fit share it."""
    y, x = torch.meshgrid(torch.linspace(-1.0, 1.0, int(height), **kw), torch.linspace(-1.0, 1.0, int(width), **kw),
                          indexing="ij")
    return x, y


def fit_plane(values: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted least-squares plane ``a + b x + c y`` through each map, over the normalised image
    coordinates (``x``, ``y`` in ``[-1, 1]``, ``y`` down).

    Args:
        values: ``B x H x W`` (a depth map, a log-depth error).
        weight: ``B x H x W`` non-negative weights (e.g. the canonical foreground alpha, a mask); ``None``:
            uniform.

    Returns:
        ``(B x 3, B x H x W)``: the coefficients ``(a, b, c)`` and the plane itself.

    Example:
        >>> y = torch.linspace(-1, 1, 5).view(1, 5, 1).expand(1, 5, 5)
        >>> coeffs, plane = fit_plane(1 + 0.1 * y)
        >>> [round(abs(v), 4) for v in coeffs[0].tolist()], bool(torch.allclose(plane, 1 + 0.1 * y))
        ([1.0, 0.0, 0.1], True)
    """
    if values.dim() != 3:
        raise ValueError(f"fit_plane expects B x H x W values; got {tuple(values.shape)}")
    b, h, w = values.shape
    wt = torch.ones_like(values) if weight is None else weight.to(values).expand_as(values)
    x, y = _unit_grid(h, w, device=values.device, dtype=values.dtype)
    basis = torch.stack([torch.ones_like(x), x, y]).view(3, -1)  # 3 x HW
    wf = wt.reshape(b, 1, -1)
    normal = (basis * wf) @ basis.t() + 1e-6 * torch.eye(3, device=values.device, dtype=values.dtype)  # B x 3 x 3
    rhs = (basis * wf) @ values.reshape(b, -1, 1)  # B x 3 x 1
    coeffs = torch.linalg.solve(normal, rhs)[..., 0]
    return coeffs, (coeffs @ basis).view(b, h, w)


def depth_tilt(depth: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image slopes of the weighted least-squares plane through a depth map (:func:`fit_plane`), in depth
    units per unit of the normalised image coordinates. The canonical-tilt prior
    (:func:`unsup3d.losses.canonical_tilt_prior`) reads it.

    Args:
        depth: ``B x H x W``.
        weight: ``B x H x W`` non-negative weights (e.g. the canonical foreground alpha); ``None``: uniform.

    Returns:
        ``B x 2``: the ``x`` and ``y`` slopes.

    Example:
        >>> y = torch.linspace(-1, 1, 5).view(1, 5, 1).expand(1, 5, 5)
        >>> [round(abs(v), 4) for v in depth_tilt(1 + 0.1 * y)[0].tolist()]  # a plane rising 0.1 per unit of y
        [0.0, 0.1]
    """
    return fit_plane(depth, weight)[0][:, 1:]


def ellipsoid_depth(size: int, far: float, height: float, axes: tuple[float, float] = (0.6, 0.75),
                    like: torch.Tensor | None = None) -> torch.Tensor:
    """A centred ellipsoidal bulge, the shape prior of an ellipsoid initialisation (as GAN2Shape's).

    ``d(u, v) = far - height * sqrt(max(0, 1 - (u / a)^2 - (v / b)^2))`` with ``u, v`` in ``[-1, 1]``
    across the image (x right, y down) and semi-axes ``(a, b) = axes``: ``far`` outside the ellipse,
    nearest (``far - height``) at the centre.

    Args:
        size: ``S``.
        far, height: depth outside the bulge and height of its tip.
        like: tensor whose device and dtype the result takes.

    Returns:
        ``S x S``.

    Example:
        >>> d = ellipsoid_depth(5, far=1.0, height=0.25)
        >>> d[2, 2].item(), d[0, 0].item()  # the tip at the centre, far at the corners
        (0.75, 1.0)
    """
    kw = {} if like is None else {"device": like.device, "dtype": like.dtype}
    u, v = _unit_grid(size, size, **kw)
    r2 = (u / axes[0]) ** 2 + (v / axes[1]) ** 2
    return far - height * (1 - r2).clamp(min=0).sqrt()


def euler_to_rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``R = Rz @ Ry @ Rx`` from Euler angles.

    Each factor is the standard right-handed rotation about its axis, as in the original code.
    Written out in closed form (kornia has axis-angle and quaternion conversions, but no
    x-y-z Euler composition in this order; composing three kornia calls is slower and no clearer).

    Args:
        angles: ``B x 3`` tensor ``(rx, ry, rz)`` in radians.

    Returns:
        ``B x 3 x 3`` rotation matrices.

    Example:
        >>> R = euler_to_rotation_matrix(torch.tensor([[0.0, math.pi / 2, 0.0]]))  # 90 degrees of yaw
        >>> torch.allclose(R[0], torch.tensor([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]]), atol=1e-6)
        True
    """
    check_shape(angles, "B x 3", "angles")
    cx, cy, cz = angles.cos().unbind(-1)
    sx, sy, sz = angles.sin().unbind(-1)
    # Rz @ Ry @ Rx expanded.
    r00 = cz * cy
    r01 = cz * sy * sx - sz * cx
    r02 = cz * sy * cx + sz * sx
    r10 = sz * cy
    r11 = sz * sy * sx + cz * cx
    r12 = sz * sy * cx - cz * sx
    r20 = -sy
    r21 = cy * sx
    r22 = cy * cx
    return torch.stack([r00, r01, r02, r10, r11, r12, r20, r21, r22], dim=-1).view(-1, 3, 3)


def split_view(view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a viewpoint vector into rotation matrix and translation.

    Args:
        view: ``B x 6`` tensor ``(rx, ry, rz, tx, ty, tz)``, rotations in radians.

    Returns:
        ``(R, t)``: ``B x 3 x 3`` rotation and ``B x 3`` translation.

    Example:
        >>> R, t = split_view(torch.tensor([[0.0, 0, 0, 1, 2, 3]]))
        >>> torch.equal(R[0], torch.eye(3)), t.tolist()
        (True, [[1.0, 2.0, 3.0]])
    """
    check_shape(view, "B x 6", "a viewpoint (rx, ry, rz, tx, ty, tz)")
    return euler_to_rotation_matrix(view[:, :3]), view[:, 3:]


def turn_about(view: torch.Tensor, rotation: torch.Tensor, pivot_depth: torch.Tensor,
               rot_center_depth: float = 1.0) -> torch.Tensor:
    """``view`` with its rotation replaced by ``rotation`` and its translation changed so that the point
    ``(0, 0, pivot_depth)`` of the canonical frame stays where ``view`` puts it: the object turned about
    its own centre rather than the rotation centre ``c`` (``t' = t + (R - R') (p - c)``, :func:`transform_points`).

    Args:
        view: ``B x 6`` viewpoint.
        rotation: ``B x 3`` the new ``(rx, ry, rz)`` in radians.
        pivot_depth: ``B`` depth of the point to keep in place.
        rot_center_depth: the rotation centre's depth.

    Returns:
        ``B x 6``.

    Example:
        >>> view = torch.zeros(1, 6)
        >>> turned = turn_about(view, torch.tensor([[0.0, 0.3, 0.0]]), torch.tensor([0.9]))
        >>> p = torch.tensor([[[0.0, 0.0, 0.9]]])
        >>> torch.allclose(transform_points(p, turned), transform_points(p, view), atol=1e-6)
        True
    """
    check_shape(view, "B x 6", "a viewpoint (rx, ry, rz, tx, ty, tz)")
    check_shape(rotation, "B x 3", "rotation angles", B=view.shape[0])
    check_shape(pivot_depth, "B", "pivot depths", B=view.shape[0])
    offset = torch.zeros_like(rotation)
    offset[:, 2] = pivot_depth.to(view) - rot_center_depth
    shift = (euler_to_rotation_matrix(view[:, :3]) - euler_to_rotation_matrix(rotation)) @ offset.unsqueeze(-1)
    return torch.cat([rotation, view[:, 3:] + shift.squeeze(-1)], 1)


def shift_view(view: torch.Tensor, shift: torch.Tensor, focal: float, depth: float = 1.0) -> torch.Tensor:
    """The viewpoint of the image shifted by ``shift`` pixels: the object translated by ``shift * depth / focal``
    in x and y, its rotation unchanged.

    Exact for the points at ``depth`` (a translation ``t`` moves a point at depth ``Z`` by ``focal * t / Z``
    pixels, :func:`project`); points ``dZ`` nearer or farther move ``dZ / Z`` more or less (a face's
    relief of 0.05 at depth 1 and a 4-pixel shift: 0.2 pixel). A shifted image is also seen from a ray turned
    by ``atan(shift / focal)`` (0.64 degree for 4 pixels at the original's 64 pixels and 10 degrees of field
    of view), which this leaves out. The image-shift equivariance of netV (``model.lam_view_shift``) uses it.

    Args:
        view: ``B x 6`` viewpoint ``(rx, ry, rz, tx, ty, tz)``.
        shift: ``B x 2`` the shift ``(du, dv)`` in pixels (``u`` right, ``v`` down, as :func:`pixel_grid`).
        focal: the focal length in pixels (:func:`intrinsics_values`).
        depth: the depth at which the shift is exact (the rotation centre's, where the original
            places the object).

    Returns:
        ``B x 6``.

    Example:
        >>> K = intrinsics(64, 64, fov=10.0)
        >>> view = shift_view(torch.zeros(1, 6), torch.tensor([[3.0, -2.0]]), float(K[0, 0]))
        >>> point = torch.tensor([[[0.0, 0.0, 1.0]]])
        >>> (project(transform_points(point, view), K) - project(point, K)).squeeze().tolist()
        [3.0, -2.0]
    """
    check_shape(view, "B x 6", "a viewpoint (rx, ry, rz, tx, ty, tz)")
    check_shape(shift, "B x 2", "pixel shifts (du, dv)", B=view.shape[0])
    offset = torch.zeros_like(view)
    offset[:, 3:5] = shift.to(view) * (depth / focal)
    return view + offset


def mirror_view(view: torch.Tensor) -> torch.Tensor:
    """The viewpoint of the mirrored image: ``(rx, -ry, -rz, -tx, ty, tz)`` (:data:`VIEW_MIRROR_SIGNS`).

    Args:
        view: ``B x 6`` viewpoint (radians and translations, or netV's normalised units).

    Returns:
        ``B x 6``.

    Example:
        >>> mirror_view(torch.tensor([[1.0, 2, 3, 4, 5, 6]])).tolist()
        [[1.0, -2.0, -3.0, -4.0, 5.0, 6.0]]
    """
    check_shape(view, "B x 6", "a viewpoint (rx, ry, rz, tx, ty, tz)")
    return view * view.new_tensor(VIEW_MIRROR_SIGNS)


def lift_depth(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Lift a depth map to camera-space points ``P = d * K^-1 [u, v, 1]^T``.

    Uses kornia's ``unproject_points`` (z-depth, not ray length).

    Args:
        depth: ``B x H x W`` depth (z) per pixel.
        K: ``3 x 3`` intrinsics.

    Returns:
        ``B x H x W x 3`` camera-space points.

    Example:
        >>> K = intrinsics(3, 3, fov=90.0)  # f = 1 pixel
        >>> lift_depth(torch.full((1, 3, 3), 2.0), K)[0, 1, 2].tolist()  # pixel (u, v) = (2, 1) at depth 2
        [2.0, 0.0, 2.0]
    """
    check_shape(depth, "B x H x W", "depth")
    b, h, w = depth.shape
    grid = pixel_grid(h, w, device=depth.device, dtype=depth.dtype)
    K = K.to(device=depth.device, dtype=depth.dtype)
    pts = unproject_points(grid.view(1, h * w, 2), depth.reshape(b, h * w, 1), K.view(1, 1, 3, 3))
    return pts.view(b, h, w, 3)


def project(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Perspective projection to pixel coordinates.

    Args:
        points: ``... x 3`` camera-space points (z > 0).
        K: ``3 x 3`` intrinsics.

    Returns:
        ``... x 2`` pixel coordinates ``(u, v)``.

    Example:
        >>> project(torch.tensor([[1.0, 0.0, 2.0]]), intrinsics(3, 3, fov=90.0)).tolist()
        [[1.5, 1.0]]
    """
    K = K.to(device=points.device, dtype=points.dtype)
    return project_points(points, K.expand(*points.shape[:-1], 3, 3))


def transform_points(
    points: torch.Tensor, view: torch.Tensor, rot_center_depth: float = 1.0
) -> torch.Tensor:
    """Warp canonical points into the view: ``P' = R (P - c) + c + t``.

    Args:
        points: ``B x N x 3`` (or ``B x H x W x 3``) camera-space points.
        view: ``B x 6`` viewpoint.

    Returns:
        Tensor of the same shape as ``points``.

    Example:
        >>> centre = torch.tensor([[[0.0, 0.0, 1.0]]])  # the rotation centre only moves by the translation
        >>> transform_points(centre, torch.tensor([[0.3, 0.5, 0.0, 0.5, 0.0, 0.0]])).tolist()
        [[[0.5, 0.0, 1.0]]]
    """
    R, t = split_view(view)
    c = points.new_tensor([0.0, 0.0, rot_center_depth])
    return _rotate_about(points, R.transpose(1, 2), pre=-c, post=c + t)


def inverse_transform_points(
    points: torch.Tensor, view: torch.Tensor, rot_center_depth: float = 1.0
) -> torch.Tensor:
    """Inverse warp from the view back to the canonical frame: ``P = R^T (P' - t - c) + c``.

    Args:
        points: ``B x N x 3`` (or ``B x H x W x 3``) camera-space points in the view.
        view: ``B x 6`` viewpoint.

    Returns:
        Tensor of the same shape as ``points``.

    Example:
        >>> view = torch.tensor([[0.1, 0.2, 0.3, 0.05, 0.0, 0.0]])
        >>> points = torch.rand(1, 4, 3) + torch.tensor([0.0, 0.0, 1.0])
        >>> torch.allclose(inverse_transform_points(transform_points(points, view), view), points, atol=1e-6)
        True
    """
    R, t = split_view(view)
    c = points.new_tensor([0.0, 0.0, rot_center_depth])
    return _rotate_about(points, R, pre=-t - c, post=c.expand_as(t))


def reproject_depth(
    depth: torch.Tensor,
    view: torch.Tensor,
    fov: float,
    image_size: tuple[int, int] | None = None,
    rot_center_depth: float = 1.0,
    inverse: bool = False,
) -> torch.Tensor:
    """A depth map's pixels moved by a viewpoint and projected: ``project(transform_points(lift_depth(depth)))``
    (or :func:`inverse_transform_points` with ``inverse=True``), in one fused pass.

    The composition of kornia's lifting and projection with the rigid motion is ~25 small element-wise
    operations on ``B x H x W x 3`` tensors, forward and backward, on the renderer's path of every training
    step; here they are one element-wise function that :func:`unsup3d.fused.fused` compiles (forward and
    backward), equal to it up to float rounding (the operations are ordered differently). :func:`lift_depth`, :func:`project` and
    :func:`transform_points` stay the reference (tests compare the two).

    Args:
        depth: ``B x H x W`` z-depth per pixel.
        view: ``B x 6`` viewpoint ``(rx, ry, rz, tx, ty, tz)``.
        fov: field of view in degrees (:func:`intrinsics` of the depth map's size lifts, of ``image_size``
            projects).
        image_size: ``(H', W')`` of the output pixels (default the depth map's).
        rot_center_depth: the rotation centre's depth.
        inverse: move by the inverse of ``view`` (from the view back to the canonical frame).

    Returns:
        ``B x H x W x 3``: ``(u, v, z)``, each lifted point's pixel coordinates and camera depth after the motion.

    Example:
        >>> K = intrinsics(4, 4, fov=10.0)
        >>> view = torch.tensor([[0.1, 0.3, 0.0, 0.02, 0.0, 0.0]])
        >>> depth = torch.full((1, 4, 4), 1.05)
        >>> ref = transform_points(lift_depth(depth, K), view)
        >>> ref = torch.cat([project(ref, K), ref[..., 2:]], -1)
        >>> torch.allclose(reproject_depth(depth, view, fov=10.0), ref, atol=1e-5)
        True
    """
    check_shape(depth, "B x H x W", "depth")
    check_shape(view, "B x 6", "a viewpoint (rx, ry, rz, tx, ty, tz)", B=depth.shape[0])
    h, w = depth.shape[-2:]
    oh, ow = (h, w) if image_size is None else image_size
    R, t = split_view(view)
    # One compiled function per direction: a Python bool argument is a guard, and each direction's variants
    # (grad mode, thread count, sizes) then stay within torch.compile's 8 recompilations per function (the
    # training step hit that limit with one function, and ran the ninth variant eager).
    kernel = _reproject_inverse if inverse else _reproject_forward
    return fused(kernel)(depth, R.to(depth.dtype), t.to(depth.dtype), *intrinsics_values(h, w, fov),
                         *intrinsics_values(oh, ow, fov), float(rot_center_depth))


def _reproject_forward(depth, R, t, fx, fy, cx, cy, pfx, pfy, pcx, pcy, c: float):
    return _reproject(depth, R, t, fx, fy, cx, cy, pfx, pfy, pcx, pcy, c, False)


def _reproject_inverse(depth, R, t, fx, fy, cx, cy, pfx, pfy, pcx, pcy, c: float):
    return _reproject(depth, R, t, fx, fy, cx, cy, pfx, pfy, pcx, pcy, c, True)


def _reproject(depth, R, t, fx, fy, cx, cy, pfx, pfy, pcx, pcy, c: float, inverse: bool):
    """:func:`reproject_depth`'s arithmetic: element-wise over the ``B x H x W`` pixels (the ``B x 3 x 3``
    rotations and ``B x 3`` translations broadcast per batch element)."""
    b, h, w = depth.shape
    u = torch.arange(w, device=depth.device, dtype=depth.dtype).view(1, 1, w)
    v = torch.arange(h, device=depth.device, dtype=depth.dtype).view(1, h, 1)
    x = (u - cx) / fx * depth
    y = (v - cy) / fy * depth
    r = R.reshape(b, 9, 1, 1).unbind(1)
    tx, ty, tz = t.reshape(b, 3, 1, 1).unbind(1)
    if inverse:  # P = R^T (P' - t - c) + c
        px, py, pz = x - tx, y - ty, depth - tz - c
        xo = r[0] * px + r[3] * py + r[6] * pz
        yo = r[1] * px + r[4] * py + r[7] * pz
        zo = r[2] * px + r[5] * py + r[8] * pz + c
    else:  # P' = R (P - c) + c + t
        pz = depth - c
        xo = r[0] * x + r[1] * y + r[2] * pz + tx
        yo = r[3] * x + r[4] * y + r[5] * pz + ty
        zo = r[6] * x + r[7] * y + r[8] * pz + c + tz
    return torch.stack([pfx * xo / zo + pcx, pfy * yo / zo + pcy, zo], -1)


def _rotate_about(points: torch.Tensor, Rt: torch.Tensor, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    """``(P + pre) @ Rt + post`` for ``B x ... x 3`` points, ``B x 3 x 3`` ``Rt`` (a transposed
    rotation, acting on row vectors) and offsets of shape ``3`` or ``B x 3``."""
    b = points.shape[0]
    flat = points.reshape(b, -1, 3)
    pre, post = pre.expand(b, 3).unsqueeze(1), post.expand(b, 3).unsqueeze(1)
    return torch.baddbmm(post, flat + pre, Rt).view(points.shape)


def normal_cross_products(points: torch.Tensor) -> torch.Tensor:
    """The original's unnormalised normals of the interior of a grid of points, by central differences:
    ``(P[v, u+1] - P[v, u-1]) x (P[v+1, u] - P[v-1, u])``.

    Args:
        points: ``B x H x W x 3``.

    Returns:
        ``B x (H - 2) x (W - 2) x 3`` (the border has no central difference).

    Example:
        >>> plane = lift_depth(torch.ones(1, 4, 4), intrinsics(4, 4, fov=10.0))  # fronto-parallel
        >>> n = normal_cross_products(plane)
        >>> n.shape, bool((n[..., :2] == 0).all() and (n[..., 2] > 0).all())
        (torch.Size([1, 2, 2, 3]), True)
    """
    tu = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
    tv = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    # Written out rather than torch.linalg.cross, which is ~3x slower on these strided views on a CPU
    # (3 ms for 64 x 62 x 62 normals, forward; the same arithmetic).
    (ax, ay, az), (bx, by, bz) = tu.unbind(-1), tv.unbind(-1)
    return torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], -1)


def _unit_normals(points: torch.Tensor, eps: float) -> torch.Tensor:
    """:func:`normals_from_points`' arithmetic: element-wise and shape-static, so :func:`unsup3d.fused.fused`
    compiles it (differences, cross product, normalisation and border in one pass, forward and backward)."""
    n = normal_cross_products(points)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(eps)
    nx, ny, nz = n.unbind(-1)
    border = (1, 1, 1, 1)
    return torch.stack([F.pad(nx, border), F.pad(ny, border), F.pad(nz, border, value=1.0)], -1)


def normals_from_points(points: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Unit normals by central differences of a grid of points, as the original method.

    ``n = (P[v, u+1] - P[v, u-1]) x (P[v+1, u] - P[v-1, u])`` (:func:`normal_cross_products`), normalised; border rows and
    columns are ``(0, 0, 1)``. With y pointing down, a fronto-parallel surface gets the normal
    ``(0, 0, 1)`` (along the viewing direction); this is the original convention, and the light
    direction ``(dx, dy, 1)`` of the model is expressed in the same frame.

    Args:
        points: ``B x H x W x 3``.

    Returns:
        ``B x H x W x 3`` unit normals.

    Example:
        >>> plane = lift_depth(torch.ones(1, 4, 4), intrinsics(4, 4, fov=10.0))
        >>> normals_from_points(plane)[0, 1, 1].abs().tolist()  # facing the camera
        [0.0, 0.0, 1.0]
    """
    # The original divides by (norm + 1e-7); clamping instead keeps normals exactly unit length
    # (the original's are ~3e-3 short at 64 px, fov 10) and still guards degenerate points. The
    # metrics reproduce the original lengths where paper comparability needs it (mad_original).
    size = check_shape(points, "B x H x W x 3", "grid points")
    if size["H"] < 3 or size["W"] < 3:  # no interior: every normal is on the border
        return points.new_tensor([0.0, 0.0, 1.0]).expand(points.shape).clone()
    return fused(_unit_normals)(points, float(eps))


def pixels_to_normalized(uv: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Map pixel coordinates to ``[-1, 1]`` for ``grid_sample(align_corners=True)``.

    Args:
        uv: ``... x 2`` pixel coordinates ``(u, v)``.

    Returns:
        ``... x 2``: ``-1`` and ``1`` are the centres of the border pixels.

    Example:
        >>> pixels_to_normalized(torch.tensor([[0.0, 0.0], [2.0, 1.0]]), 3, 3).tolist()
        [[-1.0, -1.0], [1.0, 0.0]]
    """
    scale = uv.new_tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)])
    return uv * scale - 1.0
