"""The model core: photo -> depth, albedo, light, view (+ confidence) -> re-rendered photo.

:class:`Unsup3DCore` is a plain :class:`torch.nn.Module` that holds what a trained model *is*: the
five networks of Wu, Rupprecht and Vedaldi (CVPR 2020), the decoding of their outputs, and the
renderer. It knows nothing of losses, optimisers or Lightning; export, the demo, evaluation and
the visualisations take it (:func:`core_of` gives it for a training module or a core)::

    images -> netD, netA, netL, netV, netC (netB) -> decode (depth normalisation, light, view)
    -> normals and shading -> canonical image -> Renderer.warp_canon_depth
    -> Renderer.inverse_warp_grid -> grid_sample -> Factors

The training module (:class:`unsup3d.model.Unsup3D`) wraps one core and adds the losses, logging and
the optimiser. What depends on the training step is an argument here, never state: the mirrored netV
pass of the flip equivariance (``mirrored_view``) and the symmetric warm-up's blend (``symmetry``).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from unsup3d.factors import Factors
from unsup3d.fused import fused
from unsup3d.networks import ENCODER_INITS, build_networks, init_encoder
from unsup3d.renderer import (
    Renderer,
    ellipsoid_depth,
    euler_to_rotation_matrix,
    full_precision,
    shading,
    to_full,
)

__all__ = ["Unsup3DCore", "NETWORK_NAMES", "composite_over", "core_of", "upsample_bilinear"]

NETWORK_NAMES = ("netD", "netA", "netL", "netV", "netC", "netB")


@functools.lru_cache(maxsize=32)
def _interpolation_matrix(n_out: int, n_in: int, device, dtype) -> torch.Tensor:
    """``n_out x n_in`` weights of 1-D bilinear resampling (``align_corners=False``), as ``F.interpolate``
    computes them: its result on the identity. Built outside inference mode whatever the caller's, since it is
    cached: a matrix first made during a validation pass under ``torch.inference_mode`` could not be saved
    for the backward pass of a later training step."""
    with torch.inference_mode(False), torch.no_grad():
        eye = torch.eye(n_in, device=device, dtype=torch.float64).view(n_in, 1, n_in)
        return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0].T.to(dtype).contiguous()


def upsample_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` as two small matrix products
    (bilinear resampling is separable): ``M_h @ x @ M_w^T``.

    On a CPU the backward pass of ``upsample_bilinear2d`` is ~1 ms for the 32 -> 64 depth of a training
    batch and for the 2 -> 64 background layer, against a few microseconds of matrix products, and the
    training step runs it four times. Same values up to float rounding, in ``x``'s dtype under autocast too.

    Args:
        x: ``B x C x H x W``.
        size: ``(H', W')``.

    Returns:
        ``B x C x H' x W'``.

    Example:
        >>> x = torch.rand(2, 3, 4, 5)
        >>> torch.allclose(upsample_bilinear(x, (8, 7)), F.interpolate(x, size=(8, 7), mode="bilinear"), atol=1e-6)
        True
    """
    h, w = x.shape[-2:]
    m_h = _interpolation_matrix(int(size[0]), h, x.device, x.dtype)
    m_w = _interpolation_matrix(int(size[1]), w, x.device, x.dtype)
    with full_precision(x.device):  # in x's dtype, as F.interpolate: autocast would lower the products
        return torch.matmul(torch.matmul(m_h, x), m_w.T)


