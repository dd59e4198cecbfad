"""Losses of Wu, Rupprecht and Vedaldi (CVPR 2020): confidence-weighted L1 and perceptual losses.

Both reconstruction losses are negative log-likelihoods with a per-pixel scale ``sigma`` predicted
by the confidence network (up to constants):

* photometric (Laplacian): ``sqrt(2) |x - y| / sigma + log sigma``;
* perceptual (Gaussian, on VGG16 relu3_3 features): ``(f(x) - f(y))^2 / (2 sigma^2) + log sigma``.

Without ``sigma`` they reduce to the plain mean absolute / squared error. A ``mask`` turns the
mean into a mask-weighted mean; an all-zero mask gives ``0`` (still attached to the graph)
instead of ``NaN``.

:func:`depth_smoothness_loss` is the extra smoothness prior used for the synthetic-car
experiments.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The viewpoint's mirror and the ellipsoid depth are camera geometry (unsup3d.renderer.camera); they are
# still importable from here, where they were defined before.
from unsup3d.fused import fused
from unsup3d.renderer import VIEW_MIRROR_SIGNS, depth_tilt, ellipsoid_depth, mirror_view
from unsup3d.shape_check import check_shape
from unsup3d.vgg import VGG16Features, load_vgg16_features

__all__ = [
    "EPS", "STRUCTURAL_LOSSES", "VIEW_MIRROR_SIGNS", "PerceptualLoss", "depth_smoothness_loss", "ellipsoid_depth",
    "laplacian_nll", "masked_mean", "mirror_view", "photometric_loss", "structural_error", "structural_loss",
    "view_equivariance_loss", "view_consistency_loss", "view_mean_prior", "unbiased_squared_mean", "canonical_tilt_prior", "canonical_aspect_prior",
    "perturb_rotation", "view_cycle_loss",
]

EPS = 1e-7

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def masked_mean(loss: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``loss``, weighted by ``mask`` if given.

    Args:
        loss: ``B x C x H x W`` per-element loss.
        mask: ``B x 1 x H x W`` (same number of dimensions as ``loss``, expandable to it)
            non-negative weights.

    Returns:
        Scalar ``sum(loss * mask) / sum(mask)`` (mask expanded to ``loss``'s shape, so channels
        count), or ``loss.mean()`` without a mask. An all-zero mask returns ``0``, connected to
        the graph (the denominator is clamped at ``EPS``; sums of real masks are pixel counts).

    Example:
        >>> loss = torch.tensor([[[[1.0, 3.0]]]])  # B x C x H x W
        >>> masked_mean(loss, torch.tensor([[[[1.0, 0.0]]]])).item()  # only the first pixel counts
        1.0
    """
    if mask is None:
        return loss.mean()
    _check_mask(mask, loss)
    mask = mask.to(loss.dtype).expand_as(loss)
    return (loss * mask).sum() / mask.sum().clamp_min(EPS)


def _check_mask(mask: Tensor | None, loss: Tensor) -> None:
    if mask is not None and mask.dim() != loss.dim():
        raise ValueError(
            f"mask must have as many dimensions as the loss {tuple(loss.shape)} (e.g. B x 1 x H x W); "
            f"got {tuple(mask.shape)}"
        )


def _check_sigma(conf_sigma: Tensor, loss: Tensor, name: str) -> None:
    b, _, h, w = loss.shape
    if conf_sigma.dim() != 4 or conf_sigma.shape[0] != b or conf_sigma.shape[-2:] != (h, w):
        raise ValueError(
            f"{name}: conf_sigma must be B x 1 x {h} x {w} (B = {b}) to match the loss; "
            f"got {tuple(conf_sigma.shape)}"
        )


