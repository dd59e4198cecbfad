"""Depth-reconstruction metrics of the original method (Wu et al., CVPR 2020): SIDE, MAD, MAE, MSE.

The metrics are evaluated, as in the original release, on the reconstruction's depth *rendered in
the input view* (not the canonical depth) against the ground-truth depth of the same image.

Evaluation mask (per image), as the original code::

    mask = erode(gt < background - tol) * erode(valid)

where ``valid`` is the valid-reconstruction mask (pixels covered by the rendered, warped surface)
and ``erode`` removes one pixel, implemented exactly as the original
``avg_pool2d(mask, 3, stride=1, padding=1) > 0.99`` (zero padding, ``count_include_pad=True``): a
pixel survives only if it and its 8 neighbours are all in the mask, and pixels on the image border
are always removed (their neighbourhood includes the zero padding). Since the border is eroded, the
border normals (fixed to ``(0, 0, 1)`` by the normal operator) never enter MAD.

Per-image metrics over that mask:

* **SIDE** (scale-invariant depth error): ``d = log(pred) - log(gt)``,
  ``SIDE = sqrt(mean((d - mean(d))^2))`` (population variance). The paper reports SIDE in units of
  ``10^-2``: a printed ``0.793`` is a raw SIDE of ``0.00793``. The functions and the metric class
  return *raw* values; multiply by :data:`SIDE_SCALE` (or use :func:`to_paper_units`) to get the
  paper's units.
* **MAD** (mean angle deviation, degrees): mean over the mask of the angle between the normals of
  the predicted and the ground-truth depth, both computed with the project's normal operator
  (:func:`unsup3d.renderer.camera.lift_depth` + :func:`~unsup3d.renderer.camera.normals_from_points`
  with ``K = intrinsics(H, W, fov)``).
* **MAE** / **MSE**: masked mean absolute / squared depth difference, in depth units.

Note on MAD and the original code: the original normalises normals as ``n / (|n| + 1e-7)`` and
takes ``acos`` of the clamped dot product of these *not exactly unit* vectors. At 64 px, a 10 degree
field of view and depth ~1, central-difference cross products have norm ~3e-5, so the "unit" normals
have norm ~0.9968 and identical depth maps already give an angle of ~6.5 degrees; MAD figures
produced by the original code (the paper's, presumably) carry this bias (it is not additive: a true
16 degree error reads ~17.2). This module
therefore reports two variants:

* ``mad``: the exact angle ``atan2(|n1 x n2|, n1 . n2)`` (0 for identical depth, invariant to the
  normal's length, accurate for small angles);
* ``mad_original``: the original's formula, ``acos(clamp(n1 . n2, -1, 1))`` with normals of length
  ``|n| / (|n| + 1e-7)`` (reproduced here from the raw cross products, whatever regularisation the
  project's operator uses). Use this column to compare with the paper table.

Baselines of the paper:

* *constant null depth*: any constant depth map (SIDE and MAD are invariant to a global scale of the
  prediction, so the constant does not matter); see :func:`constant_depth_baseline`.
* *average ground-truth depth*: the mean ground-truth depth map over the training split; see
  :func:`average_depth_map`.

All functions are batch-first, device- and dtype-agnostic. Depth maps are ``B x H x W`` (a
``B x 1 x H x W`` channel dimension is accepted and squeezed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from unsup3d.renderer import (
    fit_plane,
    geometry_precision,
    intrinsics,
    lift_depth,
    normal_cross_products,
    normals_from_points,
)
from unsup3d.shape_check import check_shape

__all__ = [
    "SIDE_SCALE",
    "DepthMetrics",
    "average_depth_map",
    "constant_depth_baseline",
    "erode_mask",
    "evaluation_mask",
    "foreground_mask",
    "mad",
    "masked_mae",
    "masked_mse",
    "normal_angle_map",
    "side",
    "side_untilted",
    "to_paper_units",
]

#: The paper prints SIDE in units of 1e-2: ``paper_value = raw_side * SIDE_SCALE``.
SIDE_SCALE = 100.0

#: Default tolerance below the background depth for a pixel to count as ground-truth foreground.
#: Smaller than one 8-bit quantisation step of the synthetic-face depth range (0.2 / 255).
DEFAULT_BACKGROUND_TOL = 1e-5

#: ``EPS`` of the original release's normal normalisation ``n / (|n| + EPS)``.
_ORIGINAL_NORMAL_EPS = 1e-7


def _as_bhw(x: torch.Tensor, name: str) -> torch.Tensor:
    """Accept ``B x H x W`` or ``B x 1 x H x W``; return ``B x H x W``."""
    check_shape(x, "B x H x W or B x 1 x H x W", name)
    return x[:, 0] if x.ndim == 4 else x


def _as_bool(mask: torch.Tensor) -> torch.Tensor:
    """Binary mask as bool (float masks are thresholded at 0.5)."""
    return mask if mask.dtype == torch.bool else mask > 0.5


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image mean of ``x`` (``B x H x W``) over a bool mask; NaN where the mask is empty."""
    x = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    count = mask.flatten(1).sum(1).to(x.dtype)
    return x.flatten(1).sum(1) / count  # 0 / 0 = NaN for empty masks


