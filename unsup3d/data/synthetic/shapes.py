"""The procedural canonical factors of a synthetic face: depth (the shape), albedo and background.

A bilaterally symmetric, deformable face-like height field on an ellipsoidal head (brow ridge, eye
sockets, nose ridge and tip, nostrils, cheeks, lips, chin: each a smooth bump or dent of random
size, position and strength), a symmetric albedo (skin tone, cheeks, hair, brows, eyes, lips) plus
a small asymmetric part (a mark and a faint stain), and a smooth random background. Every map is a
function of the parameters of :mod:`.params` (``B`` samples), the side ``S`` and the variant's
settings (:class:`~.params.SyntheticConfig`: foreground, albedo detail, background); textures that
are noise (noise backgrounds, skin texture, freckles) come from each sample's ``variant.seed``, at a
fixed resolution resampled to ``S``, so a sample looks the same at every size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .params import FACE_ELLIPSE

__all__ = ["background_image", "canonical_albedo", "canonical_shape", "face_region", "head_coordinates"]

_SKIN = torch.tensor([[0.96, 0.82, 0.72], [0.86, 0.66, 0.52], [0.66, 0.46, 0.33], [0.38, 0.25, 0.17]])
_HAIR = torch.tensor([[0.08, 0.06, 0.05], [0.3, 0.18, 0.1], [0.55, 0.38, 0.2], [0.85, 0.72, 0.45]])


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable coordinates in [-1, 1]: x ``1 x 1 x S`` (right), y ``1 x S x 1`` (down).

    x is exactly antisymmetric (``x[j] == -x[S - 1 - j]``), so mirrored features are exact.
    Keeping the axes separate makes every Gaussian feature an outer product (fast).
    """
    t = torch.linspace(-1.0, 1.0, size)
    t = (t - t.flip(0)) / 2
    return t.view(1, 1, size), t.view(1, size, 1)


def _g(params: dict, key: str) -> torch.Tensor:
    """Parameter ``key`` as a ``B x 1 x 1`` tensor (first component)."""
    return params[key][:, :1, None]


def _gauss(u, v, cu, cv, su, sv):
    """Axis-aligned Gaussian; separable when ``u`` varies along x only and ``v`` along y only."""
    return torch.exp(-0.5 * ((u - cu) / su) ** 2) * torch.exp(-0.5 * ((v - cv) / sv) ** 2)


def _pair(u, v, cu, cv, su, sv):
    """A symmetric pair of Gaussians at ``(+-cu, cv)``."""
    return _gauss(u, v, cu, cv, su, sv) + _gauss(u, v, -cu, cv, su, sv)


def head_coordinates(params: dict, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Head-relative coordinates ``u = x / head_ax``, ``v = (y - head_cy) / head_ay`` of image
    coordinates ``x``, ``y`` in [-1, 1] (broadcast against ``B x 1 x 1``); the head is ``u^2 + v^2 < 1``."""
    return x / _g(params, "shape.head_ax"), (y - _g(params, "shape.head_cy")) / _g(params, "shape.head_ay")


def _head_coords(params: dict, size: int):
    x, y = _grid(size)
    return head_coordinates(params, x, y)


def face_region(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(u / a)^2 + ((v - c) / b)^2`` of head coordinates (:data:`~.params.FACE_ELLIPSE`): below 1 on the
    face (forehead to chin, cheek to cheek), the foreground of the ``"face"`` variants."""
    a, b, c = FACE_ELLIPSE
    return (u / a) ** 2 + ((v - c) / b) ** 2


def _noise(params: dict, size: int, channels: int, cells: tuple[int, ...], salt: int) -> torch.Tensor:
    """Per-sample value noise ``B x channels x S x S`` in about [-1, 1]: random grids of ``cells`` x ``cells``
    values (seeded by ``variant.seed`` and ``salt``), bilinearly upsampled to ``S`` and summed with weights
    halving per octave. The grids do not depend on ``S``, so the noise is the same at every size."""
    out = []
    for seed in params["variant.seed"][:, 0].long().tolist():
        gen = torch.Generator().manual_seed(seed * 7919 + salt)
        total, norm = torch.zeros(1, channels, size, size), 0.0
        for k, c in enumerate(cells):
            grid = torch.rand(1, channels, c, c, generator=gen) * 2 - 1
            total = total + 0.5**k * F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True)
            norm += 0.5**k
        out.append(total / norm)
    return torch.cat(out, 0)


