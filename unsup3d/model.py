"""The Unsup3D LightningModule: photo -> depth, albedo, light, view (+ confidence) -> reconstruction.

One training step (Wu, Rupprecht, Vedaldi, CVPR 2020):

    images -> netD, netA, netL, netV, netC -> Factors (canonical depth and albedo, each also
    mirrored, light, view, confidence) -> normals and shading -> canonical image
    -> Renderer.warp_canon_depth -> Renderer.inverse_warp_grid -> grid_sample
    -> reconstructions and masks -> confidence-weighted L1 + perceptual losses.

Evaluation, logging and export call :meth:`Unsup3D.forward` and read the returned
:class:`~unsup3d.factors.Factors`; nothing re-implements a piece of it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from unsup3d.factors import Factors
from unsup3d.losses import (
    STRUCTURAL_LOSSES,
    PerceptualLoss,
    depth_smoothness_loss,
    ellipsoid_depth,
    photometric_loss,
    structural_loss,
    view_equivariance_loss,
    view_mean_prior,
)
from unsup3d.metrics import SIDE_SCALE, DepthMetrics
from unsup3d.networks import ENCODER_INITS, build_networks, init_encoder
from unsup3d.renderer import Renderer, full_precision, shading, to_full

__all__ = ["Unsup3D", "Factors", "LOSS_TERMS"]

NETWORK_NAMES = ("netD", "netA", "netL", "netV", "netC", "netB")
LOSS_TERMS = ("l1", "l1_flip", "perc", "perc_flip", "struct", "struct_flip", "depth_sm", "view_equivariance", "view_mean", "depth_prior",
              "depth_supervised")
LR_DECAYS = ("none", "cosine")


def _rescale(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Map ``x`` in ``[-1, 1]`` linearly to ``[lo, hi]`` (the original's rescalers)."""
    return (1 + x) / 2 * hi + (1 - x) / 2 * lo