def erode_mask(mask: torch.Tensor, iterations: int = 1) -> torch.Tensor:
    """Erode a mask by one pixel per iteration, as the original code.

    Implemented as ``avg_pool2d(mask, 3, stride=1, padding=1) > 0.99`` with zero padding
    (``count_include_pad=True``): for a binary mask a pixel survives only if it and all 8 neighbours
    are in the mask (a 3x3 min-pool), and border pixels of the image are always removed. A soft
    ``[0, 1]`` mask is treated as the original did (the 3x3 average must exceed 0.99).

    Args:
        mask: ``B x H x W`` (or ``B x 1 x H x W``) bool or float mask.
        iterations: number of one-pixel erosions.

    Returns:
        ``B x H x W`` bool mask on the input's device.

    Example:
        >>> erode_mask(torch.ones(1, 4, 4, dtype=torch.bool)).int().tolist()  # the image border goes
        [[[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]]
    """
    m = _as_bhw(mask, "mask")
    m = m.to(torch.float32) if not m.is_floating_point() else m
    m = m.unsqueeze(1)
    out = m
    for _ in range(iterations):
        out = (F.avg_pool2d(out, 3, stride=1, padding=1, count_include_pad=True) > 0.99).to(m.dtype)
    return out[:, 0] > 0.5


def foreground_mask(
    gt_depth: torch.Tensor,
    background_depth: float | None = None,
    tol: float = DEFAULT_BACKGROUND_TOL,
) -> torch.Tensor:
    """Ground-truth foreground: pixels whose depth is below the background depth (not eroded).

    Args:
        gt_depth: ``B x H x W`` ground-truth depth; the background is at ``background_depth``
            (``max_depth`` of the data).
        background_depth: depth of the background. ``None`` uses each image's maximum depth (the
            original used the maximum over the batch, which is the same whenever every image
            contains background).
        tol: a pixel is foreground if ``gt < background_depth - tol``.

    Returns:
        ``B x H x W`` bool mask.

    Example:
        >>> foreground_mask(torch.tensor([[[1.0, 1.15], [1.0, 1.15]]]), background_depth=1.15).tolist()
        [[[True, False], [True, False]]]
    """
    gt = _as_bhw(gt_depth, "gt_depth")
    if background_depth is None:
        bg = gt.flatten(1).amax(1).view(-1, 1, 1)
    else:
        bg = torch.as_tensor(background_depth, dtype=gt.dtype, device=gt.device)
    return gt < bg - tol


def evaluation_mask(
    gt_depth: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
    background_depth: float | None = None,
    tol: float = DEFAULT_BACKGROUND_TOL,
) -> torch.Tensor:
    """The original evaluation mask: ``erode(foreground(gt)) & erode(valid)``.

    Args:
        gt_depth: ``B x H x W`` ground-truth depth.
        valid_mask: ``B x H x W`` bool/float valid-reconstruction mask (e.g. the rendered surface's
            coverage in the input view); ``None`` means everything is valid (only the image border is
            then removed by the erosion).
        background_depth, tol: see :func:`foreground_mask`.

    Returns:
        ``B x H x W`` bool mask.

    Example:
        >>> gt = torch.ones(1, 5, 5)
        >>> gt[0, :, 0] = 1.15  # a background column on the left
        >>> evaluation_mask(gt, background_depth=1.15).int()[0, 2].tolist()  # the border and the column's edge go
        [0, 0, 1, 1, 0]
    """
    mask = erode_mask(foreground_mask(gt_depth, background_depth, tol))
    if valid_mask is not None:
        valid = _as_bhw(valid_mask, "valid_mask").to(mask.device)
        b, h, w = mask.shape
        check_shape(valid, "B x H x W", "valid_mask (the depth's size)", B=b, H=h, W=w)
        mask = mask & erode_mask(valid)
    return mask