def _rescale(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Map ``x`` in ``[-1, 1]`` linearly to ``[lo, hi]`` (the original's rescalers)."""
    return (1 + x) / 2 * hi + (1 - x) / 2 * lo


def composite_over(rgba: torch.Tensor, background: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The warped canonical image over the static background layer, times the validity mask:
    ``(rgb a + background (1 - a)) mask`` (one element-wise pass, forward and backward, when compiled).

    Args:
        rgba: ``nB x 4 x H x W`` colour and alpha (``n`` renders of each image: the reconstruction and its
            mirrored branch).
        background: ``B x 3 x H x W``, the same for the ``n`` renders of an image.
        mask: ``B x 1 x H x W``, the same for the ``n`` renders of an image.

    Returns:
        ``nB x 3 x H x W``.

    Example:
        >>> rgba = torch.cat([torch.ones(2, 3, 2, 2), torch.full((2, 1, 2, 2), 0.25)], 1)
        >>> composite_over(rgba, torch.zeros(1, 3, 2, 2), torch.ones(1, 1, 2, 2)).unique().tolist()
        [0.25]
    """
    if rgba.dim() != 4 or rgba.shape[1] != 4 or background.dim() != 4 or background.shape[1] != 3 \
            or rgba.shape[0] % max(background.shape[0], 1) or rgba.shape[-2:] != background.shape[-2:] \
            or mask.shape != (background.shape[0], 1, *background.shape[-2:]):
        raise ValueError(f"composite_over expects nB x 4 x H x W colour and alpha, B x 3 x H x W background and "
                         f"B x 1 x H x W mask; got {tuple(rgba.shape)}, {tuple(background.shape)}, {tuple(mask.shape)}")
    return fused(_composite_over)(rgba, background, mask)


def _composite_over(rgba: torch.Tensor, background: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = rgba.shape[0] // background.shape[0]
    a = rgba[:, 3:]
    return (rgba[:, :3] * a + background.repeat(n, 1, 1, 1) * (1 - a)) * mask.repeat(n, 1, 1, 1)


class Unsup3DCore(nn.Module):
    """The networks, their decoding and the renderer. ``Unsup3DCore()`` is the original 64x64 model.

    Args:
        image_size: input size (32, 64 or 128; 64 is the original).
        width: channel multiplier of all five networks (1.0 is the original).
        view_width: channel multiplier of netV alone (an option of our own; default ``width``).
        min_depth, max_depth: canonical depth range.
        border_depth: depth of the 2-px left/right border; default ``0.7 max + 0.3 min``.
        fov, rot_center_depth: camera field of view (degrees) and rotation centre depth.
        xyz_rotation_range: rotation range in degrees (netV's tanh output is scaled by it).
        xy_translation_range, z_translation_range: translation ranges.
        amb_light_range, diff_light_range: ranges of ambient and diffuse strengths.
        use_conf_map: predict confidence maps (netC).
        use_flip: render the symmetry branch (mirrored depth and albedo) when reconstructing.
        depth_size: resolution at which netD predicts the canonical depth (upsampled bilinearly;
            default ``image_size``, the original).
        background_size: ``r > 0``: the static background layer (netB: an ``r x r`` RGB image that stays
            in the image frame; netA's fourth channel: the canonical foreground alpha).
        encoder_init: initialisation of netV, netL (and netB): ``"pytorch"`` or ``"kaiming"``
            (:func:`unsup3d.networks.init_encoder`).
        identity_view: the view is fixed to the identity, so netD's depth is the depth in the input
            view (the supervised upper bound's model).
        symmetric_depth: an option of our own (``False``, the original, is off): the canonical depth is
            parametrised as exactly left-right symmetric, ``(d + mirror(d)) / 2`` of netD's output, in
            training, evaluation and export alike (:meth:`depth_from_raw`). The original only asks the
            mirrored depth to reconstruct the image too (the flip loss, weighted by the confidence);
            here the depth cannot be asymmetric at all (the albedo still can).
        renderer_backend: ``"torch"`` (built-in) or ``"pytorch3d"``.

    Example:
        >>> core = Unsup3DCore(image_size=32, width=0.125).eval()
        >>> f = core(torch.rand(2, 3, 32, 32))
        >>> tuple(f.canon_depth.shape), tuple(f.recon_image.shape), tuple(f.view.shape)
        ((2, 32, 32), (2, 3, 32, 32), (2, 6))
    """

    def __init__(
        self,
        image_size: int = 64,
        width: float = 1.0,
        min_depth: float = 0.9,
        max_depth: float = 1.1,
        border_depth: float | None = None,
        fov: float = 10.0,
        rot_center_depth: float = 1.0,
        xyz_rotation_range: float = 60.0,
        xy_translation_range: float = 0.1,
        z_translation_range: float = 0.0,
        amb_light_range: tuple[float, float] = (0.0, 1.0),
        diff_light_range: tuple[float, float] = (0.0, 1.0),
        use_conf_map: bool = True,
        use_flip: bool = True,
        depth_size: int | None = None,
        background_size: int = 0,
        encoder_init: str = "pytorch",
        identity_view: bool = False,
        symmetric_depth: bool = False,
        renderer_backend: str = "torch",
        view_width: float | None = None,
    ) -> None:
        super().__init__()
        if view_width is not None and not float(view_width) > 0:
            raise ValueError(f"model.view_width must be a positive channel multiplier or null, got {view_width!r}")
        if encoder_init not in ENCODER_INITS:
            raise ValueError(f"model.encoder_init must be one of {ENCODER_INITS}, got {encoder_init!r}")
        for name, rng in (("amb_light_range", amb_light_range), ("diff_light_range", diff_light_range)):
            if len(rng) != 2 or float(rng[0]) > float(rng[1]):
                raise ValueError(f"model.{name} must be [low, high] with low <= high, got {list(rng)}")
        if (isinstance(background_size, bool) or not math.isfinite(float(background_size))
                or float(background_size) < 0 or float(background_size) != int(background_size)):
            raise ValueError(f"model.background_size must be a non-negative whole number (the layer is r x r), "
                             f"got {background_size!r}")
        self.image_size = int(image_size)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.border_depth = 0.7 * max_depth + 0.3 * min_depth if border_depth is None else float(border_depth)
        self.fov, self.rot_center_depth = float(fov), float(rot_center_depth)
        self.xyz_rotation_range = float(xyz_rotation_range)
        self.xy_translation_range, self.z_translation_range = float(xy_translation_range), float(z_translation_range)
        self.amb_light_range = tuple(float(v) for v in amb_light_range)
        self.diff_light_range = tuple(float(v) for v in diff_light_range)
        self.use_flip = bool(use_flip)
        self.background_size = int(background_size)
        self.identity_view = bool(identity_view)
        self.symmetric_depth = bool(symmetric_depth)
        self.renderer = Renderer(image_size, fov, min_depth, max_depth, rot_center_depth, renderer_backend)
        nets = build_networks(image_size=image_size, width=width, with_confidence=use_conf_map,
                              depth_size=depth_size, background_size=self.background_size,
                              view_width=view_width)
        self.netD, self.netA, self.netL, self.netV = nets["netD"], nets["netA"], nets["netL"], nets["netV"]
        init_encoder(self.netV, encoder_init)
        init_encoder(self.netL, encoder_init)
        self.netC = nets.get("netC")
        self.netB = nets.get("netB")
        if self.netB is not None:
            init_encoder(self.netB, encoder_init)

    # ------------------------------------------------------------------------------- networks
    @property
    def network_names(self) -> tuple[str, ...]:
        """The networks this core has, in the authors' order (netC without confidence maps and netB
        without the background layer are absent)."""
        return tuple(n for n in NETWORK_NAMES if getattr(self, n) is not None)

    @property
    def device(self) -> torch.device:
        """The device of the networks' parameters."""
        return next(self.parameters()).device

    def load_original_state_dicts(self, state: dict[str, Any], strict: bool = True) -> None:
        """Load the authors' checkpoint format: a dict ``{"netD": state_dict, ..., "netC": ...}``."""
        missing = [n for n in self.network_names if n not in state]
        if missing:
            raise KeyError(f"original-format checkpoint lacks networks {missing}; has {sorted(state)}")
        for name in self.network_names:
            getattr(self, name).load_state_dict(state[name], strict=strict)

    def original_state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """The five networks' state dicts in the authors' checkpoint format."""
        return {n: getattr(self, n).state_dict() for n in self.network_names}

    # -------------------------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor, reconstruct: bool = True, mirrored_view: bool = False,
                symmetry: float = 0.0) -> Factors:
        """Factor images into depth, albedo, light and view, and re-render them.

        The networks run in whatever precision the caller's autocast context gives them (bf16 under
        ``trainer.precision=bf16-mixed``); their outputs are then cast to float32 and everything after
        them (depth normalisation, normals, shading, warping, rasterization, inverse warp and
        ``grid_sample``) runs with autocast off (:meth:`render_factors`).

        Args:
            images: ``B x 3 x S x S`` in ``[0, 1]``, ``S = image_size``.
            reconstruct: ``False`` computes the canonical factors only (depth, albedo, normals,
                shading, canonical image, light, view), as exporting needs: no confidence maps, no
                mirrored branch, no warp; the ``recon_*``, ``*_flip`` and ``conf_*`` fields are None.
            mirrored_view: also run netV on the mirrored images (``Factors.view_mirrored``; the flip
                equivariance loss needs it).
            symmetry: in ``[0, 1]``, how much the canonical depth and albedo are blended with their mirror
                images (the symmetric warm-up; 0 outside it, and always 0 in evaluation and export).

        Returns:
            :class:`~unsup3d.factors.Factors` (every field documents its shape), all float32
            for half-precision networks.
        """
        s = self.image_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (s, s):
            raise ValueError(f"expected images of shape B x 3 x {s} x {s} in [0, 1], got {tuple(images.shape)}")
        x = images * 2 - 1
        return self.render_factors(x, self.predict(x, reconstruct, mirrored_view), reconstruct, symmetry)

    def predict(self, x: torch.Tensor, reconstruct: bool = True,
                mirrored_view: bool = False) -> dict[str, torch.Tensor | None]:
        """The networks' raw outputs for ``x`` (``B x 3 x S x S`` in ``[-1, 1]``).

        Args:
            x: the input in ``[-1, 1]``.
            reconstruct: ``False`` (canonical factors only) leaves out netC and netB, which only serve
                the reconstruction.
            mirrored_view: also run netV on ``x`` mirrored (one batched pass).

        Returns:
            ``{"depth": B x 1 x S' x S' (netD, linear; S' = depth_size), "albedo": B x 3 x S x S
            (netA, tanh; B x 4 with the background layer, the 4th channel its alpha), "light": B x 4
            (netL, tanh), "view": B x 6 (netV, tanh), "conf": None or the pair (B x 2 x S x S,
            B x 2 x S/4 x S/4) of netC, "view_mirrored": B x 6 netV of the mirrored input (None unless
            ``mirrored_view``), "background": B x 3 r^2 (netB, tanh; None without the background layer
            or with ``reconstruct=False``)}``, in the autocast context's precision.
        """
        views = self.netV(torch.cat([x, x.flip(3)], 0) if mirrored_view else x)
        return {
            "depth": self.netD(x),
            "albedo": self.netA(x),
            "light": self.netL(x),
            "view": views[: x.shape[0]],
            "conf": self.netC(x) if self.netC is not None and reconstruct else None,
            "view_mirrored": views[x.shape[0]:] if mirrored_view else None,
            "background": self.netB(x) if self.netB is not None and reconstruct else None,
        }

    def render_factors(self, x: torch.Tensor, raw: dict[str, Any], reconstruct: bool = True,
                       symmetry: float = 0.0) -> Factors:
        """Decode the networks' raw outputs and re-render the input, in full precision.

        Args:
            x: ``B x 3 x S x S`` input in ``[-1, 1]``.
            raw: the output of :meth:`predict` (any float dtype; cast to float32 if half).
            reconstruct, symmetry: as in :meth:`forward`.

        Returns:
            :class:`~unsup3d.factors.Factors`.
        """
        with full_precision(x.device):
            x = to_full(x)
            conf = raw.get("conf")
            conf_l1, conf_perc = (None, None) if conf is None else (to_full(conf[0]), to_full(conf[1]))
            background = raw.get("background")
            factors = self._render(x, to_full(raw["depth"]), to_full(raw["albedo"]), to_full(raw["light"]),
                                   to_full(raw["view"]), conf_l1, conf_perc, reconstruct,
                                   None if background is None else to_full(background), symmetry)
            if raw.get("view_mirrored") is not None:
                factors.view_mirrored = to_full(raw["view_mirrored"]) * self.view_ranges(x)
            return factors

    def shape_prior(self, height: float, border: bool = True) -> torch.Tensor:
        """A centred ellipsoidal bulge of ``height`` (a fraction of the depth range) on the border depth
        (:func:`~unsup3d.renderer.ellipsoid_depth`; the depth prior's target), with the 2-px left/right border
        of the canonical depth (``border=True``) or without it (what the prior compares
        :meth:`depth_from_raw` with).

        Returns:
            ``S x S`` float32 on the core's device.
        """
        s = self.image_size
        prior = ellipsoid_depth(s, self.border_depth, float(height) * (self.max_depth - self.min_depth),
                                like=torch.empty(0, device=self.device))
        if border:
            prior[:, :2] = self.border_depth
            prior[:, -2:] = self.border_depth
        return prior

    def depth_from_raw(self, depth_raw: torch.Tensor) -> torch.Tensor:
        """The canonical depth parametrisation, before the border: netD's raw output, upsampled to
        the image size if predicted smaller (bilinear), averaged with its mirror image if the core has
        ``symmetric_depth``, made zero-mean per image, ``tanh``, rescaled to ``[min_depth, max_depth]``.

        Args:
            depth_raw: ``B x S' x S'`` netD output.

        Returns:
            ``B x S x S``.
        """
        b, s = depth_raw.shape[0], self.image_size
        if depth_raw.shape[-1] != s:
            depth_raw = upsample_bilinear(depth_raw.unsqueeze(1), (s, s)).squeeze(1)
        if self.symmetric_depth:
            depth_raw = (depth_raw + depth_raw.flip(-1)) / 2
        depth = depth_raw - depth_raw.view(b, -1).mean(1).view(b, 1, 1)
        return _rescale(depth.tanh(), self.min_depth, self.max_depth)

    def _render(self, x, depth_raw, albedo, light, view_raw, conf_l1, conf_perc, reconstruct: bool = True,
                background=None, symmetry: float = 0.0) -> Factors:
        b, _, h, w = x.shape

        # Canonical depth: zero-mean, tanh, rescaled, fixed 2-px left/right border.
        depth_raw = depth_raw.squeeze(1)
        depth = self.depth_from_raw(depth_raw)
        border = torch.zeros(1, h, w, device=x.device, dtype=x.dtype)
        border[..., :2] = 1
        border[..., -2:] = 1
        depth = depth * (1 - border) + border * self.border_depth
        sym = float(symmetry)
        if sym > 0:  # the symmetric warm-up: canonical depth and albedo (and alpha) blended with their mirrors
            depth = depth * (1 - sym) + (depth + depth.flip(-1)) / 2 * sym
            albedo = albedo * (1 - sym) + (albedo + albedo.flip(-1)) / 2 * sym
        alpha = None
        if albedo.shape[1] == 4:  # the background layer's canonical foreground alpha
            albedo, alpha = albedo[:, :3], albedo[:, 3:] / 2 + 0.5

        light_a = _rescale(light[:, 0], *self.amb_light_range)
        light_b = _rescale(light[:, 1], *self.diff_light_range)
        light_d = shading.light_direction(light[:, 2:])
        view = view_raw * self.view_ranges(x)
        if self.identity_view:  # netD predicts the depth in the input view
            view = torch.zeros_like(view)

        # The symmetry branch renders the mirrored canonical factors with the same light and view.
        use_flip = self.use_flip and reconstruct
        n = 2 if use_flip else 1
        depth_all = torch.cat([depth, depth.flip(2)], 0) if use_flip else depth
        albedo_all = torch.cat([albedo, albedo.flip(3)], 0) if use_flip else albedo
        light_a_all, light_b_all = light_a.repeat(n), light_b.repeat(n)
        light_d_all, view_all = light_d.repeat(n, 1), view.repeat(n, 1)

        normal = self.renderer.normals(depth_all)
        # 2B x H x W diffuse term and shading, 2B x 3 x H x W canonical image in [-1, 1]
        diffuse, shade_map, canon_im = shading.shade_lambertian(albedo_all, normal, light_d_all, light_a_all,
                                                                light_b_all, signed=True)

        if not reconstruct:
            return Factors(
                input=x, canon_depth_raw=depth_raw, canon_depth=depth, canon_albedo=albedo, canon_normal=normal,
                canon_diffuse_shading=diffuse.unsqueeze(1), canon_shading=shade_map.unsqueeze(1),
                canon_image=canon_im, light_ambient=light_a, light_diffuse=light_b, light_direction=light_d,
                view=view, recon_depth=None, recon_normal=None, recon_image=None, recon_mask=None,
                canon_depth_flip=None, canon_albedo_flip=None, canon_image_flip=None, recon_depth_flip=None,
                recon_image_flip=None, conf_sigma_l1=None, conf_sigma_percl=None, canon_alpha=alpha)

        with_alpha = alpha is not None and background is not None
        alpha_all = (torch.cat([alpha, alpha.flip(3)], 0) if use_flip else alpha) if with_alpha else None
        recon_depth, warped, valid = self.warp_canonical(canon_im, depth_all, view_all, alpha_all)
        recon_normal = self.renderer.normals(recon_depth[:b])  # (for the panels; the mirrored branch's are not used)
        valid = valid[:b] * valid[b:] if use_flip else valid
        mask = valid.detach()  # B x 1 x H x W, valid for both reconstructions
        bg = None
        if not with_alpha:
            recon_im = warped * mask.repeat(n, 1, 1, 1)
        else:  # the warped canonical image over the static background layer
            r = self.background_size
            bg = upsample_bilinear(background.view(b, 3, r, r), (h, w))
            recon_im = composite_over(warped, bg, mask)

        flip = slice(b, 2 * b) if use_flip else None
        return Factors(
            input=x,
            canon_depth_raw=depth_raw,
            canon_depth=depth_all[:b],
            canon_albedo=albedo,
            canon_normal=normal[:b],
            canon_diffuse_shading=diffuse[:b].unsqueeze(1),
            canon_shading=shade_map[:b].unsqueeze(1),
            canon_image=canon_im[:b],
            light_ambient=light_a,
            light_diffuse=light_b,
            light_direction=light_d,
            view=view,
            recon_depth=recon_depth[:b],
            recon_normal=recon_normal,
            recon_image=recon_im[:b],
            recon_mask=mask,
            canon_depth_flip=depth_all[flip] if flip else None,
            canon_albedo_flip=albedo_all[flip] if flip else None,
            canon_image_flip=canon_im[flip] if flip else None,
            recon_depth_flip=recon_depth[flip] if flip else None,
            recon_image_flip=recon_im[flip] if flip else None,
            conf_sigma_l1=conf_l1,
            conf_sigma_percl=conf_perc,
            canon_alpha=alpha,
            background=bg,
        )

    def warp_canonical(self, canon_image: torch.Tensor, canon_depth: torch.Tensor, view: torch.Tensor,
                       alpha: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The canonical image seen from ``view``, by the method's warp: the canonical depth rasterized in the
        view (:meth:`~unsup3d.renderer.Renderer.warp_canon_depth`), each pixel's point sent back into the
        canonical frame (:meth:`~unsup3d.renderer.Renderer.inverse_warp_grid`) and the canonical image sampled
        there. The reconstruction of :meth:`forward` and :meth:`render_at_view` both use it.

        Args:
            canon_image: ``B x C x H x W`` canonical image (in ``[-1, 1]``).
            canon_depth: ``B x H x W`` canonical depth (with its border).
            view: ``B x 6``.
            alpha: ``B x 1 x H x W`` canonical foreground alpha, warped with the image, or None.

        Returns:
            ``(depth, warped, valid)``: ``B x H x W`` depth in the view, ``B x C x H x W`` (``C + 1`` with
            ``alpha``, as its last channel) warped image, ``B x 1 x H x W`` where the view sees the surface.
        """
        depth = self.renderer.warp_canon_depth(canon_depth, view)
        grid = self.renderer.inverse_warp_grid(depth, view)
        valid = self.renderer.visible_mask(depth).to(canon_image.dtype).unsqueeze(1)
        texture = canon_image if alpha is None else torch.cat([canon_image, alpha], 1)
        return depth, F.grid_sample(texture, grid, mode="bilinear", align_corners=True), valid

    def render_at_view(self, f: Factors, view: torch.Tensor) -> torch.Tensor:
        """Re-render one forward pass's canonical factors (depth, albedo, light, alpha, background layer, all as
        predicted for each image) from another ``view``, as :meth:`forward` reconstructs the input from the
        predicted one: an image of the model's own 3D face, turned by a known amount under the same light.

        The light stays where it was in the camera's frame, as for a face turning in front of a camera: the
        canonical light direction ``l`` becomes ``R'^T R l`` (``R``, ``R'`` the rotations of ``f.view`` and
        ``view``) and the canonical image is shaded again. Rendering the canonical image as shaded would turn
        the light with the face, so that the shading moves with the face's features, where on a real turned
        face it moves across them.

        Args:
            f: factors of :meth:`forward` with ``reconstruct=True`` (``B`` images).
            view: ``B x 6`` (rx, ry, rz in radians, tx, ty, tz).

        Returns:
            ``B x 3 x H x W`` in ``[-1, 1]`` (float32); pixels the surface does not cover are 0 without
            the background layer, the background layer's colour with it.

        Example:
            >>> _ = torch.manual_seed(0)
            >>> core = Unsup3DCore(image_size=32, width=0.125).eval()
            >>> f = core(torch.rand(2, 3, 32, 32))
            >>> seen = f.recon_mask.expand_as(f.recon_image) > 0  # (the reconstruction's mask: both branches')
            >>> torch.allclose(core.render_at_view(f, f.view)[seen], f.recon_image[seen], atol=1e-4)
            True
        """
        b = f.view.shape[0]
        if view.shape != (b, 6):
            raise ValueError(f"render_at_view expects a B x 6 view for the factors' {b} images, got {tuple(view.shape)}")
        with full_precision(view.device):
            view = to_full(view)
            turn = euler_to_rotation_matrix(view[:, :3]).transpose(1, 2) @ euler_to_rotation_matrix(
                to_full(f.view[:, :3]))
            light = (turn @ to_full(f.light_direction).unsqueeze(-1)).squeeze(-1)
            _, _, image = shading.shade_lambertian(to_full(f.canon_albedo), to_full(f.canon_normal), light,
                                                   to_full(f.light_ambient), to_full(f.light_diffuse), signed=True)
            alpha = f.canon_alpha if f.background is not None else None
            _, warped, valid = self.warp_canonical(image, to_full(f.canon_depth), view,
                                                   None if alpha is None else to_full(alpha))
            if alpha is None:
                return warped * valid
            return composite_over(warped, to_full(f.background), valid)

    def view_ranges(self, like: torch.Tensor) -> torch.Tensor:
        """``6``: what netV's ``[-1, 1]`` outputs are multiplied by (rotations in radians, then
        translations), on ``like``'s device and dtype."""
        rot = self.xyz_rotation_range * math.pi / 180
        ranges = [rot, rot, rot, self.xy_translation_range, self.xy_translation_range, self.z_translation_range]
        return torch.tensor(ranges, device=like.device, dtype=like.dtype)

    def normalized_view(self, view: torch.Tensor) -> torch.Tensor:
        """Viewpoint in netV's units: ``B x 6`` radians and translations -> ``B x 6`` in ``[-1, 1]``.

        Components whose range is 0 (``tz`` for faces) are returned as 0.
        """
        ranges = self.view_ranges(view)
        return torch.where(ranges > 0, view / ranges.clamp(min=1e-12), torch.zeros_like(view))


def core_of(model: nn.Module) -> Unsup3DCore:
    """The :class:`Unsup3DCore` of ``model``: the model itself, or the training module's ``core``.

    Example:
        >>> core = Unsup3DCore(image_size=32, width=0.125)
        >>> core_of(core) is core
        True

    Raises:
        TypeError: ``model`` is neither.
    """
    if isinstance(model, Unsup3DCore):
        return model
    core = getattr(model, "core", None)
    if isinstance(core, Unsup3DCore):
        return core
    raise TypeError(f"expected an Unsup3DCore or a module holding one as .core, got {type(model).__name__}")