def photometric_loss(
    im1: Tensor, im2: Tensor, mask: Tensor | None = None, conf_sigma: Tensor | None = None
) -> Tensor:
    """Confidence-weighted L1 (Laplacian negative log-likelihood) between two images.

    ``l = |im1 - im2|``; with ``sigma``: ``l = sqrt(2) l / (sigma + EPS) + log(sigma + EPS)``;
    then the (mask-weighted) mean over all elements.

    Args:
        im1, im2: ``B x C x H x W`` images.
        mask: optional ``B x 1 x H x W`` weights (e.g. the valid-reconstruction mask).
        conf_sigma: optional ``B x 1 x H x W`` positive scale (confidence map).

    Returns:
        Scalar loss.

    Example:
        >>> im = torch.zeros(1, 3, 4, 4)
        >>> photometric_loss(im + 0.5, im).item()
        0.5
    """
    if im1.shape != im2.shape or im1.dim() != 4:
        raise ValueError(
            f"photometric_loss expects two B x C x H x W images of the same shape; got "
            f"{tuple(im1.shape)} and {tuple(im2.shape)}"
        )
    if conf_sigma is not None:
        _check_sigma(conf_sigma, im1, "photometric_loss")
    _check_mask(mask, im1)
    # One element-wise pass with its reduction (forward and backward) when compiled: ~20 passes over the
    # images op by op, twice per training step.
    return fused(_photometric_nll)(im1, im2, mask, conf_sigma)


def _photometric_nll(im1: Tensor, im2: Tensor, mask: Tensor | None, conf_sigma: Tensor | None) -> Tensor:
    loss = (im1 - im2).abs()
    if conf_sigma is not None:
        loss = laplacian_nll(loss, conf_sigma)
    return masked_mean(loss, mask)


def laplacian_nll(err: Tensor, conf_sigma: Tensor) -> Tensor:
    """Per-element Laplacian negative log-likelihood of an absolute error under a predicted scale.

    ``sqrt(2) err / (sigma + EPS) + log(sigma + EPS)`` (up to a constant): the confidence weighting of the
    photometric and structural losses (the original's ``conf_sigma``).

    Args:
        err: ``B x C x H x W`` non-negative error.
        conf_sigma: ``B x 1 x H x W`` positive scale (broadcast over channels).

    Returns:
        ``B x C x H x W`` negative log-likelihood.

    Example:
        >>> laplacian_nll(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)).abs().item() < 1e-6  # log 1
        True
    """
    return err * 2**0.5 / (conf_sigma + EPS) + (conf_sigma + EPS).log()


#: Kinds of :func:`structural_error`.
STRUCTURAL_LOSSES = ("gradient", "ssim")
#: SSIM window (taps) of the ``"ssim"`` structural error.
SSIM_WINDOW = 7


def _erode(mask: Tensor, radius: int) -> Tensor:
    """``B x 1 x H x W`` mask that is 1 only where the whole ``(2 radius + 1)^2`` neighbourhood is 1."""
    if radius <= 0:
        return mask
    return -F.max_pool2d(-mask, 2 * radius + 1, stride=1, padding=radius)


def structural_error(im1: Tensor, im2: Tensor, kind: str = "gradient") -> tuple[Tensor, int]:
    """Per-pixel structural difference of two images, blind to smooth colour shifts.

    * ``"gradient"``: ``mean_c |dx im1 - dx im2| + |dy im1 - dy im2|`` with forward differences: a
      constant offset or a linear ramp shifted by a few pixels (a smooth background that does not move
      with the object) costs nothing, an edge in the wrong place costs its contrast;
    * ``"ssim"``: ``(1 - SSIM) / 2`` (kornia's SSIM, Gaussian window of :data:`SSIM_WINDOW` taps, images
      mapped to ``[0, 1]``), averaged over the channels; its luminance term still sees colour offsets, most
      in dark regions.

    Args:
        im1, im2: ``B x C x H x W`` images in ``[-1, 1]``.
        kind: one of :data:`STRUCTURAL_LOSSES`.

    Returns:
        ``(error, radius)``: ``B x 1 x H x W`` error and the radius of the neighbourhood each pixel's error
        depends on (erode a validity mask by it).

    Example:
        >>> ramp = torch.linspace(-1, 1, 16).expand(1, 3, 16, 16)
        >>> err, _ = structural_error(ramp, ramp + 0.3)  # a colour offset: no structural error
        >>> float(err.abs().max()) < 1e-6
        True
    """
    if im1.shape != im2.shape or im1.dim() != 4:
        raise ValueError(f"structural_error expects two B x C x H x W images of the same shape; got "
                         f"{tuple(im1.shape)} and {tuple(im2.shape)}")
    if kind == "gradient":
        d = im1 - im2
        dx = F.pad((d[..., :, 1:] - d[..., :, :-1]).abs(), (0, 1, 0, 0))
        dy = F.pad((d[..., 1:, :] - d[..., :-1, :]).abs(), (0, 0, 0, 1))
        return (dx + dy).mean(1, keepdim=True), 1
    if kind == "ssim":
        from kornia.metrics import ssim

        sim = ssim(im1 / 2 + 0.5, im2 / 2 + 0.5, SSIM_WINDOW, max_val=1.0)
        return ((1 - sim) / 2).mean(1, keepdim=True), SSIM_WINDOW // 2
    raise ValueError(f"structural loss kind must be one of {STRUCTURAL_LOSSES}, got {kind!r}")


