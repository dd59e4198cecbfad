"""The Unsup3D LightningModule: the model core (:mod:`unsup3d.core`) and how it is trained.

One training step (Wu, Rupprecht, Vedaldi, CVPR 2020):

    images -> Unsup3DCore (the networks, decoding, the renderer) -> Factors (canonical depth and albedo,
    each also mirrored, light, view, confidence, reconstructions and masks)
    -> confidence-weighted L1 + perceptual losses (+ the options of our own), weighted by one
    :meth:`Unsup3D.loss_weights` mapping -> the optimiser built from config (``model.optimizer``).

Evaluation, logging and export take the core (:func:`unsup3d.core.core_of`) and read the returned
:class:`~unsup3d.factors.Factors`; nothing re-implements a piece of it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from kornia.geometry.transform import translate

from unsup3d.core import NETWORK_NAMES, Unsup3DCore
from unsup3d.evaluator import METRIC_KEYS, DepthEvaluator, evaluation_batch
from unsup3d.factors import Factors
from unsup3d.fused import eager
from unsup3d.losses import (
    STRUCTURAL_LOSSES,
    PerceptualLoss,
    canonical_aspect_prior,
    canonical_tilt_prior,
    depth_smoothness_loss,
    perturb_rotation,
    photometric_loss,
    structural_loss,
    view_consistency_loss,
    view_cycle_loss,
    view_equivariance_loss,
    view_mean_prior,
)
from unsup3d.metrics import to_paper_units
from unsup3d.renderer import full_precision, intrinsics_values, shift_view, to_full, turn_about

__all__ = ["Unsup3D", "Factors", "LOSS_TERMS", "blur_images", "shift_images"]

LOSS_TERMS = ("l1", "l1_flip", "perc", "perc_flip", "struct", "struct_flip", "depth_sm", "view_equivariance", "view_mean", "depth_prior",
              "canon_tilt", "canon_aspect", "view_cycle", "view_shift", "depth_supervised")
LR_DECAYS = ("none", "cosine")


def _prefix_old_state_dict_keys(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                error_msgs) -> None:
    """Load-state-dict pre-hook of :class:`Unsup3D`: checkpoints written before the model core existed name
    the networks ``netD.*`` ...; they are ``core.netD.*`` now. Renames them in place (the one translation
    of old weights; old hyper-parameters are translated in :mod:`unsup3d.checkpoint`)."""
    for key in [k for k in state_dict if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0] in NETWORK_NAMES]:
        state_dict[prefix + "core." + key[len(prefix):]] = state_dict.pop(key)


def blur_images(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a batch of images (kornia's, reflected at the border), for the coarse-to-fine
    curriculum (``Unsup3D.blur_sigma``).

    Args:
        images: ``B x C x H x W``.
        sigma: standard deviation in pixels; 0 returns ``images`` unchanged.

    Returns:
        ``B x C x H x W``, the input's device and dtype; the kernel spans +-3 sigma (at most the image).

    Example:
        >>> x = torch.zeros(1, 1, 9, 9); x[..., 4, 4] = 1
        >>> y = blur_images(x, 1.0)
        >>> round(float(y.sum()), 4), round(float(y[0, 0, 4, 4]), 3)
        (1.0, 0.159)
    """
    if sigma <= 0:
        return images
    from kornia.filters import gaussian_blur2d

    h, w = images.shape[-2:]
    k = 2 * int(math.ceil(3 * sigma)) + 1
    ky, kx = min(k, h - (1 - h % 2)), min(k, w - (1 - w % 2))
    return gaussian_blur2d(images, (ky, kx), (float(sigma), float(sigma)), border_type="reflect")