def canonical_shape(params: dict, size: int, min_depth: float = 0.9, max_depth: float = 1.1):
    """Canonical depth and head mask.

    Returns:
        ``(depth, mask)``: ``B x S x S`` depth in ``[min_depth, max_depth]``, exactly mirror-symmetric
        in x, and ``B x S x S`` head mask in ``[0, 1]`` (soft over about one pixel at the silhouette).
    """
    p = lambda k: _g(params, f"shape.{k}")
    u, v = _head_coords(params, size)
    r2 = u**2 + v**2
    inside = (1 - r2).clamp(min=0)
    profile = inside ** p("power")
    depth = p("rim_depth") - p("relief") * profile

    bumps = (
        p("brow_amp") * _gauss(u, v, 0.0, p("brow_v"), p("brow_su"), p("brow_sv"))
        - p("eye_amp") * _pair(u, v, p("eye_u"), p("eye_v"), p("eye_s"), p("eye_s") * 0.8)
        + p("cheek_amp") * _pair(u, v, p("cheek_u"), p("cheek_v"), p("cheek_s"), p("cheek_s"))
        + p("lips_amp") * _gauss(u, v, 0.0, p("mouth_v"), p("mouth_su"), p("mouth_sv"))
        - p("mouth_line_amp") * _gauss(u, v, 0.0, p("mouth_v"), p("mouth_su") * 1.1, p("mouth_sv") * 0.3)
        + p("chin_amp") * _gauss(u, v, 0.0, p("chin_v"), p("chin_su"), p("chin_sv"))
    )
    # nose: a ridge growing from the bridge to the tip, a rounded tip and two nostril wings
    top, tip = p("nose_top_v"), p("nose_tip_v")
    along = ((v - top) / (tip - top)).clamp(0, 1)
    ridge_v = torch.sigmoid((v - top) / 0.03) * torch.sigmoid((tip - v) / 0.03)
    nose = p("nose_amp") * (0.3 + 0.7 * along) * ridge_v * torch.exp(-0.5 * (u / p("nose_su")) ** 2)
    nose = nose + p("tip_amp") * _gauss(u, v, 0.0, tip, p("tip_s"), p("tip_s"))
    nose = nose + p("nostril_amp") * _pair(u, v, p("nostril_u"), tip + 0.03, p("nostril_s"), p("nostril_s"))
    # features fade out towards the silhouette so they never change it
    fade = inside.clamp(max=0.5) * 2
    depth = depth - (bumps + nose) * fade

    # outside the head the surface rises smoothly to the far value
    t = ((r2.sqrt() - 1) / p("skirt")).clamp(0, 1)
    skirt = p("rim_depth") + (max_depth - p("rim_depth")) * t * t * (3 - 2 * t)
    depth = torch.where(r2 < 1, depth, skirt).clamp(min_depth, max_depth)
    depth = (depth + depth.flip(-1)) / 2  # bit-exact mirror symmetry

    pixel = 2.0 / (size - 1) / _g(params, "shape.head_ax")
    mask = ((1 - r2.sqrt()) / pixel + 0.5).clamp(0, 1)
    mask = (mask + mask.flip(-1)) / 2
    return depth, mask