@geometry_precision
def side(pred_depth: torch.Tensor, gt_depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale-invariant depth error per image (raw; multiply by :data:`SIDE_SCALE` for the paper).

    ``d = log(pred) - log(gt)`` over the mask, ``SIDE = sqrt(mean((d - mean(d))^2))``.

    Args:
        pred_depth: ``B x H x W`` predicted depth (positive inside the mask).
        gt_depth: ``B x H x W`` ground-truth depth (positive inside the mask).
        mask: ``B x H x W`` bool (or binary float) evaluation mask.

    Returns:
        ``B`` tensor; NaN for images whose mask is empty.

    Example:
        >>> gt, mask = torch.ones(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool)
        >>> side(2 * gt, gt, mask).item() < 1e-6  # a global scale costs nothing
        True
    """
    d, m = _log_error(pred_depth, gt_depth, mask)
    mean = _masked_mean(d, m).view(-1, 1, 1)
    return _masked_mean((d - mean).pow(2), m).sqrt()


def _log_error(pred_depth: torch.Tensor, gt_depth: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log(pred) - log(gt)`` inside the mask (0 outside), and the mask as bool; all ``B x H x W``."""
    pred, gt = _as_bhw(pred_depth, "pred_depth"), _as_bhw(gt_depth, "gt_depth")
    m = _as_bool(_as_bhw(mask, "mask"))
    one = torch.ones((), dtype=pred.dtype, device=pred.device)
    # Values outside the mask (e.g. non-positive depth) must not poison the sums with NaN / inf.
    return torch.where(m, pred, one).log() - torch.where(m, gt.to(pred.dtype), one).log(), m


@geometry_precision
def side_untilted(pred_depth: torch.Tensor, gt_depth: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SIDE with each image's best plane of the log-depth error removed, and that plane's slopes.

    A depth map that is right but turned by a small wrong angle differs from the truth by (nearly) a plane
    in log depth: this splits :func:`side` into the part a right pose would remove (the plane) and the
    shape's own error (what is left). ``side**2 - side_untilted**2`` is the plane's share.

    Args:
        pred_depth, gt_depth, mask: as :func:`side` (``B x H x W``).

    Returns:
        ``(B, B x 2)``: the untilted SIDE (raw units) and the plane's ``x`` and ``y`` slopes of
        ``log(pred) - log(gt)`` per unit of the normalised image coordinates (NaN for empty masks).

    Example:
        >>> y = torch.linspace(-1, 1, 8).view(1, 8, 1).expand(1, 8, 8)
        >>> gt, mask = torch.ones(1, 8, 8), torch.ones(1, 8, 8, dtype=torch.bool)
        >>> s, slopes = side_untilted((0.05 * y).exp(), gt, mask)  # a pure lean: no error left
        >>> round(s.item(), 6), round(slopes[0, 1].item(), 4)
        (0.0, 0.05)
    """
    d, m = _log_error(pred_depth, gt_depth, mask)
    coeffs, plane = fit_plane(d, m.to(d.dtype))
    slopes = coeffs[:, 1:]
    r = d - plane
    mean = _masked_mean(r, m).view(-1, 1, 1)
    empty = m.flatten(1).sum(1) == 0
    slopes = torch.where(empty.unsqueeze(1), torch.full_like(slopes, math.nan), slopes)
    return _masked_mean((r - mean).pow(2), m).sqrt(), slopes


def _original_normal_length(points: torch.Tensor, eps: float = _ORIGINAL_NORMAL_EPS) -> torch.Tensor:
    """Length of the original's normals ``n / (|n| + 1e-7)`` per pixel (``B x H x W x 3`` -> ``B x H x W``).

    ``n`` is the raw central-difference cross product (:func:`unsup3d.renderer.camera.normal_cross_products`);
    the original release's ``get_normal_from_depth`` divides by ``|n| + EPS`` with ``EPS = 1e-7``.
    """
    r = normal_cross_products(points).norm(dim=-1)
    # Border normals are (0, 0, 1) / (1 + eps) in the original.
    length = torch.full(points.shape[:3], 1.0 / (1.0 + eps), dtype=points.dtype, device=points.device)
    length[:, 1:-1, 1:-1] = r / (r + eps)
    return length


@geometry_precision
def normal_angle_map(
    pred_depth: torch.Tensor,
    gt_depth: torch.Tensor,
    fov: float = 10.0,
    match_original: bool = False,
) -> torch.Tensor:
    """Per-pixel angle (degrees) between the normals of two depth maps.

    Normals come from the project's operator: ``normals_from_points(lift_depth(depth, K))`` with
    ``K = intrinsics(H, W, fov)``; border pixels have normal ``(0, 0, 1)`` in both.

    Args:
        pred_depth, gt_depth: ``B x H x W`` depth maps.
        fov: field of view in degrees.
        match_original: ``False``: exact angle ``atan2(|n1 x n2|, n1 . n2)``. ``True``: the original
            code's ``acos(clamp(n1 . n2, -1, 1))`` on its ``1e-7``-regularised normals, which is
            biased upwards (see the module docstring).

    Returns:
        ``B x H x W`` angles in degrees.

    Example:
        >>> flat = torch.ones(1, 4, 4)
        >>> normal_angle_map(1.5 * flat, flat).abs().max().item()  # parallel planes: the same normals
        0.0
    """
    pred, gt = _as_bhw(pred_depth, "pred_depth"), _as_bhw(gt_depth, "gt_depth")
    gt = gt.to(pred.dtype)
    _, h, w = pred.shape
    K = intrinsics(h, w, fov, device=pred.device, dtype=pred.dtype)
    p_pred, p_gt = lift_depth(pred, K), lift_depth(gt, K)
    n_pred, n_gt = normals_from_points(p_pred), normals_from_points(p_gt)
    if match_original:
        # Exactly unit directions, then the original's length r / (r + 1e-7) (r: raw cross-product
        # norm), independent of how the project's operator regularises its normalisation.
        n_pred = F.normalize(n_pred, dim=-1) * _original_normal_length(p_pred).unsqueeze(-1)
        n_gt = F.normalize(n_gt, dim=-1) * _original_normal_length(p_gt).unsqueeze(-1)
        angle = (n_pred * n_gt).sum(-1).clamp(-1.0, 1.0).acos()
    else:
        dot = (n_pred * n_gt).sum(-1)
        cross = torch.linalg.cross(n_pred, n_gt, dim=-1).norm(dim=-1)
        angle = torch.atan2(cross, dot)
    return angle * (180.0 / math.pi)


@geometry_precision
def mad(
    pred_depth: torch.Tensor,
    gt_depth: torch.Tensor,
    mask: torch.Tensor,
    fov: float = 10.0,
    match_original: bool = False,
) -> torch.Tensor:
    """Mean angle deviation (degrees) of normals per image over the mask.

    Args:
        pred_depth, gt_depth: ``B x H x W`` depth maps.
        mask: ``B x H x W`` bool (or binary float) evaluation mask.
        fov: field of view in degrees (the camera of the data; 10 in the original).
        match_original: reproduce the original's biased formula (see :func:`normal_angle_map`).

    Returns:
        ``B`` tensor; NaN for images whose mask is empty.

    Example:
        >>> gt, mask = torch.ones(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool)
        >>> mad(1.5 * gt, gt, mask).tolist()
        [0.0]
    """
    angles = normal_angle_map(pred_depth, gt_depth, fov=fov, match_original=match_original)
    m = _as_bool(_as_bhw(mask, "mask")).to(angles.device)
    # NaN angles (e.g. from degenerate depth) outside the mask are zeroed by the masked mean.
    return _masked_mean(angles, m)


@geometry_precision
def masked_mae(pred_depth: torch.Tensor, gt_depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean absolute depth error per image (depth units). ``B x H x W`` inputs -> ``B``.

    Example:
        >>> gt, mask = torch.ones(1, 2, 2), torch.tensor([[[True, False], [False, False]]])
        >>> masked_mae(gt + 0.25, gt, mask).tolist()
        [0.25]
    """
    pred, gt = _as_bhw(pred_depth, "pred_depth"), _as_bhw(gt_depth, "gt_depth")
    return _masked_mean((pred - gt.to(pred.dtype)).abs(), _as_bool(_as_bhw(mask, "mask")))


@geometry_precision
def masked_mse(pred_depth: torch.Tensor, gt_depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean squared depth error per image (depth units^2). ``B x H x W`` inputs -> ``B``.

    Example:
        >>> gt, mask = torch.ones(1, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool)
        >>> masked_mse(gt + 0.25, gt, mask).tolist()
        [0.0625]
    """
    pred, gt = _as_bhw(pred_depth, "pred_depth"), _as_bhw(gt_depth, "gt_depth")
    return _masked_mean((pred - gt.to(pred.dtype)).pow(2), _as_bool(_as_bhw(mask, "mask")))


def average_depth_map(depth_iter: Iterable[torch.Tensor]) -> torch.Tensor:
    """Mean ground-truth depth map over a split (the "average ground-truth depth" baseline).

    Args:
        depth_iter: iterable of ``B x H x W`` (or ``B x 1 x H x W``, or single ``H x W``) depth
            batches, e.g. the ground-truth depths of the training split. Accumulated in float64.

    Returns:
        ``H x W`` mean depth, in the dtype and on the device of the first batch. Predict it for every
        test image (``avg.expand(B, H, W)``) and evaluate with the metrics as usual.

    Example:
        >>> average_depth_map([torch.ones(1, 2, 2), 3 * torch.ones(1, 2, 2)]).tolist()
        [[2.0, 2.0], [2.0, 2.0]]
    """
    total: torch.Tensor | None = None
    count = 0
    dtype = device = None
    for depth in depth_iter:
        d = depth.unsqueeze(0) if depth.ndim == 2 else _as_bhw(depth, "depth")
        if total is None:
            dtype, device = d.dtype, d.device
            total = torch.zeros(d.shape[1:], dtype=torch.float64, device=device)
        elif d.shape[1:] != total.shape:
            raise ValueError(f"depth size {tuple(d.shape[1:])} differs from {tuple(total.shape)}")
        total += d.to(device=device, dtype=torch.float64).sum(0)
        count += d.shape[0]
    if total is None or count == 0:
        raise ValueError("average_depth_map needs at least one depth map")
    return (total / count).to(dtype)


def constant_depth_baseline(gt_depth: torch.Tensor, value: float = 1.0) -> torch.Tensor:
    """The "constant null depth" baseline: a constant depth map shaped like ``gt_depth``.

    The constant is irrelevant for SIDE and MAD (both are invariant to a global depth scale); it only
    changes MAE / MSE.

    Example:
        >>> constant_depth_baseline(torch.rand(2, 4, 4)).unique().tolist()
        [1.0]
    """
    return torch.full_like(_as_bhw(gt_depth, "gt_depth"), value)


def to_paper_units(results: Mapping[str, torch.Tensor | float]) -> dict[str, torch.Tensor | float]:
    """Copy of a :meth:`DepthMetrics.compute` / :meth:`DepthMetrics.per_image` dict with SIDE
    entries (``side``, ``side_std``) multiplied by :data:`SIDE_SCALE`, i.e. in the paper's 1e-2 units.

    Example:
        >>> to_paper_units({"side": 0.01, "mad": 16.5})
        {'side': 1.0, 'mad': 16.5}
    """
    return {k: (v * SIDE_SCALE if k in ("side", "side_std") else v) for k, v in results.items()}


class DepthMetrics(Metric):
    """SIDE, MAD (exact and original-compatible), MAE and MSE accumulated over a test set.

    Per-image values are kept in ``cat``-reduced list states, so under DDP every rank's images are
    gathered before :meth:`compute` (and :meth:`per_image`, which must then be called on all ranks).

    Args:
        fov: field of view in degrees of the camera used to lift depth to points (10 in the
            original).
        background_depth: ground-truth background depth (``max_depth`` of the data); ``None`` uses
            each image's maximum ground-truth depth.
        background_tol: a ground-truth pixel is foreground if ``gt < background_depth - tol``.

    ``update(pred_depth, gt_depth, valid_mask=None)``: ``B x H x W`` tensors (the reconstruction's
    depth in the input view, ground truth, and the valid-reconstruction mask). Images whose
    evaluation mask is empty get NaN values, are excluded from the means and counted in
    ``num_empty``.

    ``compute()`` returns a dict of 0-d tensors: ``side``, ``mad``, ``mad_original``, ``mae``,
    ``mse`` (means over non-empty images), the same keys with ``_std`` (unbiased std, as the original
    ``torch.std``), ``num_images`` (all images, empty ones included) and ``num_empty``. SIDE is raw; see :func:`to_paper_units`.

    Example:
        >>> metric = DepthMetrics(fov=10.0, background_depth=1.15)
        >>> gt = torch.ones(2, 8, 8)
        >>> metric.update(1.5 * gt, gt)  # a constant scale: no error
        >>> values = metric.compute()
        >>> values["side"].item() < 1e-6, values["mad"].item(), int(values["num_images"])
        (True, 0.0, 2)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    _KEYS = ("side", "mad", "mad_original", "mae", "mse")

    def __init__(
        self,
        fov: float = 10.0,
        background_depth: float | None = None,
        background_tol: float = DEFAULT_BACKGROUND_TOL,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.fov = float(fov)
        self.background_depth = background_depth
        self.background_tol = float(background_tol)
        for key in self._KEYS:
            self.add_state(key, default=[], dist_reduce_fx="cat")
        self.add_state("num_pixels", default=[], dist_reduce_fx="cat")

    @geometry_precision
    def update(
        self,
        pred_depth: torch.Tensor,
        gt_depth: torch.Tensor,
        valid_mask: torch.Tensor | None = None,
    ) -> None:
        pred = _as_bhw(pred_depth, "pred_depth").detach()
        gt = _as_bhw(gt_depth, "gt_depth").detach().to(device=pred.device, dtype=pred.dtype)
        b, h, w = pred.shape
        check_shape(gt, "B x H x W", "gt_depth (pred_depth's size)", B=b, H=h, W=w)
        if valid_mask is not None:
            valid_mask = valid_mask.detach().to(pred.device)
        mask = evaluation_mask(gt, valid_mask, self.background_depth, self.background_tol)
        self.side.append(side(pred, gt, mask))
        self.mad.append(mad(pred, gt, mask, fov=self.fov))
        self.mad_original.append(mad(pred, gt, mask, fov=self.fov, match_original=True))
        self.mae.append(masked_mae(pred, gt, mask))
        self.mse.append(masked_mse(pred, gt, mask))
        self.num_pixels.append(mask.flatten(1).sum(1))

    def _gathered(self) -> dict[str, torch.Tensor]:
        out = {}
        for key in (*self._KEYS, "num_pixels"):
            state = getattr(self, key)
            if isinstance(state, list) and not state:
                out[key] = torch.zeros(0, device=self.device)
            else:
                out[key] = dim_zero_cat(state)
        return out

    def per_image(self) -> dict[str, torch.Tensor]:
        """Per-image values (``N``-long 1-D tensors, NaN for empty masks) gathered over ranks.

        Keys: ``side`` (raw), ``mad``, ``mad_original``, ``mae``, ``mse``, ``num_pixels`` (size of each
        image's evaluation mask). Under DDP this is a collective: call it on every rank. Gathered as
        :meth:`compute` gathers (``sync_on_compute``), through torchmetrics' public ``sync_context``, and
        given back to the rank's own states afterwards.
        """
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            return {k: v.clone() for k, v in self._gathered().items()}

    def compute(self) -> dict[str, torch.Tensor]:
        values = self._gathered()
        keep = values["num_pixels"] > 0
        out: dict[str, torch.Tensor] = {}
        for key in self._KEYS:
            v = values[key][keep]
            out[key] = v.mean()
            out[f"{key}_std"] = v.std() if v.numel() > 1 else v.new_tensor(float("nan"))
        out["num_images"] = torch.tensor(int(keep.numel()), device=keep.device)
        out["num_empty"] = (~keep).sum()
        return out