def shift_images(images: torch.Tensor, max_shift: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image moved by its own random whole-pixel shift, the pixels coming in from outside repeated from the
    border (kornia's ``translate``; whole pixels, so nothing is resampled): the image-shift equivariance of netV
    (``lam_view_shift``) and the shift augmentation (``shift_augment_pixels``).

    Args:
        images: ``B x C x H x W``.
        max_shift: the largest shift in pixels; each of x and y uniform in the whole numbers ``-max_shift ..
            max_shift``.
        generator: random generator of the shifts (default torch's global one).

    Returns:
        ``(shifted, shift)``: ``B x C x H x W`` on the input's device and dtype, and ``B x 2`` the shifts ``(du,
        dv)`` in pixels (``u`` right, ``v`` down, :func:`~unsup3d.renderer.shift_view`), in the input's dtype.

    Example:
        >>> x = torch.zeros(1, 1, 8, 8); x[..., 2, 3] = 1
        >>> y, shift = shift_images(x, 2, torch.Generator().manual_seed(0))
        >>> shift.tolist(), y[0, 0].nonzero().tolist()
        ([[2.0, -2.0]], [[0, 5]])
    """
    shift = torch.randint(-max_shift, max_shift + 1, (images.shape[0], 2), generator=generator).to(images)
    return translate(images, shift, mode="nearest", padding_mode="border"), shift


class Unsup3D(pl.LightningModule):
    """The method as a LightningModule around one :class:`~unsup3d.core.Unsup3DCore` (``self.core``): the
    losses, logging and optimisation. ``Unsup3D()`` is the original 64x64 configuration. The geometry and
    architecture arguments go to the core; the rest is training.

    Args:
        image_size: input size (32, 64 or 128; 64 is the original).
        width: channel multiplier of all five networks (1.0 is the original).
        view_width: channel multiplier of netV alone (an option of our own; null: ``width``). The view is
            one small encoder whose output every pixel's warp depends on; at ``width=0.25`` it has 8 channels
            in its first stage. Changes netV's architecture (not the authors' checkpoints unless 1).
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
        lam_view_cycle: weight of the view cycle, an option of our own (0, the original, is off): each training
            step re-renders the batch's own canonical factors (depth, shaded image, alpha, background layer) from
            its predicted view turned by a random known amount (:meth:`view_cycle`; uniform within
            ``view_cycle_range`` degrees of pitch, yaw and roll) and trains netV alone to predict that view from
            the render (:func:`~unsup3d.losses.view_cycle_loss`, L1 in netV's units; the render is a constant).
            The photometric losses pin the view only as far as a rotation changes the reconstruction more than
            the per-image albedo and the confidence maps absorb; on face-only data the predicted yaw is a
            prediction shrunk towards frontal (slope 0.6). The cycle calibrates netV against the model's own
            geometry: a face turned by 20 degrees must read as 20 degrees more (the generative consistency of
            self-supervised viewpoint learning). Costs one render without gradient and one netV pass.
        view_cycle_range: the largest turn of the view cycle in degrees, ``(pitch, yaw, roll)``.
        view_cycle_start: the global step from which the view cycle applies (0: from the start). It calibrates
            a netV that already reads the pose; from the first step, before the canonical factors are a face,
            `face` learned the mirrored yaw with it (Results).
        lam_view_shift: weight of the image-shift equivariance of netV, an option of our own (0, the original, is
            off): each training step shifts the batch by random whole pixels (``view_shift_pixels``, the outer
            ones repeated) and netV's view of the shifted images must be the view translated by that shift
            (:meth:`view_shift`, :func:`~unsup3d.renderer.shift_view`, :func:`~unsup3d.losses.view_consistency_loss`
            in netV's units; the rotation too with ``view_shift_rotation``). Measured on the recipe's checkpoints of every synthetic
            variant: netV reads a sideways shift of the face as a turn (7-11 degrees of yaw per 0.01 of true x
            shift, 3.7 pixels) and a vertical one as a nod (face: -5 degrees of pitch per 0.01 of y shift); the
            shift explains a third of the yaw's error and most of the pitch's (correlation with the true pitch
            0.51, 0.85 with the y shift accounted for). Costs one netV pass on the shifted batch.
        view_shift_pixels: the largest shift of ``lam_view_shift`` in pixels (each of x and y uniform in the
            whole numbers ``-k .. k``).
        view_shift_rotation: the shift's equivariance also holds the rotation (netV's rotation of the shifted image
            must equal that of the image). Off: only the translation is held, to the shift. An invariance that a
            constant satisfies: held on `face`, netV's yaw shrank (slope 0.31 at 1,200 steps against 0.56) and the
            depth grew worse (Results, lever rows).
        shift_augment_pixels: the training images (input and target alike) moved by random whole pixels, up to
            this many in x and y (:func:`shift_images`, the border repeated), an option of our own (0, the original,
            is off). The synthetic variants move the face by at most 0.01 (3.7 pixels), and netV reads the yaw
            from where the face's features sit in the image: a sideways shift reads as a turn (7-11 degrees per
            0.01, ``lam_view_shift``). With the shifts larger than the turns move the features, where they sit
            no longer tells the turn.
        lam_canon_aspect: weight of an unbiased prior that the canonical alpha's aspect does not follow the predicted
            view's foreshortening (:func:`~unsup3d.losses.canonical_aspect_prior`; needs the background layer),
            an option of our own (0 is off): a face predicted turned too little can be narrowed in the canonical
            frame instead, per image, and on `face` it is.
        canon_aspect_start: the global step from which ``lam_canon_aspect`` applies. The prior is a correlation:
            from the first step, while every predicted turn is near 0, it pushed the alpha by the noise of the
            views and the foreground collapsed on `face` (alpha 0.29 at 300 steps, no pose; Results).
        lam_canon_tilt: weight of an unbiased prior that the canonical depth does not lean back or forward on
            average (:func:`~unsup3d.losses.canonical_tilt_prior`: the batch-mean pitch of the plane through
            the canonical depth over the canonical alpha, in the view's units). With ``lam_view_mean`` it fixes
            the canonical pitch on both sides: without it, once nothing else holds the canonical depth (no
            depth prior), it leans and the mean-zero view leaves that lean in every reconstruction. One number
            per batch, not a shape: the shape within the plane is free. 0 (the original) is off.
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
        blur_sigma, blur_steps: a coarse-to-fine curriculum of our own (0, the original, is off): the training
            images (the networks' input and the reconstruction target alike) are blurred with a Gaussian of
            standard deviation ``blur_sigma * (1 - step / blur_steps)`` pixels (:meth:`input_blur_sigma`), sharp
            from ``blur_steps`` on. Fine texture (cluttered backgrounds, skin detail) is what a coarse image
            loses first; the pose and the coarse shape do not need it. Validation, evaluation and export see
            the images as they are.
        symmetric_depth: the canonical depth exactly left-right symmetric always, in training, evaluation
            and export (a parametrisation of our own; :class:`~unsup3d.core.Unsup3DCore`). Off in the
            original recipes.
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
        optimizer: a partial optimiser, called with the parameter groups (the config's ``model.optimizer``,
            ``_partial_: true``); ``None``: Adam with ``lr``, ``beta1``, ``beta2`` and ``weight_decay``
            (the original). Not saved as a hyper-parameter.
        scheduler: a partial learning-rate scheduler, called with the optimiser and stepped every training step
            (the config's ``model.scheduler``, ``_partial_: true``); ``None``: the schedule of ``lr_warmup_steps``
            and ``lr_decay`` (:meth:`lr_factor`), which it replaces. Not saved as a hyper-parameter.
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
        lam_canon_tilt: float = 0.0,
        lam_view_cycle: float = 0.0,
        view_cycle_range: tuple[float, float, float] = (10.0, 30.0, 10.0),
        view_cycle_start: int = 0,
        lam_view_shift: float = 0.0,
        view_shift_pixels: int = 4,
        view_shift_rotation: bool = False,
        shift_augment_pixels: int = 0,
        lam_canon_aspect: float = 0.0,
        canon_aspect_start: int = 0,
        depth_size: int | None = None,
        lam_depth_prior: float = 0.0,
        depth_prior_steps: int = 0,
        depth_prior_height: float = 0.5,
        background_size: int = 0,
        symmetric_warmup_steps: int = 0,
        blur_sigma: float = 0.0,
        blur_steps: int = 0,
        symmetric_depth: bool = False,
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
        view_width: float | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    ) -> None:
        super().__init__()
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"model.on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        if struct_loss not in STRUCTURAL_LOSSES:
            raise ValueError(f"model.struct_loss must be one of {STRUCTURAL_LOSSES}, got {struct_loss!r}")
        for name, val in (("lam_perc", lam_perc), ("lam_flip", lam_flip), ("lam_depth_sm", lam_depth_sm),
                          ("lam_struct", lam_struct),
                          ("lam_view_equivariance", lam_view_equivariance), ("lam_view_mean", lam_view_mean),
                          ("lam_canon_tilt", lam_canon_tilt), ("lam_view_cycle", lam_view_cycle),
                          ("view_cycle_start", view_cycle_start), ("lam_view_shift", lam_view_shift),
                          ("lam_canon_aspect", lam_canon_aspect), ("canon_aspect_start", canon_aspect_start),
                          ("lam_depth_prior", lam_depth_prior), ("depth_prior_steps", depth_prior_steps),
                          ("depth_prior_height", depth_prior_height),
                          ("symmetric_warmup_steps", symmetric_warmup_steps),
                          ("blur_sigma", blur_sigma), ("blur_steps", blur_steps),
                          ("lr", lr), ("weight_decay", weight_decay), ("lr_warmup_steps", lr_warmup_steps)):
            if not math.isfinite(float(val)) or float(val) < 0:
                raise ValueError(f"model.{name} must be a finite non-negative number, got {val}")
        if len(view_cycle_range) != 3 or any(not math.isfinite(float(v)) or float(v) < 0 for v in view_cycle_range):
            raise ValueError(f"model.view_cycle_range must be three non-negative angles in degrees (pitch, yaw, roll), "
                             f"got {view_cycle_range}")
        if int(view_shift_pixels) != view_shift_pixels or not 1 <= view_shift_pixels < image_size // 2:
            raise ValueError(f"model.view_shift_pixels must be a whole number of pixels from 1 to below half the image "
                             f"size ({image_size // 2}), got {view_shift_pixels}")
        if int(shift_augment_pixels) != shift_augment_pixels or not 0 <= shift_augment_pixels < image_size // 2:
            raise ValueError(f"model.shift_augment_pixels must be a whole number of pixels from 0 to below half the "
                             f"image size ({image_size // 2}), got {shift_augment_pixels}")
        if lr_decay not in LR_DECAYS:
            raise ValueError(f"model.lr_decay must be one of {LR_DECAYS}, got {lr_decay!r}")
        if lr_decay_steps is not None and int(lr_decay_steps) <= 0:
            raise ValueError(f"model.lr_decay_steps must be positive or null, got {lr_decay_steps}")
        bad = sorted(set(lr_multipliers or {}) - set(NETWORK_NAMES))
        if bad or any(not float(v) >= 0 for v in (lr_multipliers or {}).values()):
            raise ValueError(f"model.lr_multipliers must map network names {NETWORK_NAMES} to factors >= 0, "
                             f"got {dict(lr_multipliers or {})}")
        # The optimiser factory is a callable, not a hyper-parameter: checkpoints keep the flat Adam
        # settings (lr, beta1, beta2, weight_decay) that it was built from.
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        if scheduler is not None and (lr_warmup_steps > 0 or lr_decay != "none"):
            raise ValueError("model.scheduler replaces model.lr_warmup_steps and model.lr_decay: set them to 0 and "
                             "none, or leave model.scheduler null")
        self.core = Unsup3DCore(
            image_size=image_size, width=width, min_depth=min_depth, max_depth=max_depth, border_depth=border_depth,
            fov=fov, rot_center_depth=rot_center_depth, xyz_rotation_range=xyz_rotation_range,
            xy_translation_range=xy_translation_range, z_translation_range=z_translation_range,
            amb_light_range=amb_light_range, diff_light_range=diff_light_range, use_conf_map=use_conf_map,
            use_flip=use_flip, depth_size=depth_size, background_size=background_size,
            encoder_init=encoder_init, identity_view=supervised_depth, symmetric_depth=symmetric_depth,
            renderer_backend=renderer_backend, view_width=view_width)
        # Checkpoints written before the core existed name the networks without the "core." prefix.
        self.register_load_state_dict_pre_hook(_prefix_old_state_dict_keys)
        if self.core.netC is not None and lam_perc == 0 and lam_struct == 0:
            # The quarter-resolution confidence map only weights the perceptual (and structural) loss:
            # without them that head is unused, so freeze it (DDP requires every trainable parameter to be used).
            self.core.netC.out_net2.requires_grad_(False)
        # The perceptual loss (frozen VGG16) is built on first use, so that inference, export and
        # evaluation never need the ImageNet weights; it keeps no weights in the state dict.
        self.perceptual: PerceptualLoss | None = None
        # SIDE / MAD on validation data with ground-truth depth, by the code every evaluation uses (states are
        # not saved in checkpoints): the model alone, plus the average-depth baseline once
        # DepthBaselineRatios hands it the average map.
        self.val_evaluator = DepthEvaluator(self.core, yardsticks=False)
        # trainer.test (unsup3d-eval) scores into this evaluator; run_evaluation sets it with the baselines.
        self.test_evaluator: DepthEvaluator | None = None
        self.skipped_batches = 0

    # -------------------------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor, reconstruct: bool = True) -> Factors:
        """The core's factors of ``images`` (:meth:`unsup3d.core.Unsup3DCore.forward`), with what the
        training step adds in training mode: the mirrored netV pass of the flip equivariance and the
        symmetric warm-up's blend at the current step.

        Args:
            images: ``B x 3 x S x S`` in ``[0, 1]``.
            reconstruct: as in the core.

        Returns:
            :class:`~unsup3d.factors.Factors`.
        """
        training = self.training
        return self.core(images, reconstruct,
                         mirrored_view=training and self.hparams.lam_view_equivariance > 0,
                         symmetry=self.symmetry_weight(self.global_step) if training else 0.0)

    def shape_prior(self, border: bool = True) -> torch.Tensor:
        """The canonical shape the depth prior pulls toward: the core's ellipsoidal bulge
        (:meth:`unsup3d.core.Unsup3DCore.shape_prior`) of ``depth_prior_height``.

        Returns:
            ``S x S`` float32 on the model's device.
        """
        return self.core.shape_prior(self.hparams.depth_prior_height, border)

    def supervised_depth_loss(self, images: torch.Tensor, gt_depth: torch.Tensor) -> torch.Tensor:
        """The loss of ``supervised_depth``: mean absolute difference of the log depths of netD's depth and
        ``gt_depth`` after removing each image's mean difference.

        Args:
            images: ``B x 3 x S x S`` in ``[0, 1]``.
            gt_depth: ``B x S x S``.

        Returns:
            Scalar.
        """
        raw = self.core.netD(images * 2 - 1)
        with full_precision(images.device):
            depth = self.core.depth_from_raw(to_full(raw).squeeze(1))
            err = depth.log() - to_full(gt_depth).clamp(min=1e-3).log()
            return (err - err.mean((1, 2), keepdim=True)).abs().mean()

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

    def input_blur_sigma(self, step: int) -> float:
        """Standard deviation in pixels of the Gaussian blur of the training images at global ``step`` (the
        coarse-to-fine curriculum): ``blur_sigma`` falling linearly to 0 at ``blur_steps``; 0 when it is off."""
        hp = self.hparams
        if hp.blur_sigma <= 0 or hp.blur_steps <= 0:
            return 0.0
        return float(hp.blur_sigma) * max(0.0, 1.0 - step / float(hp.blur_steps))

    def depth_prior_weight(self, step: int) -> float:
        """Weight of the ellipsoid depth prior at global ``step``: ``lam_depth_prior`` falling
        linearly to 0 at ``depth_prior_steps``."""
        hp = self.hparams
        if hp.lam_depth_prior <= 0 or hp.depth_prior_steps <= 0:
            return 0.0
        return float(hp.lam_depth_prior) * max(0.0, 1.0 - step / float(hp.depth_prior_steps))

    def loss_weights(self, epoch: int, step: int) -> dict[str, float]:
        """The weight of every loss term at ``epoch`` and global ``step``, in one mapping (the total loss is
        ``sum(weights[k] * losses[k])``): ``l1`` 1; the flip terms the flip weight (:meth:`lam_flip_at`)
        times their term's weight; ``perc``, ``struct``, ``depth_sm``, ``view_equivariance``, ``view_mean``
        their ``lam_*`` (``canon_tilt`` too); ``depth_prior`` its annealed weight (:meth:`depth_prior_weight`);
        ``view_cycle`` its ``lam_view_cycle`` from ``view_cycle_start`` on; ``view_shift`` its ``lam_view_shift``; ``canon_aspect`` its ``lam_canon_aspect`` from
        ``canon_aspect_start`` on. A term of weight 0
        is not computed."""
        hp = self.hparams
        lam_flip = self.lam_flip_at(epoch)
        return {"l1": 1.0, "l1_flip": lam_flip,
                "perc": float(hp.lam_perc), "perc_flip": float(hp.lam_perc) * lam_flip,
                "struct": float(hp.lam_struct), "struct_flip": float(hp.lam_struct) * lam_flip,
                "depth_sm": float(hp.lam_depth_sm), "view_equivariance": float(hp.lam_view_equivariance),
                "view_mean": float(hp.lam_view_mean), "depth_prior": self.depth_prior_weight(step),
                "canon_tilt": float(hp.lam_canon_tilt), "view_cycle": float(hp.lam_view_cycle) if step >= hp.view_cycle_start else 0.0,
                "view_shift": float(hp.lam_view_shift), "canon_aspect": float(hp.lam_canon_aspect) if step >= hp.canon_aspect_start else 0.0}

    def compute_losses(self, f: Factors, epoch: int = 0, step: int | None = None) -> dict[str, torch.Tensor]:
        """All loss terms and their weighted total.

        Args:
            f: the forward pass's factors.
            epoch: current epoch (decides the flip weight).
            step: current global step (decides annealed weights; default the trainer's).

        Returns:
            Dict of scalar tensors: ``l1``, ``l1_flip``, ``perc``, ``perc_flip``, ``struct``, ``struct_flip``,
            ``depth_sm``,
            ``view_equivariance``, ``view_mean``, ``depth_prior``, ``canon_tilt``, ``canon_aspect``, ``view_cycle``, ``view_shift`` (terms that are switched off are
            absent) and ``total``.
        """
        if step is None:
            step = self.global_step
        hp = self.hparams
        core = self.core
        weights = self.loss_weights(epoch, step)
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
        # The rescaled canonical depth before the border, once for both depth terms.
        needs_depth = hp.lam_depth_sm > 0 or weights["depth_prior"] > 0 or hp.lam_canon_tilt > 0
        depth = core.depth_from_raw(f.canon_depth_raw) if needs_depth else None
        if hp.lam_depth_sm > 0:
            # As the original: on the rescaled depth (before the border), in units of the depth range.
            losses["depth_sm"] = depth_smoothness_loss(depth) / (hp.max_depth - hp.min_depth)
        if hp.lam_view_equivariance > 0 and f.view_mirrored is not None:
            losses["view_equivariance"] = view_equivariance_loss(
                core.normalized_view(f.view), core.normalized_view(f.view_mirrored))
        if hp.lam_view_mean > 0 and f.view.shape[0] >= 2:
            losses["view_mean"] = view_mean_prior(core.normalized_view(f.view))
        if hp.lam_canon_tilt > 0 and depth.shape[0] >= 2:
            alpha = None if f.canon_alpha is None else f.canon_alpha[:, 0].detach()
            losses["canon_tilt"] = canonical_tilt_prior(depth, alpha, core.fov, core.xyz_rotation_range)
        if weights["view_cycle"] > 0 and f.recon_image is not None:
            losses["view_cycle"] = self.view_cycle(f)
        if weights["view_shift"] > 0:
            losses["view_shift"] = self.view_shift(f)
        if weights["canon_aspect"] > 0 and f.canon_alpha is not None and f.view.shape[0] >= 2:
            losses["canon_aspect"] = canonical_aspect_prior(f.canon_alpha[:, 0], f.view)
        if weights["depth_prior"] > 0:
            target = self.shape_prior(border=False).to(f.canon_depth)
            rng = hp.max_depth - hp.min_depth
            losses["depth_prior"] = ((depth - target) / rng).pow(2).mean()
        total = losses["l1"] * weights["l1"]
        for name, loss in losses.items():
            if name != "l1":
                total = total + weights[name] * loss
        losses["total"] = total
        return losses

    def view_cycle(self, f: Factors, generator: torch.Generator | None = None) -> torch.Tensor:
        """The view cycle's loss for one forward pass (``lam_view_cycle``): the canonical factors re-rendered
        (:meth:`~unsup3d.core.Unsup3DCore.render_at_view`, without gradient) from the predicted views turned by
        up to ``view_cycle_range`` degrees (:func:`~unsup3d.losses.perturb_rotation`, rotations kept within 90 %
        of netV's range) about the face's own centre (:func:`~unsup3d.renderer.turn_about`; about the rotation
        centre, the turned face also slides sideways, which a real turned face does not: measured on `face`,
        the recipe's netV reads such renders' turns at 0.2x, the centred ones at 0.4x), netV run on the renders,
        :func:`~unsup3d.losses.view_cycle_loss` against the views they were rendered from. Only netV receives its
        gradient.

        Args:
            f: the training forward pass's factors (with the reconstruction).
            generator: random generator of the turns (default torch's global one).

        Returns:
            Scalar.
        """
        core = self.core
        rot_range = core.xyz_rotation_range * math.pi / 180
        with torch.no_grad():
            turn = torch.tensor([float(a) for a in self.hparams.view_cycle_range]) * (math.pi / 180)
            view = to_full(f.view.detach())
            rotation = perturb_rotation(view, turn, 0.9 * rot_range, generator)
            # Turned about the face's own centre (the mean canonical depth over its alpha), not the camera's
            # rotation centre, which lies behind or in front of it: a real face turning does not slide sideways.
            depth = to_full(f.canon_depth)
            alpha = torch.ones_like(depth) if f.canon_alpha is None else to_full(f.canon_alpha[:, 0])
            pivot = (depth * alpha).sum((1, 2)) / alpha.sum((1, 2)).clamp(min=1e-6)
            view = turn_about(view, rotation, pivot, core.rot_center_depth)
            image = core.render_at_view(f, view)
        predicted = to_full(core.netV(image))
        return view_cycle_loss(predicted, core.normalized_view(view), core.view_ranges(view) > 0)

    def view_shift(self, f: Factors, generator: torch.Generator | None = None) -> torch.Tensor:
        """The image-shift equivariance loss for one forward pass (``lam_view_shift``): the input shifted by
        random whole pixels (up to ``k = view_shift_pixels`` in x and y; kornia's ``translate``), its outer ``k``
        pixels then repeated from the inner ones (for every shift, 0 included, so that the width of repeated
        border strips does not tell the shift), netV run on it, :func:`~unsup3d.losses.view_consistency_loss` against the predicted view
        translated by the shift at the rotation centre's depth (:func:`~unsup3d.renderer.shift_view`), in netV's
        units: its translation, and its rotation too with ``view_shift_rotation``. Gradients reach netV through
        both views.

        Args:
            f: the training forward pass's factors.
            generator: random generator of the shifts (default torch's global one).

        Returns:
            Scalar.
        """
        core = self.core
        k = int(self.hparams.view_shift_pixels)
        x = f.input
        shifted, shift = shift_images(x, k, generator)
        # The outer k pixels are then repeated from the inner ones whatever the shift (0 included): the shifted
        # image's repeated border strips, whose width is the shift, are no cue for netV to read it by.
        shifted = torch.nn.functional.pad(shifted[..., k:-k, k:-k], (k, k, k, k), mode="replicate")
        predicted = to_full(core.netV(shifted)) * core.view_ranges(x)
        focal = intrinsics_values(core.image_size, core.image_size, core.fov)[0]
        expected = shift_view(to_full(f.view), shift, focal, core.rot_center_depth)
        if not self.hparams.view_shift_rotation:
            # the rotation left free: the same on both sides, no difference and no gradient
            expected = torch.cat([predicted[:, :3], expected[:, 3:]], 1)
        return view_consistency_loss(core.normalized_view(predicted), core.normalized_view(expected))

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
        if self.hparams.supervised_depth and (not isinstance(batch, dict) or "depth" not in batch):
            raise ValueError("model.supervised_depth=true needs ground-truth depth in the training batches "
                             "(a dataset with has_depth=true)")
        depth = batch["depth"] if self.hparams.supervised_depth else None
        if self.hparams.shift_augment_pixels > 0:
            # the true depth moves with its image: one shift of both, as extra channels
            both = images if depth is None else torch.cat([images, depth.unsqueeze(1).to(images)], 1)
            both = shift_images(both, int(self.hparams.shift_augment_pixels))[0]
            images, depth = (both, None) if depth is None else (both[:, :-1], both[:, -1].to(depth))
        images = blur_images(images, self.input_blur_sigma(self.global_step))
        if depth is not None:
            loss = self.supervised_depth_loss(images, depth)
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
        with eager():  # a few batches an epoch: not worth compiling their no-grad graphs (unsup3d.fused)
            f = self(images)
            losses = self.compute_losses(f, self.current_epoch)
            self._check_finite(losses, "validation", batch_idx)
            if isinstance(batch, dict) and "depth" in batch:
                self.val_evaluator.update(self.core, f, batch["depth"], batch.get("path"))
        bs = images.shape[0]
        self.log_dict({f"val/loss_{k}": v for k, v in losses.items()}, batch_size=bs, sync_dist=True)
        self.log("val/loss", losses["total"], prog_bar=True, batch_size=bs, sync_dist=True)
        return losses["total"]

    def on_validation_epoch_end(self) -> None:
        ev = self.val_evaluator
        values = ev.compute()
        ev.reset()
        if "model" not in values:
            return
        # SIDE in the paper's units (x 10^-2), MAD in degrees (exact and the original's operator).
        for method, prefix in (("model", "val/"), ("avg_gt", "val/avg_gt_")):
            scores = to_paper_units(values.get(method, {}))
            for k in METRIC_KEYS:
                if k in scores:
                    self.log(f"{prefix}{k}", scores[k], sync_dist=False)

    def test_step(self, batch, batch_idx: int) -> None:
        """Score a test batch into :attr:`test_evaluator` (the model and every yardstick; ``unsup3d-eval`` runs
        ``trainer.test``). A module without one scores the model, the constant and the prior at the view."""
        images, gt, paths = evaluation_batch(batch)
        if self.test_evaluator is None:
            self.test_evaluator = DepthEvaluator(self.core, prior_height=self.hparams.depth_prior_height).to(self.device)
        self.test_evaluator.update(self.core, self.core(images), gt, paths)

    def on_test_epoch_end(self) -> None:
        values = self.test_evaluator.compute() if self.test_evaluator is not None else {}
        for method, metrics in values.items():
            scores = to_paper_units(metrics)
            for k in ("side", "mad", "mad_original"):
                self.log(f"test/{method}_{k}", scores[k], sync_dist=False)

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
        core = self.core
        if mult:  # one parameter group per network
            groups = [{"params": [p for p in getattr(core, n).parameters() if p.requires_grad],
                       "lr": hp.lr * float(mult.get(n, 1.0)), "name": n} for n in core.network_names]
        else:  # one group, as the original (and as checkpoints written before per-network rates)
            groups = [{"params": [p for n in core.network_names for p in getattr(core, n).parameters()
                                  if p.requires_grad]}]
        if self.optimizer_factory is not None:
            opt = self.optimizer_factory(groups)
        else:
            opt = torch.optim.Adam(groups, lr=hp.lr, betas=(hp.beta1, hp.beta2), weight_decay=hp.weight_decay)
        if self.scheduler_factory is not None:
            return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler_factory(opt), "interval": "step",
                                                       "frequency": 1}}
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