def structural_loss(im1: Tensor, im2: Tensor, mask: Tensor | None = None, conf_sigma: Tensor | None = None,
                    kind: str = "gradient") -> Tensor:
    """Confidence-weighted structural loss (Laplacian negative log-likelihood of :func:`structural_error`).

    The error map is computed at full resolution; where ``mask`` is given it counts only at pixels whose
    whole neighbourhood is valid (the mask eroded by the error's radius). With ``conf_sigma`` at a lower
    resolution (the quarter-resolution confidence map of the original's perceptual loss), error and mask
    are average-pooled to it and ``l = sqrt(2) e / (sigma + EPS) + log(sigma + EPS)``, as the perceptual
    loss uses that map; then the (mask-weighted) mean.

    Args:
        im1, im2: ``B x 3 x H x W`` images in ``[-1, 1]``.
        mask: optional ``B x 1 x H x W`` validity.
        conf_sigma: optional ``B x 1 x H/k x W/k`` positive scale (``k`` dividing ``H`` and ``W``).
        kind: one of :data:`STRUCTURAL_LOSSES`.

    Returns:
        Scalar loss.

    Example:
        >>> ramp = torch.linspace(-1, 1, 16).expand(1, 3, 16, 16)
        >>> structural_loss(ramp, ramp + 0.3).item() < 1e-6  # a colour offset costs nothing
        True
    """
    err, radius = structural_error(im1, im2, kind)
    if mask is not None:
        mask = _erode(mask.to(err.dtype), radius)
    if conf_sigma is not None:
        if conf_sigma.dim() != 4 or conf_sigma.shape[0] != err.shape[0]:
            raise ValueError(f"structural_loss: conf_sigma must be B x 1 x h x w; got {tuple(conf_sigma.shape)}")
        k = err.shape[-1] // conf_sigma.shape[-1]
        if k < 1 or err.shape[-1] % conf_sigma.shape[-1] or err.shape[-2] != conf_sigma.shape[-2] * k:
            raise ValueError(f"structural_loss: conf_sigma {tuple(conf_sigma.shape)} must divide the image "
                             f"{tuple(err.shape)}")
        if k > 1:
            if mask is not None:
                weighted = F.avg_pool2d(err * mask, k)
                mask = F.avg_pool2d(mask, k)
                err = weighted / mask.clamp_min(EPS)
            else:
                err = F.avg_pool2d(err, k)
        err = laplacian_nll(err, conf_sigma)
    return masked_mean(err, mask)