class Unsup3D(pl.LightningModule):
    """The method as a LightningModule. ``Unsup3D()`` is the original 64x64 configuration.

    Args:
        image_size: input size (32, 64 or 128; 64 is the original).
        width: channel multiplier of all five networks (1.0 is the original).
        min_depth, max_depth: canonical depth range.
        border_depth: depth of the 2-px left/right border; default ``0.7 max + 0.3 min``.
        fov, rot_center_depth: camera field of view (degrees) and rotation centre depth.
        xyz_rotation_range: rotation range in degrees (netV's tanh output is scaled by it).
        xy_translation_range, z_translation_range: translation ranges.
        amb_light_range, diff_light_range: ranges of ambient and diffuse strengths.
        use_conf_map: predict confidence maps (netC); ``False`` uses sigma = 1 (synthetic cars).
        use_flip: the symmetry branch (mirrored depth and albedo); ``False`` is the no-flip
            ablation (no symmetric rendering and no flip losses).
        lam_perc: weight of the perceptual loss (0 turns VGG off entirely).
        lam_flip: weight of the flipped reconstruction losses from ``lam_flip_start_epoch`` on.
        lam_flip_start_epoch: epoch from which ``lam_flip`` applies.
        lam_flip_before_start: weight of the flip losses before that epoch. The original code
            uses 1 here (``lam_flip = 1 if epoch < lam_flip_start_epoch else self.lam_flip``).
        lam_depth_sm: weight of the depth smoothness prior (0.1 for synthetic cars).
        lam_struct: weight of a structural image loss (0, the original, is off), with the flip weight
            as the photometric and perceptual losses: :func:`~unsup3d.losses.structural_loss` of kind
            ``struct_loss`` (``"gradient"``: L1 of image gradients; ``"ssim"``), weighted by the
            quarter-resolution confidence map that the original's perceptual loss uses. It needs no
            ImageNet weights, and like the perceptual loss it is blind to smooth colour shifts, so a
            smooth background that does not move with the object costs little when the view rotates.
        struct_loss: kind of the structural loss (:data:`~unsup3d.losses.STRUCTURAL_LOSSES`).
        lam_view_equivariance: weight of the flip equivariance of netV (0, the original, is off):
            the view predicted for the mirrored input must be the mirrored view, ``(rx, -ry, -rz,
            -tx, ty, tz)`` (:func:`~unsup3d.losses.view_equivariance_loss`, in netV's normalised
            units). Left-right symmetry fixes the canonical yaw, roll and x shift only through the
            flip losses, which the confidence maps can turn down; netV can then drift to a constant
            offset (we measured -52 degrees of yaw after 870 steps at lr 5e-4). The equivariance
            pins those three to the data's mirror symmetry per image, without penalising the
            spread of poses across images. Costs one extra netV pass on the mirrored batch.
        lam_view_mean: weight of an unbiased prior that the mean pitch and y shift of the training
            batches is 0 (:func:`~unsup3d.losses.view_mean_prior`: the product of the two
            half-batch means, whose expectation is the squared population mean, so the spread of
            poses is not penalised). Symmetry leaves the canonical pitch free. 0 (the original) is off.
        depth_size: resolution at which netD predicts the canonical depth (a power of 2, at most
            ``image_size``; default ``image_size``, the original). A smaller map is upsampled
            bilinearly, so the depth cannot hold one-pixel patterns that the two-pixel central
            differences of the normals do not see (a +-0.01 checkerboard changes no interior
            normal) and that shading therefore never penalises. Changes netD's architecture
            (its checkpoints are not the original's).
        lam_depth_prior, depth_prior_steps: an ellipsoid initialisation of the canonical depth:
            ``lam_depth_prior * (1 - step / depth_prior_steps)`` times the mean squared difference
            (in units of the depth range) between the canonical depth and a centred ellipsoidal bulge
            (:func:`ellipsoid_depth`), annealed to 0 by ``depth_prior_steps`` (GAN2Shape starts its
            shapes from an ellipsoid). 0 (the original) is off.
        depth_prior_height: height of that bulge's tip above the border depth, as a fraction of the
            depth range (0.5: from 1.04 to 0.94 with the default range).
        background_size: a static background layer of our own (0, the original, is off): ``netB`` predicts
            an ``r x r`` RGB image (``r = background_size``), upsampled bilinearly to the image size, that
            stays in the image frame, and ``netA`` a fourth channel, the canonical foreground alpha, that
            is warped with the canonical image; the reconstruction is ``alpha * warped + (1 - alpha) *
            background``. The method's rigid model moves the whole image with the view, so a background
            that does not turn with the object (any photo's) costs photometric error at every rotation and
            holds the pose near frontal; a low-resolution layer that does not move explains smooth
            backgrounds for free, and is too coarse to explain the object. Changes netA's architecture.
        symmetric_warmup_steps: a curriculum of our own (0, the original, is off): for this many training
            steps the canonical depth and albedo are made exactly symmetric (averaged with their mirror
            images; :meth:`symmetry_weight`), then released linearly over as many steps again. While they
            are symmetric, the only ways to render a face that is not left-right symmetric are the view
            and the light: the pose must be learned before the albedo can copy the image's asymmetries.
            Evaluation and export are never symmetrized.
        supervised_depth: train netD on the ground-truth depth of the batches instead of the
            photometric losses (the paper's supervised upper bound, Table 2): the L1 difference of the
            log depths after removing their per-image means (scale invariant, as SIDE and MAD are), and
            the view fixed to the identity, so that netD's depth is the depth in the input view. The
            other networks are not trained. Needs data with ground-truth depth.
        encoder_init: initialisation of the two plain encoders (netV, netL), which have no
            normalisation layers: ``"pytorch"`` (PyTorch's default, as the original release) or
            ``"kaiming"`` (He-normal hidden layers, small last layer). With the default, their
            outputs barely vary across images for the first few hundred steps; see
            :func:`unsup3d.networks.init_encoder`. Checkpoints are unaffected.
        lr, beta1, beta2, weight_decay: Adam settings.
        lr_warmup_steps: linear learning-rate warm-up from 0 over this many steps (0, the original:
            none).
        lr_decay: ``"none"`` (the original: constant) or ``"cosine"`` (to 0 at ``lr_decay_steps``,
            default the trainer's total number of steps).
        lr_decay_steps: length of the cosine decay in steps (``None``: the whole run).
        lr_multipliers: per-network factors of ``lr``, e.g. ``{"netV": 0.5}`` (names among netD,
            netA, netL, netV, netC); ``None`` (the original) is 1 for all.
        vgg_weights: path of the ImageNet VGG16 weights (torchvision's ``vgg16-397923af.pth``);
            default: ``$UNSUP3D_VGG16_WEIGHTS``, torch hub's cache, then a download.
        allow_random_vgg: use a randomly initialised VGG when no weights can be found (only for
            benchmarks and tests: the perceptual loss is then meaningless).
        renderer_backend: ``"torch"`` (built-in) or ``"pytorch3d"``.
        on_nonfinite: ``"raise"`` stops with an error naming the step and the loss terms; ``"skip"``
            skips the batch with a warning.
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
        lam_perc: float = 1.0,
        lam_flip: float = 0.5,
        lam_flip_start_epoch: int = 0,
        lam_flip_before_start: float = 1.0,
        lam_depth_sm: float = 0.0,
        lam_struct: float = 0.0,
        struct_loss: str = "gradient",
        lam_view_equivariance: float = 0.0,
        lam_view_mean: float = 0.0,
        depth_size: int | None = None,
        lam_depth_prior: float = 0.0,
        depth_prior_steps: int = 0,
        depth_prior_height: float = 0.5,
        background_size: int = 0,
        symmetric_warmup_steps: int = 0,
        supervised_depth: bool = False,
        encoder_init: str = "pytorch",
        lr: float = 1e-4,
        beta1: float = 0.9,
        beta2: float = 0.999,
        weight_decay: float = 5e-4,
        lr_warmup_steps: int = 0,
        lr_decay: str = "none",
        lr_decay_steps: int | None = None,
        lr_multipliers: dict[str, float] | None = None,
        vgg_weights: str | None = None,
        allow_random_vgg: bool = False,
        renderer_backend: str = "torch",
        on_nonfinite: str = "raise",
    ) -> None:
        super().__init__()
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"model.on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        if encoder_init not in ENCODER_INITS:
            raise ValueError(f"model.encoder_init must be one of {ENCODER_INITS}, got {encoder_init!r}")
        for name, rng in (("amb_light_range", amb_light_range), ("diff_light_range", diff_light_range)):
            if len(rng) != 2 or float(rng[0]) > float(rng[1]):
                raise ValueError(f"model.{name} must be [low, high] with low <= high, got {list(rng)}")
        if struct_loss not in STRUCTURAL_LOSSES:
            raise ValueError(f"model.struct_loss must be one of {STRUCTURAL_LOSSES}, got {struct_loss!r}")
        for name, val in (("lam_perc", lam_perc), ("lam_flip", lam_flip), ("lam_depth_sm", lam_depth_sm),
                          ("lam_struct", lam_struct),
                          ("lam_view_equivariance", lam_view_equivariance), ("lam_view_mean", lam_view_mean),
                          ("lam_depth_prior", lam_depth_prior), ("depth_prior_steps", depth_prior_steps),
                          ("depth_prior_height", depth_prior_height),
                          ("symmetric_warmup_steps", symmetric_warmup_steps),
                          ("background_size", background_size),
                          ("lr", lr), ("weight_decay", weight_decay), ("lr_warmup_steps", lr_warmup_steps)):
            if not math.isfinite(float(val)) or float(val) < 0:
                raise ValueError(f"model.{name} must be a finite non-negative number, got {val}")
        if lr_decay not in LR_DECAYS:
            raise ValueError(f"model.lr_decay must be one of {LR_DECAYS}, got {lr_decay!r}")
        if lr_decay_steps is not None and int(lr_decay_steps) <= 0:
            raise ValueError(f"model.lr_decay_steps must be positive or null, got {lr_decay_steps}")
        bad = sorted(set(lr_multipliers or {}) - set(NETWORK_NAMES))
        if bad or any(not float(v) >= 0 for v in (lr_multipliers or {}).values()):
            raise ValueError(f"model.lr_multipliers must map network names {NETWORK_NAMES} to factors >= 0, "
                             f"got {dict(lr_multipliers or {})}")
        self.save_hyperparameters()
        self.border_depth = 0.7 * max_depth + 0.3 * min_depth if border_depth is None else float(border_depth)
        self.renderer = Renderer(image_size, fov, min_depth, max_depth, rot_center_depth, renderer_backend)
        nets = build_networks(image_size=image_size, width=width, with_confidence=use_conf_map,
                              depth_size=depth_size, background_size=int(background_size))
        self.netD, self.netA, self.netL, self.netV = nets["netD"], nets["netA"], nets["netL"], nets["netV"]
        init_encoder(self.netV, encoder_init)
        init_encoder(self.netL, encoder_init)
        self.netC = nets.get("netC")
        self.netB = nets.get("netB")
        if self.netB is not None:
            init_encoder(self.netB, encoder_init)
        if self.netC is not None and lam_perc == 0 and lam_struct == 0:
            # The quarter-resolution confidence map only weights the perceptual (and structural) loss:
            # without them that head is unused, so freeze it (DDP requires every trainable parameter to be used).
            self.netC.out_net2.requires_grad_(False)
        # The perceptual loss (frozen VGG16) is built on first use, so that inference, export and
        # evaluation never need the ImageNet weights; it keeps no weights in the state dict.
        self.perceptual: PerceptualLoss | None = None
        # SIDE / MAD on validation data with ground-truth depth (states are not saved in checkpoints).
        self.val_depth_metrics = DepthMetrics(fov=fov, background_depth=max_depth)
        self.skipped_batches = 0

    # ------------------------------------------------------------------------------- networks
    @property
    def network_names(self) -> tuple[str, ...]:
        return tuple(n for n in NETWORK_NAMES if getattr(self, n) is not None)

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
    def forward(self, images: torch.Tensor, reconstruct: bool = True) -> Factors:
        """Factor images into depth, albedo, light and view, and re-render them.

        The five networks run in whatever precision the caller's autocast context gives them
        (bf16 under ``trainer.precision=bf16-mixed``); their outputs are then cast to float32 and
        everything after them (depth normalisation, normals, shading, warping, rasterization,
        inverse warp and ``grid_sample``) runs with autocast off (:meth:`render_factors`).

        Args:
            images: ``B x 3 x S x S`` in ``[0, 1]``, ``S = image_size``.
            reconstruct: ``False`` computes the canonical factors only (depth, albedo, normals,
                shading, canonical image, light, view), as exporting needs: no confidence maps, no
                mirrored branch, no warp; the ``recon_*``, ``*_flip`` and ``conf_*`` fields are None.

        Returns:
            :class:`~unsup3d.factors.Factors` (every field documents its shape), all float32
            for half-precision networks.
        """
        s = self.hparams.image_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (s, s):
            raise ValueError(f"expected images of shape B x 3 x {s} x {s} in [0, 1], got {tuple(images.shape)}")
        x = images * 2 - 1
        return self.render_factors(x, self.predict(x, reconstruct), reconstruct)

    def predict(self, x: torch.Tensor, confidence: bool = True) -> dict[str, torch.Tensor | None]:
        """The five networks' raw outputs for ``x`` (``B x 3 x S x S`` in ``[-1, 1]``).

        Returns:
            ``{"depth": B x 1 x S' x S' (netD, linear; S' = depth_size), "albedo": B x 3 x S x S
            (netA, tanh; B x 4 with the background layer, the 4th channel its alpha), "light": B x 4
            (netL, tanh), "view": B x 6 (netV, tanh), "conf": None or the pair (B x 2 x S x S,
            B x 2 x S/4 x S/4) of netC, "view_mirrored": B x 6 netV of the mirrored input (only when
            training with the flip equivariance, else None), "background": B x 3 r^2 (netB, tanh; None
            without the background layer or with ``confidence=False``)}``, in the autocast context's
            precision. ``confidence=False`` (no reconstruction) leaves out netC and netB.
        """
        mirrored = self.training and self.hparams.lam_view_equivariance > 0
        views = self.netV(torch.cat([x, x.flip(3)], 0) if mirrored else x)
        return {
            "depth": self.netD(x),
            "albedo": self.netA(x),
            "light": self.netL(x),
            "view": views[: x.shape[0]],
            "conf": self.netC(x) if self.netC is not None and confidence else None,
            "view_mirrored": views[x.shape[0]:] if mirrored else None,
            "background": self.netB(x) if self.netB is not None and confidence else None,
        }

    def render_factors(self, x: torch.Tensor, raw: dict[str, Any], reconstruct: bool = True) -> Factors:
        """Decode the networks' raw outputs and re-render the input, in full precision.

        Args:
            x: ``B x 3 x S x S`` input in ``[-1, 1]``.
            raw: the output of :meth:`predict` (any float dtype; cast to float32 if half).
            reconstruct: as in :meth:`forward`.

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
                                   None if background is None else to_full(background))
            if raw.get("view_mirrored") is not None:
                factors.view_mirrored = to_full(raw["view_mirrored"]) * self._view_ranges(x)
            return factors

    def shape_prior(self, border: bool = True) -> torch.Tensor:
        """The canonical shape the depth prior pulls toward: a centred ellipsoidal bulge of
        ``depth_prior_height`` (a fraction of the depth range) on the border depth
        (:func:`~unsup3d.losses.ellipsoid_depth`), with the 2-px left/right border of the canonical depth
        (``border=True``) or without it (what the loss compares :meth:`depth_from_raw` with).

        Returns:
            ``S x S`` float32 on the model's device.
        """
        hp = self.hparams
        s = hp.image_size
        prior = ellipsoid_depth(s, self.border_depth, hp.depth_prior_height * (hp.max_depth - hp.min_depth),
                                like=torch.empty(0, device=self.device))
        if border:
            prior[:, :2] = self.border_depth
            prior[:, -2:] = self.border_depth
        return prior

    def supervised_depth_loss(self, images: torch.Tensor, gt_depth: torch.Tensor) -> torch.Tensor:
        """The loss of ``supervised_depth``: mean absolute difference of the log depths of netD's depth and
        ``gt_depth`` after removing each image's mean difference.

        Args:
            images: ``B x 3 x S x S`` in ``[0, 1]``.
            gt_depth: ``B x S x S``.

        Returns:
            Scalar.
        """
        raw = self.netD(images * 2 - 1)
        with full_precision(images.device):
            depth = self.depth_from_raw(to_full(raw).squeeze(1))
            err = depth.log() - to_full(gt_depth).clamp(min=1e-3).log()
            return (err - err.mean((1, 2), keepdim=True)).abs().mean()

    def depth_from_raw(self, depth_raw: torch.Tensor) -> torch.Tensor:
        """The canonical depth parametrisation, before the border: netD's raw output, upsampled to
        the image size if predicted smaller (bilinear), made zero-mean per image, ``tanh``, rescaled
        to ``[min_depth, max_depth]``.

        Args:
            depth_raw: ``B x S' x S'`` netD output.

        Returns:
            ``B x S x S``.
        """
        hp = self.hparams
        b, s = depth_raw.shape[0], hp.image_size
        if depth_raw.shape[-1] != s:
            depth_raw = F.interpolate(depth_raw.unsqueeze(1), size=(s, s), mode="bilinear",
                                      align_corners=False).squeeze(1)
        depth = depth_raw - depth_raw.view(b, -1).mean(1).view(b, 1, 1)
        return _rescale(depth.tanh(), hp.min_depth, hp.max_depth)

    def _render(self, x, depth_raw, albedo, light, view_raw, conf_l1, conf_perc, reconstruct: bool = True,
                background=None) -> Factors:
        hp = self.hparams
        b, _, h, w = x.shape

        # Canonical depth: zero-mean, tanh, rescaled, fixed 2-px left/right border.
        depth_raw = depth_raw.squeeze(1)
        depth = self.depth_from_raw(depth_raw)
        border = torch.zeros(1, h, w, device=x.device, dtype=x.dtype)
        border[..., :2] = 1
        border[..., -2:] = 1
        depth = depth * (1 - border) + border * self.border_depth
        sym = self.symmetry_weight(self.global_step) if self.training else 0.0
        if sym > 0:  # the symmetric warm-up: canonical depth and albedo (and alpha) blended with their mirrors
            depth = depth * (1 - sym) + (depth + depth.flip(-1)) / 2 * sym
            albedo = albedo * (1 - sym) + (albedo + albedo.flip(-1)) / 2 * sym
        alpha = None
        if albedo.shape[1] == 4:  # the background layer's canonical foreground alpha
            albedo, alpha = albedo[:, :3], albedo[:, 3:] / 2 + 0.5

        light_a = _rescale(light[:, 0], *hp.amb_light_range)
        light_b = _rescale(light[:, 1], *hp.diff_light_range)
        light_d = shading.light_direction(light[:, 2:])
        view = view_raw * self._view_ranges(x)
        if hp.supervised_depth:  # netD predicts the depth in the input view
            view = torch.zeros_like(view)

        # The symmetry branch renders the mirrored canonical factors with the same light and view.
        use_flip = hp.use_flip and reconstruct
        n = 2 if use_flip else 1
        depth_all = torch.cat([depth, depth.flip(2)], 0) if use_flip else depth
        albedo_all = torch.cat([albedo, albedo.flip(3)], 0) if use_flip else albedo
        light_a_all, light_b_all = light_a.repeat(n), light_b.repeat(n)
        light_d_all, view_all = light_d.repeat(n, 1), view.repeat(n, 1)

        normal = self.renderer.normals(depth_all)
        diffuse = shading.lambertian(normal, light_d_all)  # 2B x H x W
        shade_map = shading.shading_map(light_a_all, light_b_all, diffuse)
        canon_im = shading.shade(albedo_all / 2 + 0.5, shade_map) * 2 - 1

        if not reconstruct:
            return Factors(
                input=x, canon_depth_raw=depth_raw, canon_depth=depth, canon_albedo=albedo, canon_normal=normal,
                canon_diffuse_shading=diffuse.unsqueeze(1), canon_shading=shade_map.unsqueeze(1),
                canon_image=canon_im, light_ambient=light_a, light_diffuse=light_b, light_direction=light_d,
                view=view, recon_depth=None, recon_normal=None, recon_image=None, recon_mask=None,
                canon_depth_flip=None, canon_albedo_flip=None, canon_image_flip=None, recon_depth_flip=None,
                recon_image_flip=None, conf_sigma_l1=None, conf_sigma_percl=None, canon_alpha=alpha)

        recon_depth = self.renderer.warp_canon_depth(depth_all, view_all)
        recon_normal = self.renderer.normals(recon_depth)
        grid = self.renderer.inverse_warp_grid(recon_depth, view_all)
        bg = None
        if alpha is None or background is None:
            recon_im = F.grid_sample(canon_im, grid, mode="bilinear", align_corners=True)
        else:  # the warped canonical image over the static background layer
            alpha_all = torch.cat([alpha, alpha.flip(3)], 0) if use_flip else alpha
            warped = F.grid_sample(torch.cat([canon_im, alpha_all], 1), grid, mode="bilinear", align_corners=True)
            r = hp.background_size
            bg = F.interpolate(background.view(b, 3, r, r), size=(h, w), mode="bilinear", align_corners=False)
            a = warped[:, 3:]
            recon_im = warped[:, :3] * a + bg.repeat(n, 1, 1, 1) * (1 - a)
        valid = self.renderer.visible_mask(recon_depth).to(x.dtype)
        valid = valid[:b] * valid[b:] if use_flip else valid
        mask = valid.unsqueeze(1).detach()  # B x 1 x H x W, valid for both reconstructions
        recon_im = recon_im * mask.repeat(n, 1, 1, 1)

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
            recon_normal=recon_normal[:b],
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

    def _view_ranges(self, like: torch.Tensor) -> torch.Tensor:
        """``6``: what netV's ``[-1, 1]`` outputs are multiplied by (rotations in radians, then
        translations), on ``like``'s device and dtype."""
        hp = self.hparams
        rot = hp.xyz_rotation_range * math.pi / 180
        ranges = [rot, rot, rot, hp.xy_translation_range, hp.xy_translation_range, hp.z_translation_range]
        return torch.tensor(ranges, device=like.device, dtype=like.dtype)

    def normalized_view(self, view: torch.Tensor) -> torch.Tensor:
        """Viewpoint in netV's units: ``B x 6`` radians and translations -> ``B x 6`` in ``[-1, 1]``.

        Components whose range is 0 (``tz`` for faces) are returned as 0.
        """
        ranges = self._view_ranges(view)
        return torch.where(ranges > 0, view / ranges.clamp(min=1e-12), torch.zeros_like(view))

    # --------------------------------------------------------------------------------- losses
    def _perceptual_loss(self) -> PerceptualLoss:
        if self.perceptual is None:
            self.perceptual = PerceptualLoss(
                weights_path=self.hparams.vgg_weights, allow_random=self.hparams.allow_random_vgg
            ).to(self.device)
        return self.perceptual

    def lam_flip_at(self, epoch: int) -> float:
        """Weight of the flip losses at ``epoch`` (0 when the symmetry branch is off)."""
        hp = self.hparams
        if not hp.use_flip:
            return 0.0
        return float(hp.lam_flip_before_start if epoch < hp.lam_flip_start_epoch else hp.lam_flip)

    def symmetry_weight(self, step: int) -> float:
        """How much of the canonical depth and albedo is made exactly symmetric at global ``step`` (the
        symmetric warm-up): 1 for ``symmetric_warmup_steps`` steps, then falling linearly to 0 over as many
        again; 0 when the warm-up is off."""
        n = int(self.hparams.symmetric_warmup_steps)
        if n <= 0:
            return 0.0
        return float(min(1.0, max(0.0, 2.0 - step / n)))

    def depth_prior_weight(self, step: int) -> float:
        """Weight of the ellipsoid depth prior at global ``step``: ``lam_depth_prior`` falling
        linearly to 0 at ``depth_prior_steps``."""
        hp = self.hparams
        if hp.lam_depth_prior <= 0 or hp.depth_prior_steps <= 0:
            return 0.0
        return float(hp.lam_depth_prior) * max(0.0, 1.0 - step / float(hp.depth_prior_steps))

    def compute_losses(self, f: Factors, epoch: int = 0, step: int | None = None) -> dict[str, torch.Tensor]:
        """All loss terms and their weighted total.

        Args:
            f: the forward pass's factors.
            epoch: current epoch (decides the flip weight).
            step: current global step (decides annealed weights; default the trainer's).

        Returns:
            Dict of scalar tensors: ``l1``, ``l1_flip``, ``perc``, ``perc_flip``, ``struct``, ``struct_flip``,
            ``depth_sm``,
            ``view_equivariance``, ``view_mean``, ``depth_prior`` (terms that are switched off are
            absent) and ``total``.
        """
        if step is None:
            step = self.global_step
        hp = self.hparams
        target = f.input
        c1 = f.conf_sigma_l1
        cp = f.conf_sigma_percl
        losses: dict[str, torch.Tensor] = {}
        losses["l1"] = photometric_loss(f.recon_image, target, f.recon_mask, None if c1 is None else c1[:, :1])
        if hp.use_flip:
            losses["l1_flip"] = photometric_loss(
                f.recon_image_flip, target, f.recon_mask, None if c1 is None else c1[:, 1:])
        if hp.lam_perc > 0:
            perc = self._perceptual_loss()
            losses["perc"] = perc(f.recon_image, target, f.recon_mask, None if cp is None else cp[:, :1])
            if hp.use_flip:
                losses["perc_flip"] = perc(
                    f.recon_image_flip, target, f.recon_mask, None if cp is None else cp[:, 1:])
        if hp.lam_struct > 0:
            losses["struct"] = structural_loss(f.recon_image, target, f.recon_mask, None if cp is None else cp[:, :1],
                                               hp.struct_loss)
            if hp.use_flip:
                losses["struct_flip"] = structural_loss(f.recon_image_flip, target, f.recon_mask,
                                                        None if cp is None else cp[:, 1:], hp.struct_loss)
        if hp.lam_depth_sm > 0:
            # As the original: on the rescaled depth (before the border), in units of the depth range.
            depth = self.depth_from_raw(f.canon_depth_raw)
            losses["depth_sm"] = depth_smoothness_loss(depth) / (hp.max_depth - hp.min_depth)
        if hp.lam_view_equivariance > 0 and f.view_mirrored is not None:
            losses["view_equivariance"] = view_equivariance_loss(
                self.normalized_view(f.view), self.normalized_view(f.view_mirrored))
        if hp.lam_view_mean > 0 and f.view.shape[0] >= 2:
            losses["view_mean"] = view_mean_prior(self.normalized_view(f.view))
        lam_prior = self.depth_prior_weight(step)
        if lam_prior > 0:
            target = self.shape_prior(border=False).to(f.canon_depth)
            rng = hp.max_depth - hp.min_depth
            losses["depth_prior"] = ((self.depth_from_raw(f.canon_depth_raw) - target) / rng).pow(2).mean()
        lam_flip = self.lam_flip_at(epoch)
        total = losses["l1"] + lam_flip * losses.get("l1_flip", 0.0)
        if "perc" in losses:
            total = total + hp.lam_perc * (losses["perc"] + lam_flip * losses.get("perc_flip", 0.0))
        if "struct" in losses:
            total = total + hp.lam_struct * (losses["struct"] + lam_flip * losses.get("struct_flip", 0.0))
        weights = {"depth_sm": hp.lam_depth_sm, "view_equivariance": hp.lam_view_equivariance,
                   "view_mean": hp.lam_view_mean, "depth_prior": lam_prior}
        for name, weight in weights.items():
            if name in losses:
                total = total + weight * losses[name]
        losses["total"] = total
        return losses

    def _check_finite(self, losses: dict[str, torch.Tensor], stage: str, batch_idx: int = 0) -> bool:
        bad = [k for k, v in losses.items() if not torch.isfinite(v).all()]
        if not bad:
            return True
        msg = (f"non-finite loss at {stage} global step {self.global_step} (epoch {self.current_epoch}, "
               f"batch {batch_idx}): term(s) {', '.join(bad)} = "
               f"{', '.join(f'{losses[k].item():.4g}' for k in bad)}")
        if self.hparams.on_nonfinite == "skip" and stage == "train":
            self.skipped_batches += 1
            warnings.warn(msg + "; skipping this batch (model.on_nonfinite=skip)", RuntimeWarning, stacklevel=2)
            return False
        raise FloatingPointError(msg + ". Lower the learning rate, enable trainer.gradient_clip_val, or set "
                                 "model.on_nonfinite=skip to skip such batches.")

    # ------------------------------------------------------------------------------ lightning
    def _images(self, batch) -> torch.Tensor:
        return batch["image"] if isinstance(batch, dict) else batch

    def training_step(self, batch, batch_idx: int):
        images = self._images(batch)
        if self.hparams.supervised_depth:
            if not isinstance(batch, dict) or "depth" not in batch:
                raise ValueError("model.supervised_depth=true needs ground-truth depth in the training batches "
                                 "(a dataset with has_depth=true)")
            loss = self.supervised_depth_loss(images, batch["depth"])
            self._check_finite({"depth_supervised": loss, "total": loss}, "train", batch_idx)
            self.log("train/loss_depth_supervised", loss.detach(), batch_size=images.shape[0])
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=images.shape[0])
            return loss
        f = self(images)
        losses = self.compute_losses(f, self.current_epoch)
        if not self._check_finite(losses, "train", batch_idx):
            return None
        bs = images.shape[0]
        self.log_dict({f"train/loss_{k}": v.detach() for k, v in losses.items()}, batch_size=bs,
                      prog_bar=False, on_step=True, on_epoch=False)
        self.log("train/loss", losses["total"].detach(), prog_bar=True, batch_size=bs)
        self.log("train/lam_flip", self.lam_flip_at(self.current_epoch), batch_size=bs)
        if self.hparams.on_nonfinite == "skip":
            self.log("train/skipped_batches", float(self.skipped_batches), batch_size=bs)
        if batch_idx % 50 == 0:
            self._log_factor_stats(f, bs)
        return losses["total"]

    def _log_factor_stats(self, f: Factors, bs: int) -> None:
        stats = {"light/ambient": f.light_ambient, "light/diffuse": f.light_diffuse}
        for i, k in enumerate("xyz"):
            stats[f"light/d{k}"] = f.light_direction[:, i]
        for i, k in enumerate(("rx_deg", "ry_deg", "rz_deg", "tx", "ty", "tz")):
            val = f.view[:, i] * (180 / math.pi if i < 3 else 1.0)
            stats[f"view/{k}_mean"] = val
            stats[f"view/{k}_std"] = val.std() if val.numel() > 1 else val * 0
        self.log_dict({f"train/{k}": v.detach().float().mean() for k, v in stats.items()}, batch_size=bs)

    def validation_step(self, batch, batch_idx: int):
        images = self._images(batch)
        f = self(images)
        losses = self.compute_losses(f, self.current_epoch)
        self._check_finite(losses, "validation", batch_idx)
        bs = images.shape[0]
        self.log_dict({f"val/loss_{k}": v for k, v in losses.items()}, batch_size=bs, sync_dist=True)
        self.log("val/loss", losses["total"], prog_bar=True, batch_size=bs, sync_dist=True)
        if isinstance(batch, dict) and "depth" in batch:
            self._update_depth_metrics(f, batch["depth"])
        return losses["total"]

    # Depth metrics on validation data with ground truth (SIDE, MAD).
    def _update_depth_metrics(self, f: Factors, gt_depth: torch.Tensor) -> None:
        self.val_depth_metrics.update(f.recon_depth.detach(), gt_depth, self.renderer.visible_mask(f.recon_depth))

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_depth_metrics
        if not metrics.update_called:
            return
        values = metrics.compute()
        # SIDE in the paper's units (x 10^-2), MAD in degrees (exact and the original's operator).
        for k in ("side", "mad", "mad_original", "mae", "mse"):
            if k in values:
                self.log(f"val/{k}", values[k] * (SIDE_SCALE if k == "side" else 1.0), sync_dist=False)
        metrics.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        bad = [k for k, v in checkpoint.get("state_dict", {}).items()
               if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise FloatingPointError(
                f"refusing to write a checkpoint with non-finite weights ({', '.join(bad[:5])}"
                f"{'...' if len(bad) > 5 else ''}) at global step {self.global_step}; the previous "
                "checkpoints are kept")

    def lr_factor(self, step: int, total_steps: int | None = None) -> float:
        """Learning-rate factor at ``step``: linear warm-up over ``lr_warmup_steps``, then constant or a
        cosine decay to 0 at ``lr_decay_steps`` (default ``total_steps``)."""
        hp = self.hparams
        warm = int(hp.lr_warmup_steps)
        factor = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
        if hp.lr_decay == "cosine":
            end = hp.lr_decay_steps or total_steps
            if end:
                t = min(1.0, max(0, step - warm) / max(1, int(end) - warm))
                factor *= 0.5 * (1.0 + math.cos(math.pi * t))
        return factor

    def configure_optimizers(self):
        hp = self.hparams
        mult = dict(hp.lr_multipliers or {})
        if mult:  # one parameter group per network
            groups = [{"params": [p for p in getattr(self, n).parameters() if p.requires_grad],
                       "lr": hp.lr * float(mult.get(n, 1.0)), "name": n} for n in self.network_names]
        else:  # one group, as the original (and as checkpoints written before per-network rates)
            groups = [{"params": [p for n in self.network_names for p in getattr(self, n).parameters()
                                  if p.requires_grad]}]
        opt = torch.optim.Adam(groups, lr=hp.lr, betas=(hp.beta1, hp.beta2), weight_decay=hp.weight_decay)
        if hp.lr_warmup_steps <= 0 and hp.lr_decay == "none":
            return opt
        total = None
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer (Lightning's public property says so by raising)
            trainer = None
        if hp.lr_decay == "cosine" and not hp.lr_decay_steps and trainer is not None:
            total = int(trainer.estimated_stepping_batches)
            if total <= 0 or total > 10**9:
                raise ValueError("model.lr_decay=cosine needs model.lr_decay_steps or a finite trainer.max_steps / "
                                 "max_epochs")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: self.lr_factor(step, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
