"""The typed result of one forward pass of the model core, :class:`unsup3d.core.Unsup3DCore`.

Training, evaluation, logging and export all read these fields instead of re-running parts of the
model. ``B`` is the input batch size, ``H x W`` the model's image size. Images are in ``[-1, 1]``
unless said otherwise. Fields ending in ``_flip`` belong to the mirrored canonical factors (the
symmetry branch of the method; ``None`` in the no-flip ablation); the unflipped fields are the
prediction for the input as seen. ``Unsup3DCore.forward(images, reconstruct=False)`` (exporting) fills
the canonical fields only; the ``recon_*`` fields are then None too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

__all__ = ["Factors"]


@dataclass
class Factors:
    input: torch.Tensor  # B x 3 x H x W, the input mapped to [-1, 1]
    canon_depth_raw: torch.Tensor  # B x H' x W', netD output before normalisation (H' = depth_size)
    canon_depth: torch.Tensor  # B x H x W, canonical depth in [min_depth, max_depth], border applied
    canon_albedo: torch.Tensor  # B x 3 x H x W, canonical albedo
    canon_normal: torch.Tensor  # B x H x W x 3, unit normals of the canonical depth
    canon_diffuse_shading: torch.Tensor  # B x 1 x H x W, max(0, n . l)
    canon_shading: torch.Tensor  # B x 1 x H x W, ambient + diffuse_strength * diffuse
    canon_image: torch.Tensor  # B x 3 x H x W, shaded canonical image
    light_ambient: torch.Tensor  # B, ambient strength
    light_diffuse: torch.Tensor  # B, diffuse strength
    light_direction: torch.Tensor  # B x 3, unit light direction (dx, dy, 1) normalised
    view: torch.Tensor  # B x 6, (rx, ry, rz) in radians and (tx, ty, tz)
    recon_depth: torch.Tensor | None  # B x H x W, canonical depth rendered in the input view
    recon_normal: torch.Tensor | None  # B x H x W x 3, normals of recon_depth
    recon_image: torch.Tensor | None  # B x 3 x H x W, reconstruction of the input (masked)
    recon_mask: torch.Tensor | None  # B x 1 x H x W, valid for both original and flip reconstruction (detached)
    canon_depth_flip: torch.Tensor | None  # B x H x W, mirrored canonical depth
    canon_albedo_flip: torch.Tensor | None  # B x 3 x H x W
    canon_image_flip: torch.Tensor | None  # B x 3 x H x W
    recon_depth_flip: torch.Tensor | None  # B x H x W
    recon_image_flip: torch.Tensor | None  # B x 3 x H x W, reconstruction from the mirrored factors (masked)
    conf_sigma_l1: torch.Tensor | None  # B x 2 x H x W (channel 0: original, 1: flip), None if off
    conf_sigma_percl: torch.Tensor | None  # B x 2 x H/4 x W/4, None if confidence is off
    view_mirrored: torch.Tensor | None = None  # B x 6, netV's view of the mirrored input (flip equivariance)
    canon_alpha: torch.Tensor | None = None  # B x 1 x H x W in [0, 1], canonical foreground (background layer)
    background: torch.Tensor | None = None  # B x 3 x H x W, static background layer in the image frame

    @property
    def batch_size(self) -> int:
        return self.input.shape[0]

    def detach(self) -> Factors:
        """A copy with every tensor detached (for logging and export)."""
        return Factors(
            **{
                f.name: (v.detach() if isinstance(v, torch.Tensor) else v)
                for f in fields(self)
                for v in [getattr(self, f.name)]
            }
        )

    def to(self, *args, **kwargs) -> Factors:
        """A copy with every tensor moved with ``Tensor.to(*args, **kwargs)``."""
        return Factors(
            **{
                f.name: (v.to(*args, **kwargs) if isinstance(v, torch.Tensor) else v)
                for f in fields(self)
                for v in [getattr(self, f.name)]
            }
        )

    def select(self, index) -> Factors:
        """The factors of a subset of the batch (``index``: slice, int list or bool mask)."""
        return Factors(
            **{
                f.name: (v[index] if isinstance(v, torch.Tensor) else v)
                for f in fields(self)
                for v in [getattr(self, f.name)]
            }
        )