class PerceptualLoss(nn.Module):
    """Confidence-weighted perceptual loss on VGG16 relu3_3 features.

    ``f = vgg(normalize(im))`` (``B x 256 x H/4 x W/4``); ``l = (f1 - f2)^2``; with ``sigma``:
    ``l = l / (2 sigma^2 + EPS) + log(sigma + EPS)``; then the mean, weighted by the mask
    average-pooled to the feature resolution if a mask is given.

    The VGG network is frozen (no parameter requires grad; always in eval mode) and is kept
    out of ``state_dict()``: a model that holds this loss saves no VGG weights in its
    checkpoints, and loading such a checkpoint (even with ``strict=True``) keeps the VGG
    weights already loaded here. The ImageNet normalisation constants are non-persistent buffers.

    Args:
        vgg: features to use; if ``None``, :func:`~unsup3d.vgg.load_vgg16_features` is
            called with ``weights_path`` and ``allow_random``.
        weights_path: passed to :func:`~unsup3d.vgg.load_vgg16_features`.
        allow_random: passed to :func:`~unsup3d.vgg.load_vgg16_features`.

    Example:
        >>> loss = PerceptualLoss(vgg=VGG16Features())  # random weights: an example of the call only
        >>> im = torch.rand(2, 3, 16, 16) * 2 - 1
        >>> loss(im, im).item() < 1e-8
        True
    """

    mean_rgb: Tensor
    std_rgb: Tensor

    def __init__(
        self,
        vgg: VGG16Features | None = None,
        weights_path: str | os.PathLike[str] | None = None,
        allow_random: bool = False,
    ) -> None:
        super().__init__()
        self.vgg = vgg if vgg is not None else load_vgg16_features(weights_path, allow_random=allow_random)
        self.vgg.requires_grad_(False)
        self.vgg.eval()
        self.register_buffer("mean_rgb", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std_rgb", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_state_dict_post_hook(_drop_vgg_from_state_dict)
        self.register_load_state_dict_pre_hook(_fill_vgg_in_state_dict)

    def normalize(self, x: Tensor) -> Tensor:
        """``B x 3 x H x W`` in ``[-1, 1]`` -> ImageNet-normalised ``B x 3 x H x W``."""
        x = x / 2 + 0.5
        return (x - self.mean_rgb) / self.std_rgb

    def forward(
        self, im1: Tensor, im2: Tensor, mask: Tensor | None = None, conf_sigma: Tensor | None = None
    ) -> Tensor:
        """Scalar perceptual loss between two image batches.

        Args:
            im1, im2: ``B x 3 x H x W`` images in ``[-1, 1]`` (``H``, ``W`` multiples of 4).
            mask: optional ``B x 1 x H x W`` weights, average-pooled to ``H/4 x W/4``.
            conf_sigma: optional ``B x 1 x H/4 x W/4`` positive scale.

        Returns:
            Scalar loss.
        """
        if im1.shape != im2.shape or im1.dim() != 4 or im1.size(1) != 3:
            raise ValueError(
                f"PerceptualLoss expects two B x 3 x H x W images of the same shape; got "
                f"{tuple(im1.shape)} and {tuple(im2.shape)}"
            )
        im = torch.cat([im1, im2], dim=0)
        feats = self.vgg(self.normalize(im))
        f1, f2 = feats.chunk(2, dim=0)
        loss = (f1 - f2) ** 2
        if conf_sigma is not None:
            _check_sigma(conf_sigma, loss, "PerceptualLoss")
            loss = loss / (2 * conf_sigma**2 + EPS) + (conf_sigma + EPS).log()
        if mask is not None:
            _, _, h, w = loss.shape
            hm, wm = mask.shape[-2:]
            sh, sw = hm // h, wm // w
            if sh < 1 or sw < 1:
                raise ValueError(
                    f"PerceptualLoss: mask {tuple(mask.shape)} is smaller than features {h} x {w}"
                )
            mask = F.avg_pool2d(mask.to(loss.dtype), kernel_size=(sh, sw), stride=(sh, sw))
        return masked_mean(loss, mask)


def _drop_vgg_from_state_dict(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any]
) -> None:
    """State-dict post hook: remove ``<prefix>vgg.*`` so checkpoints carry no VGG weights."""
    del module, local_metadata
    for key in [k for k in state_dict if k.startswith(prefix + "vgg.")]:
        del state_dict[key]