def _palette(colors: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear palette lookup: ``t`` (``B``) in [0, 1] -> ``B x 3``."""
    pos = t.clamp(0, 1) * (len(colors) - 1)
    i0 = pos.floor().long().clamp(max=len(colors) - 2)
    w = (pos - i0).unsqueeze(-1)
    return colors[i0] * (1 - w) + colors[i0 + 1] * w


def canonical_albedo(params: dict, size: int, symmetric_only: bool = False, detail: str = "standard",
                     hair: bool = True) -> torch.Tensor:
    """Canonical albedo ``B x 3 x S x S`` in [0, 1]: a symmetric face plus a small asymmetric part.

    Args:
        symmetric_only: leave out the asymmetric mark and stain (for tests and visualisation).
        detail: ``"plain"`` (features at a quarter of their contrast, no asymmetric part), ``"standard"``
            or ``"detailed"`` (plus a fine skin texture and asymmetric freckles).
        hair: paint the hair (``False`` for the face-only variants).
    """
    feat = 0.25 if detail == "plain" else 1.0
    a = lambda k: params[f"albedo.{k}"]
    s = lambda k: _g(params, f"shape.{k}")
    col = lambda c: c.view(-1, 3, 1, 1)
    u, v = _head_coords(params, size)
    skin = (_palette(_SKIN, a("skin_t")[:, 0]) + a("skin_jitter")).clamp(0.05, 1)
    hair_color = (_palette(_HAIR, a("hair_t")[:, 0]) + a("hair_jitter")).clamp(0.02, 1)
    albedo = col(skin).expand(-1, -1, size, size).clone()

    def paint(img, weight, color):
        w = weight.unsqueeze(1).clamp(0, 1)
        return img * (1 - w) + color * w

    red = torch.tensor([0.85, 0.25, 0.25]).view(1, 3, 1, 1)
    cheeks = _g(params, "albedo.blush") * _pair(u, v, s("cheek_u"), s("cheek_v"), s("cheek_s"), s("cheek_s"))
    albedo = paint(albedo, cheeks, red)
    hairline = torch.sigmoid((_g(params, "albedo.hairline_v") - v) / 0.05)
    if hair:
        albedo = paint(albedo, _g(params, "albedo.hair_amp").clamp(min=0) * hairline, col(hair_color))
    eye_u, eye_v = s("eye_u"), s("eye_v")
    brow_v = s("brow_v") + _g(params, "albedo.brow_dv")
    brows = _pair(
        u, v, _g(params, "albedo.brow_u"), brow_v, _g(params, "albedo.brow_su"), _g(params, "albedo.brow_sv")
    )
    albedo = paint(albedo, feat * _g(params, "albedo.brow_amp") * brows, col(hair_color) * 0.7)
    sclera = _pair(u, v, eye_u, eye_v, eye_u * 0.3, 0.045)
    albedo = paint(albedo, feat * _g(params, "albedo.sclera_amp") * sclera, torch.full((1, 3, 1, 1), 0.92))
    iris_s = _g(params, "albedo.iris_s")
    albedo = paint(
        albedo,
        feat * _g(params, "albedo.iris_amp") * _pair(u, v, eye_u, eye_v, iris_s, iris_s),
        torch.full((1, 3, 1, 1), 0.08),
    )
    lips_color = col(skin) * 0.5 + col(a("lips_color")) * 0.2 + red * 0.3
    lips = _gauss(u, v, 0.0, s("mouth_v"), s("mouth_su"), s("mouth_sv"))
    albedo = paint(albedo, feat * _g(params, "albedo.lips_amp") * lips, lips_color)
    albedo = (albedo + albedo.flip(-1)) / 2  # bit-exact symmetric part
    if detail == "detailed":
        # fine skin texture (multiplicative, symmetric like the rest of the symmetric part) ...
        texture = _noise(params, size, 1, (32, 64), salt=1)
        albedo = albedo * (1 + 0.12 * (texture + texture.flip(-1)) / 2)
        if not symmetric_only:  # ... and asymmetric freckles: small dark dots where a noise field peaks
            spots = _noise(params, size, 1, (24,), salt=2)
            albedo = albedo * (1 - 0.45 * ((spots - 0.55) / 0.25).clamp(0, 1))
    if not symmetric_only and detail != "plain":
        uv, st = a("mark_uv"), a("stain_uv")
        mark = _gauss(
            u,
            v,
            uv[:, 0, None, None],
            uv[:, 1, None, None],
            _g(params, "albedo.mark_s"),
            _g(params, "albedo.mark_s"),
        )
        albedo = paint(albedo, _g(params, "albedo.mark_amp") * mark, col(skin) * 0.25)
        ss = a("stain_s")
        stain = _gauss(
            u, v, st[:, 0, None, None], st[:, 1, None, None], ss[:, 0, None, None], ss[:, 1, None, None]
        )
        albedo = paint(albedo, _g(params, "albedo.stain_amp") * stain, col(a("stain_color")))
    return albedo.clamp(0, 1)


def background_image(params: dict, size: int, kind: str = "blobs") -> torch.Tensor:
    """Random background ``B x 3 x S x S`` in [0, 1] (not shaded, does not move with the object).

    Args:
        kind: ``"blobs"`` (a two-colour gradient with three soft blobs), ``"smooth"`` (the gradient only)
            or ``"noise"`` (the gradient under multi-octave colour noise, down to two-pixel detail at 64 px).
    """
    b = lambda k: params[f"background.{k}"]
    x, y = _grid(size)
    ang = b("angle")[:, :1, None]
    t = ((x * ang.cos() + y * ang.sin()) / 2**0.5 + 1) / 2  # in [0, 1]
    img = b("color0").view(-1, 3, 1, 1) * (1 - t.unsqueeze(1)) + b("color1").view(-1, 3, 1, 1) * t.unsqueeze(
        1
    )
    if kind == "smooth":
        return img.clamp(0, 1)
    if kind == "noise":
        noise = _noise(params, size, 3, (4, 8, 16, 32), salt=3)
        return (img * 0.45 + 0.5 + 0.75 * noise).clamp(0, 1)
    xy, sig, color, amp = b("blob_xy"), b("blob_s"), b("blob_color"), b("blob_amp")
    for k in range(3):
        w = amp[:, k, None, None] * _gauss(
            x,
            y,
            xy[:, 2 * k, None, None],
            xy[:, 2 * k + 1, None, None],
            sig[:, k, None, None],
            sig[:, k, None, None],
        )
        img = img * (1 - w.unsqueeze(1)) + color[:, 3 * k : 3 * k + 3].view(-1, 3, 1, 1) * w.unsqueeze(1)
    return img.clamp(0, 1)