def _fill_vgg_in_state_dict(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: dict[str, Any],
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """Load pre hook: supply the current VGG weights for keys absent from ``state_dict``."""
    del local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    vgg = getattr(module, "vgg", None)
    if vgg is None:
        return
    for name, tensor in vgg.state_dict().items():
        state_dict.setdefault(prefix + "vgg." + name, tensor)


def depth_smoothness_loss(depth: Tensor, mask: Tensor | None = None) -> Tensor:
    """Total-variation (L1 first-difference) smoothness of a depth map.

    ``mean |d[:, i, j+1] - d[:, i, j]| + mean |d[:, i+1, j] - d[:, i, j]|``: the mean absolute
    horizontal difference plus the mean absolute vertical difference. With a mask, a difference
    counts only where both of its pixels are in the mask (weights multiplied), and each direction
    is a mask-weighted mean (0 if nothing is masked in).

    Args:
        depth: ``B x H x W`` or ``B x 1 x H x W`` depth.
        mask: optional weights of the same shape as ``depth``.

    Returns:
        Scalar loss.

    Example:
        >>> depth_smoothness_loss(torch.arange(4.0).expand(1, 4, 4)).item()  # a ramp along x: 1 per pixel
        1.0
    """
    if depth.dim() == 4 and depth.size(1) == 1:
        depth = depth[:, 0]
    if depth.dim() != 3:
        raise ValueError(
            f"depth_smoothness_loss expects B x H x W (or B x 1 x H x W); got {tuple(depth.shape)}"
        )
    dx = (depth[:, :, 1:] - depth[:, :, :-1]).abs()
    dy = (depth[:, 1:, :] - depth[:, :-1, :]).abs()
    if mask is None:
        return dx.mean() + dy.mean()
    if mask.dim() == 4 and mask.size(1) == 1:
        mask = mask[:, 0]
    if mask.shape != depth.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must match depth {tuple(depth.shape)}")
    mask = mask.to(depth.dtype)
    mx = mask[:, :, 1:] * mask[:, :, :-1]
    my = mask[:, 1:, :] * mask[:, :-1, :]
    return masked_mean(dx, mx) + masked_mean(dy, my)


def view_equivariance_loss(view: Tensor, view_of_mirrored: Tensor) -> Tensor:
    """Flip equivariance of the viewpoint network: the view predicted for the mirrored image must be
    the mirrored view.

    ``mean_b sum_k (v'[b, k] - s_k v[b, k])^2`` with ``v`` the view of each image, ``v'`` that of its
    left-right mirror and ``s = (1, -1, -1, -1, 1, 1)`` (:func:`mirror_view`). It constrains each image's
    prediction against its mirror, not the spread of views across images: a constant offset in yaw,
    roll or x shift violates it (a frontal face and its mirror must get opposite yaws), while any spread
    of true poses satisfies it. It leaves the canonical pitch and y shift free (they do not change
    under mirroring).

    Args:
        view, view_of_mirrored: ``B x 6`` in the same units (netV's normalised ``[-1, 1]`` output).

    Returns:
        Scalar.

    Example:
        >>> view = torch.tensor([[0.1, 0.2, 0.0, 0.0, 0.0, 0.0]])
        >>> view_equivariance_loss(view, mirror_view(view)).item()  # the mirror's view is the mirrored view
        0.0
    """
    return view_consistency_loss(view_of_mirrored, mirror_view(view))  # (checks both are B x 6)


def view_consistency_loss(predicted: Tensor, expected: Tensor) -> Tensor:
    """How far netV's view of a transformed image is from the view the transform implies:
    ``mean_b sum_k (predicted[b, k] - expected[b, k])^2`` (the flip equivariance, :func:`view_equivariance_loss`,
    and the image-shift equivariance, :func:`~unsup3d.renderer.shift_view`). Gradients reach both sides.

    Args:
        predicted, expected: ``B x 6`` in the same units (netV's normalised ``[-1, 1]`` output).

    Returns:
        Scalar.

    Example:
        >>> round(view_consistency_loss(torch.tensor([[0.1, 0.2, 0, 0, 0, 0]]),
        ...                             torch.tensor([[0.1, 0.0, 0, 0, 0, 0]])).item(), 6)
        0.04
    """
    if predicted.shape != expected.shape or predicted.ndim != 2 or predicted.shape[-1] != 6:
        raise ValueError(f"view_consistency_loss expects two B x 6 viewpoints of the same shape; got "
                         f"{tuple(predicted.shape)} and {tuple(expected.shape)}")
    return (predicted - expected).pow(2).sum(-1).mean()


def perturb_rotation(view: Tensor, max_delta: Tensor, limit: float, generator: torch.Generator | None = None) -> Tensor:
    """The rotation of ``view`` turned by a random amount: ``(rx, ry, rz)`` plus independent uniform draws in
    ``[-max_delta, max_delta]``, clamped to ``[-limit, limit]`` (the view cycle's turns, :func:`view_cycle_loss`;
    :func:`~unsup3d.renderer.turn_about` makes the view).

    Args:
        view: ``B x 6`` (rotations in radians, then translations).
        max_delta: ``3``, the largest change of pitch, yaw and roll in radians.
        limit: the largest rotation the result may have, in radians.
        generator: random generator (default torch's global one); the draws are made on its device.

    Returns:
        ``B x 3`` on ``view``'s device and dtype.

    Example:
        >>> r = perturb_rotation(torch.zeros(4, 6), torch.tensor([0.0, 0.5, 0.0]), limit=0.3)
        >>> bool((r[:, 1].abs() <= 0.3).all()), r[:, [0, 2]].abs().max().item()
        (True, 0.0)
    """
    if view.dim() != 2 or view.shape[1] != 6:
        raise ValueError(f"perturb_rotation expects B x 6 viewpoints; got {tuple(view.shape)}")
    device = view.device if generator is None else generator.device
    u = torch.rand(view.shape[0], 3, generator=generator, device=device, dtype=view.dtype).to(view.device)
    return (view[:, :3] + (2 * u - 1) * max_delta.to(view)).clamp(-limit, limit)


def view_cycle_loss(predicted: Tensor, target: Tensor, active: Tensor) -> Tensor:
    """The view cycle: netV's view of the model's own 3D face rendered from a known view, against that view.
    Mean over the batch of the summed absolute differences of the ``active`` components, in netV's
    normalised units.

    Args:
        predicted: ``B x 6`` netV's output for the rendered images (normalised, ``[-1, 1]``).
        target: ``B x 6`` the views they were rendered from, normalised the same way.
        active: ``6`` booleans, the components netV predicts (a component of range 0, ``tz`` for faces, is not).

    Returns:
        Scalar.

    Example:
        >>> target = torch.tensor([[0.0, 0.5, 0.0, 0.1, 0.0, 0.0]])
        >>> active = torch.tensor([True] * 5 + [False])
        >>> view_cycle_loss(torch.tensor([[0.0, 0.25, 0.0, 0.1, 0.0, 0.9]]), target, active).item()
        0.25
    """
    if predicted.shape != target.shape or predicted.dim() != 2 or predicted.shape[1] != 6:
        raise ValueError(f"view_cycle_loss expects two B x 6 viewpoints of the same shape; got "
                         f"{tuple(predicted.shape)} and {tuple(target.shape)}")
    return ((predicted - target).abs() * active.to(predicted)).sum(-1).mean()


def view_mean_prior(view: Tensor, components: tuple[int, ...] = (0, 4)) -> Tensor:
    """Unbiased prior that the batch-mean view is 0 in the chosen components (default pitch and y
    shift, the gauge that symmetry leaves free).

    ``sum_k mean_{b in A}(v[b, k]) * mean_{b in B}(v[b, k])`` over the two halves ``A``, ``B`` of the
    batch: its expectation is ``sum_k mu_k^2`` exactly (the squared mean of the population), and its
    gradient moves every image of a half by the same amount, the other half's mean: unlike the squared
    mean of the whole batch (expectation ``mu^2 + var / B``), it puts no penalty on the spread of the
    views across images. It can be negative for a single batch.

    Args:
        view: ``B x 6`` (netV's normalised units), ``B >= 2``.
        components: indices to centre.

    Returns:
        Scalar.

    Example:
        >>> views = torch.tensor([[0.5, 0, 0, 0, 0.5, 0], [-0.5, 0, 0, 0, -0.5, 0]])
        >>> view_mean_prior(views).item()  # the half-batch means 0.5 and -0.5: negative for this batch
        -0.5
    """
    if view.dim() != 2 or view.shape[0] < 2:
        raise ValueError(f"view_mean_prior expects B x 6 viewpoints with B >= 2; got {tuple(view.shape)}")
    return unbiased_squared_mean(view[:, list(components)])


def unbiased_squared_mean(values: Tensor) -> Tensor:
    """An unbiased estimate of the squared population mean of each column of ``values``, summed over columns:
    ``sum_k mean_{b in A}(v[b, k]) * mean_{b in B}(v[b, k])`` over the two halves ``A``, ``B`` of the batch
    (the gauge priors' penalty: :func:`view_mean_prior`, :func:`canonical_tilt_prior`). Its gradient moves
    every sample of a half by the other half's mean, so the spread across samples is not penalised.

    Args:
        values: ``B x K``, ``B >= 2``.

    Returns:
        Scalar (it can be negative for a single batch).

    Example:
        >>> unbiased_squared_mean(torch.tensor([[1.0], [3.0]])).item()
        3.0
    """
    if values.dim() != 2 or values.shape[0] < 2:
        raise ValueError(f"unbiased_squared_mean expects B x K values with B >= 2; got {tuple(values.shape)}")
    half = values.shape[0] // 2
    return (values[:half].mean(0) * values[half:].mean(0)).sum()


def canonical_aspect_prior(alpha: Tensor, view: Tensor, eps: float = 1e-6) -> Tensor:
    """Unbiased prior that the canonical object's aspect does not follow the foreshortening of its view (ours).

    A turned face is narrower in the image by ``cos(yaw)`` (and shorter by ``cos(pitch)``); a model that
    predicts too small a turn can narrow the canonical face instead, per image, and does: on `face` the
    recipe's canonical alpha is 6 % narrower at true yaws beyond 30 degrees than below 10, where the predicted
    yaw is 0.6x the true one. The canonical shape's aspect is the object's, the same whatever the view, so
    across a batch the log aspect of the canonical alpha (its x spread over its y spread) must be uncorrelated
    with the view's foreshortening ``log(cos(yaw) / cos(pitch))``: the squared batch correlation, estimated
    without bias (:func:`unbiased_squared_mean` of the products of the standardised values). The view is a
    constant here (only the alpha receives the gradient); the spread of aspects across images is free.

    Args:
        alpha: ``B x H x W`` canonical foreground alpha in ``[0, 1]``.
        view: ``B x 6`` viewpoint in radians (``(rx, ry, ...)``).
        eps: guards the spreads.

    Returns:
        Scalar.

    Example:
        >>> yaw = torch.linspace(-0.7, 0.7, 8)
        >>> view = torch.zeros(8, 6); view[:, 1] = yaw
        >>> x = torch.linspace(-1, 1, 16).view(1, 1, 16)
        >>> narrowed = (x.abs() < 0.6 * torch.cos(yaw).view(8, 1, 1)).float().expand(8, 16, 16)
        >>> canonical_aspect_prior(narrowed, view).item() > 0.5  # the canonical face narrowed by cos(yaw)
        True
        >>> round(canonical_aspect_prior(narrowed[:1].expand(8, 16, 16), view).item(), 6)  # the same face in all
        0.0
    """
    check_shape(alpha, "B x H x W", "canonical alpha")
    check_shape(view, "B x 6", "a viewpoint", B=alpha.shape[0])
    h, w = alpha.shape[-2:]
    x = torch.linspace(-1, 1, w, device=alpha.device, dtype=alpha.dtype)
    y = torch.linspace(-1, 1, h, device=alpha.device, dtype=alpha.dtype)

    def spread(mass: Tensor, coord: Tensor) -> Tensor:
        total = mass.sum(-1).clamp(min=eps)
        centre = (mass * coord).sum(-1) / total
        return ((mass * (coord - centre.unsqueeze(-1)) ** 2).sum(-1) / total).clamp(min=eps).sqrt()

    aspect = torch.log(spread(alpha.sum(-2), x) / spread(alpha.sum(-1), y))
    view = view.detach()
    foreshortening = torch.log(torch.cos(view[:, 1]).clamp(min=eps) / torch.cos(view[:, 0]).clamp(min=eps))

    def standardised(v: Tensor) -> Tensor:
        return (v - v.mean()) / v.detach().std().clamp(min=eps)

    return unbiased_squared_mean((standardised(aspect) * standardised(foreshortening)).unsqueeze(1))


def canonical_tilt_prior(depth: Tensor, weight: Tensor | None, fov: float, rotation_range: float) -> Tensor:
    """Unbiased prior that the canonical depth has no mean pitch tilt over the object (ours).

    Left-right symmetry fixes the canonical frame's yaw and roll, not its pitch: a canonical depth leaning
    back by some angle, with every view's pitch turned by as much the other way, renders the same images
    (:func:`view_mean_prior` pins the mean view's pitch to 0, which then leaves the lean in every
    reconstruction). This pins the batch-mean lean of the canonical depth, the vertical slope of its plane
    (:func:`depth_tilt`) over ``weight`` turned into an angle with the camera's field of view, to 0, in the
    view's normalised units (radians / ``rotation_range``), as :func:`unbiased_squared_mean` (the spread
    across images is not penalised, and the shape within the plane not at all).

    Args:
        depth: ``B x H x W`` canonical depth (near 1).
        weight: ``B x H x W`` weights over the object (the canonical alpha), or ``None`` for uniform.
        fov: the camera's field of view (degrees).
        rotation_range: the view's rotation range (degrees; netV's pitch = tanh output x this).

    Returns:
        Scalar.

    Example:
        >>> y = torch.linspace(-1, 1, 8).view(1, 8, 1)
        >>> lean = 1 + math.tan(math.radians(6)) * math.tan(math.radians(10) / 2) * y  # 6 degrees in every image
        >>> round(canonical_tilt_prior(lean.expand(4, 8, 8), None, fov=10.0, rotation_range=60.0).item(), 4)
        0.01
    """
    tilt = torch.atan(depth_tilt(depth, weight)[:, 1] / math.tan(math.radians(fov) / 2))
    return unbiased_squared_mean((tilt / math.radians(rotation_range)).unsqueeze(1))
