"""Procedural synthetic faces: the embedded default dataset (no download), a stand-in for synface.

Every sample is a bilaterally symmetric, deformable face-like height field on an ellipsoidal head
(brow ridge, eye sockets, nose ridge and tip, nostrils, cheeks, lips, chin: each a smooth bump or
dent of random size, position and strength), with a symmetric albedo (skin tone, cheeks, hair,
brows, eyes, lips) plus a small asymmetric part (a mark and a faint stain), Lambertian shading and
a random viewpoint, rendered with the project's :class:`~unsup3d.renderer.Renderer` exactly as the
model forms its reconstruction:

* canonical depth ``D`` (``H x W``, in ``[min_depth, max_depth]``, mirror-symmetric in x; the head
  surface spans about 0.92-1.06, the area outside the head rises smoothly to ``max_depth``),
* canonical albedo ``A`` in ``[0, 1]``; normals ``n = renderer.normals(D)``; light direction
  ``l = normalize(dx, dy, 1)``; shading ``s = a + b * max(0, n . l)``; canonical image ``A * s``,
* viewpoint ``(rx, ry, rz, tx, ty, tz)``: the canonical depth-map mesh is rasterized in the view
  (``renderer.rasterize_view``, one pass), giving the depth seen and the canonical position of every
  visible surface point, where the canonical image is sampled (``grid_sample``). This is the exact
  render of the mesh that the model's ``warp_canon_depth`` + ``inverse_warp_grid`` approximate,
* pixels whose visible surface point lies on the head ellipse are foreground; the image is
  composited over a random smooth background, and the ground-truth depth is the rendered depth
  on the foreground, ``max_depth`` elsewhere.

The canonical maps and the mesh are built at the output size (``canonical_supersample = 1``), the
model's own resolution; the view is rasterized at ``supersample`` times the output size, then
images, masks and depth are area-averaged (antialiasing; silhouette depth pixels blend with the
background like the original synface data, whose evaluation erodes the mask by one pixel).

Everything is drawn from one seeded :class:`torch.Generator` per split, all parameters of a split
up front, so the output does not depend on the rendering chunk size; the parameters of every
sample are saved in ``<split>/params.json`` and :func:`render_samples` re-derives any sample.

Output layout (the synface layout read by :class:`~unsup3d.data.Unsup3DDataModule`)::

    <output>/<split>/image/000000_image.png   8-bit RGB
    <output>/<split>/depth/000000_depth.png   16-bit gray, v = (max_depth - depth) / (max_depth - min_depth)
    <output>/<split>/params.json              settings + per-sample parameters
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..depth_encoding import depth_to_uint16
from ..renderer import grid_faces, interpolate_face_attributes, pixel_grid, pixels_to_normalized, shading

__all__ = [
    "PARAM_SPEC",
    "SPLIT_SEED_OFFSETS",
    "SyntheticConfig",
    "background_image",
    "canonical_albedo",
    "canonical_shape",
    "generate_dataset",
    "generate_split",
    "load_split_params",
    "params_from_records",
    "params_to_records",
    "regenerate_sample",
    "render_samples",
    "sample_params",
]

FORMAT_VERSION = 1
SPLIT_SEED_OFFSETS = {"train": 0, "val": 1, "test": 2}


@dataclass
class SyntheticConfig:
    """Rendering and sampling settings (saved with every split).

    Angles are in degrees here; the saved per-sample ``view`` is in radians like the model's.
    The light and viewpoint ranges stay inside what the model can represent (ambient and diffuse
    in [0, 1], light ``dx, dy`` in [-1, 1], rotations within +-60 degrees, translation within 0.1).
    """

    image_size: int = 64
    supersample: int = 2  # the view is rasterized at image_size * supersample, then area-averaged
    canonical_supersample: int = 1  # canonical maps / mesh at image_size * canonical_supersample
    fov: float = 10.0
    min_depth: float = 0.9
    max_depth: float = 1.1
    rot_center_depth: float = 1.0
    yaw_range: float = 50.0
    pitch_range: float = 20.0
    roll_range: float = 10.0
    xy_translation_range: float = 0.01
    ambient_range: tuple[float, float] = (0.2, 0.6)
    diffuse_range: tuple[float, float] = (0.35, 0.8)
    light_xy_range: float = 0.9


# (group, name, size, low, high): every parameter is drawn uniformly from [low, high].
# Shape and albedo positions are in head-relative units: u = x / head_ax, v = (y - head_cy) / head_ay
# (x right, y down, both in [-1, 1] over the image). Depth strengths are in depth units.
PARAM_SPEC: list[tuple[str, str, int, float, float]] = [
    # head: ellipsoid silhouette filling ~60-80% of the image, depth profile (1 - r^2)^power
    ("shape", "head_ax", 1, 0.58, 0.74),
    ("shape", "head_ay", 1, 0.74, 0.9),
    ("shape", "head_cy", 1, -0.04, 0.06),
    ("shape", "rim_depth", 1, 1.035, 1.06),
    ("shape", "relief", 1, 0.045, 0.075),
    ("shape", "power", 1, 0.45, 0.7),
    ("shape", "skirt", 1, 0.06, 0.14),
    # symmetric features (bumps nearer, dents farther)
    ("shape", "brow_v", 1, -0.42, -0.3),
    ("shape", "brow_su", 1, 0.3, 0.5),
    ("shape", "brow_sv", 1, 0.05, 0.09),
    ("shape", "brow_amp", 1, 0.003, 0.01),
    ("shape", "eye_u", 1, 0.28, 0.4),
    ("shape", "eye_v", 1, -0.24, -0.12),
    ("shape", "eye_s", 1, 0.08, 0.13),
    ("shape", "eye_amp", 1, 0.006, 0.016),
    ("shape", "nose_top_v", 1, -0.22, -0.1),
    ("shape", "nose_tip_v", 1, 0.12, 0.26),
    ("shape", "nose_su", 1, 0.05, 0.1),
    ("shape", "nose_amp", 1, 0.008, 0.02),
    ("shape", "tip_s", 1, 0.06, 0.11),
    ("shape", "tip_amp", 1, 0.006, 0.018),
    ("shape", "nostril_u", 1, 0.09, 0.15),
    ("shape", "nostril_s", 1, 0.04, 0.07),
    ("shape", "nostril_amp", 1, 0.002, 0.006),
    ("shape", "cheek_u", 1, 0.35, 0.52),
    ("shape", "cheek_v", 1, 0.04, 0.2),
    ("shape", "cheek_s", 1, 0.14, 0.24),
    ("shape", "cheek_amp", 1, 0.003, 0.01),
    ("shape", "mouth_v", 1, 0.4, 0.52),
    ("shape", "mouth_su", 1, 0.14, 0.24),
    ("shape", "mouth_sv", 1, 0.035, 0.065),
    ("shape", "lips_amp", 1, 0.002, 0.007),
    ("shape", "mouth_line_amp", 1, 0.001, 0.004),
    ("shape", "chin_v", 1, 0.68, 0.8),
    ("shape", "chin_su", 1, 0.14, 0.26),
    ("shape", "chin_sv", 1, 0.07, 0.12),
    ("shape", "chin_amp", 1, 0.003, 0.01),
    # albedo (colours in [0, 1])
    ("albedo", "skin_t", 1, 0.0, 1.0),
    ("albedo", "skin_jitter", 3, -0.06, 0.06),
    ("albedo", "blush", 1, 0.0, 0.12),
    ("albedo", "hair_t", 1, 0.0, 1.0),
    ("albedo", "hair_jitter", 3, -0.05, 0.05),
    ("albedo", "hairline_v", 1, -0.8, -0.5),
    ("albedo", "hair_amp", 1, -0.4, 1.0),  # clamped at 0: about 30% bald
    ("albedo", "brow_dv", 1, -0.06, 0.0),
    ("albedo", "brow_u", 1, 0.24, 0.36),
    ("albedo", "brow_su", 1, 0.09, 0.15),
    ("albedo", "brow_sv", 1, 0.02, 0.04),
    ("albedo", "brow_amp", 1, 0.4, 0.9),
    ("albedo", "sclera_amp", 1, 0.3, 0.8),
    ("albedo", "iris_s", 1, 0.025, 0.04),
    ("albedo", "iris_amp", 1, 0.6, 1.0),
    ("albedo", "lips_amp", 1, 0.3, 0.8),
    ("albedo", "lips_color", 3, 0.0, 1.0),
    # asymmetric part: a small dark mark and a faint coloured stain anywhere on the face
    ("albedo", "mark_uv", 2, -0.6, 0.6),
    ("albedo", "mark_s", 1, 0.025, 0.05),
    ("albedo", "mark_amp", 1, 0.4, 0.9),
    ("albedo", "stain_uv", 2, -0.6, 0.6),
    ("albedo", "stain_s", 2, 0.08, 0.2),
    ("albedo", "stain_color", 3, 0.0, 1.0),
    ("albedo", "stain_amp", 1, 0.0, 0.35),
    # background: a gradient between two colours plus three soft blobs
    ("background", "color0", 3, 0.0, 1.0),
    ("background", "color1", 3, 0.0, 1.0),
    ("background", "angle", 1, 0.0, 2 * math.pi),
    ("background", "blob_xy", 6, -1.0, 1.0),
    ("background", "blob_s", 3, 0.15, 0.5),
    ("background", "blob_color", 9, 0.0, 1.0),
    ("background", "blob_amp", 3, 0.0, 0.7),
]

_SKIN = torch.tensor([[0.96, 0.82, 0.72], [0.86, 0.66, 0.52], [0.66, 0.46, 0.33], [0.38, 0.25, 0.17]])
_HAIR = torch.tensor([[0.08, 0.06, 0.05], [0.3, 0.18, 0.1], [0.55, 0.38, 0.2], [0.85, 0.72, 0.45]])


# ----------------------------------------------------------------------------- parameters


def sample_params(n: int, generator: torch.Generator, cfg: SyntheticConfig | None = None) -> dict:
    """Draw the parameters of ``n`` samples.

    Returns:
        dict of float32 tensors: ``"view"`` ``n x 6`` (radians, ``tz = 0``), ``"light"`` ``n x 4``
        (ambient, diffuse, dx, dy), and ``"<group>.<name>"`` ``n x size`` for every entry of
        :data:`PARAM_SPEC`.
    """
    cfg = cfg or SyntheticConfig()

    def uniform(size, low, high):
        return torch.rand(n, size, generator=generator) * (high - low) + low

    deg = math.pi / 180.0
    view = torch.cat(
        [
            uniform(1, -cfg.pitch_range * deg, cfg.pitch_range * deg),
            uniform(1, -cfg.yaw_range * deg, cfg.yaw_range * deg),
            uniform(1, -cfg.roll_range * deg, cfg.roll_range * deg),
            uniform(2, -cfg.xy_translation_range, cfg.xy_translation_range),
            torch.zeros(n, 1),
        ],
        1,
    )
    light = torch.cat(
        [
            uniform(1, *cfg.ambient_range),
            uniform(1, *cfg.diffuse_range),
            uniform(2, -cfg.light_xy_range, cfg.light_xy_range),
        ],
        1,
    )
    params = {"view": view, "light": light}
    for group, name, size, low, high in PARAM_SPEC:
        params[f"{group}.{name}"] = uniform(size, low, high)
    return params


def _floats(t: torch.Tensor) -> list[float]:
    """float32 values as the shortest decimals that round-trip to the same float32."""
    return [float(str(x)) for x in t.numpy().astype(np.float32)]


def params_to_records(params: dict) -> list[dict]:
    """Per-sample JSON-able dicts ``{"view": [...], "light": {...}, "shape": {...}, ...}``."""
    n = params["view"].shape[0]
    records = []
    for i in range(n):
        light = _floats(params["light"][i])
        rec = {
            "view": _floats(params["view"][i]),
            "light": {"ambient": light[0], "diffuse": light[1], "direction_xy": light[2:]},
        }
        for key, value in params.items():
            if "." in key:
                group, name = key.split(".", 1)
                v = _floats(value[i])
                rec.setdefault(group, {})[name] = v[0] if len(v) == 1 else v
        records.append(rec)
    return records


def params_from_records(records: list[dict]) -> dict:
    """Inverse of :func:`params_to_records` (bit-exact float32 round trip)."""

    def col(get):
        return torch.tensor([np.atleast_1d(get(r)).tolist() for r in records], dtype=torch.float32)

    params = {
        "view": col(lambda r: r["view"]),
        "light": col(lambda r: [r["light"]["ambient"], r["light"]["diffuse"], *r["light"]["direction_xy"]]),
    }
    for group, name, _, _, _ in PARAM_SPEC:
        params[f"{group}.{name}"] = col(lambda r, g=group, k=name: r[g][k])
    return params


# ----------------------------------------------------------------------------- canonical factors


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


def _head_coords(params: dict, size: int):
    x, y = _grid(size)
    u = x / _g(params, "shape.head_ax")
    v = (y - _g(params, "shape.head_cy")) / _g(params, "shape.head_ay")
    return u, v


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


def canonical_albedo(params: dict, size: int, symmetric_only: bool = False) -> torch.Tensor:
    """Canonical albedo ``B x 3 x S x S`` in [0, 1]: a symmetric face plus a small asymmetric part.

    Args:
        symmetric_only: leave out the asymmetric mark and stain (for tests and visualisation).
    """
    a = lambda k: params[f"albedo.{k}"]
    s = lambda k: _g(params, f"shape.{k}")
    col = lambda c: c.view(-1, 3, 1, 1)
    u, v = _head_coords(params, size)
    skin = (_palette(_SKIN, a("skin_t")[:, 0]) + a("skin_jitter")).clamp(0.05, 1)
    hair = (_palette(_HAIR, a("hair_t")[:, 0]) + a("hair_jitter")).clamp(0.02, 1)
    albedo = col(skin).expand(-1, -1, size, size).clone()

    def paint(img, weight, color):
        w = weight.unsqueeze(1).clamp(0, 1)
        return img * (1 - w) + color * w

    red = torch.tensor([0.85, 0.25, 0.25]).view(1, 3, 1, 1)
    cheeks = _g(params, "albedo.blush") * _pair(u, v, s("cheek_u"), s("cheek_v"), s("cheek_s"), s("cheek_s"))
    albedo = paint(albedo, cheeks, red)
    hairline = torch.sigmoid((_g(params, "albedo.hairline_v") - v) / 0.05)
    albedo = paint(albedo, _g(params, "albedo.hair_amp").clamp(min=0) * hairline, col(hair))
    eye_u, eye_v = s("eye_u"), s("eye_v")
    brow_v = s("brow_v") + _g(params, "albedo.brow_dv")
    brows = _pair(
        u, v, _g(params, "albedo.brow_u"), brow_v, _g(params, "albedo.brow_su"), _g(params, "albedo.brow_sv")
    )
    albedo = paint(albedo, _g(params, "albedo.brow_amp") * brows, col(hair) * 0.7)
    sclera = _pair(u, v, eye_u, eye_v, eye_u * 0.3, 0.045)
    albedo = paint(albedo, _g(params, "albedo.sclera_amp") * sclera, torch.full((1, 3, 1, 1), 0.92))
    iris_s = _g(params, "albedo.iris_s")
    albedo = paint(
        albedo,
        _g(params, "albedo.iris_amp") * _pair(u, v, eye_u, eye_v, iris_s, iris_s),
        torch.full((1, 3, 1, 1), 0.08),
    )
    lips_color = col(skin) * 0.5 + col(a("lips_color")) * 0.2 + red * 0.3
    lips = _gauss(u, v, 0.0, s("mouth_v"), s("mouth_su"), s("mouth_sv"))
    albedo = paint(albedo, _g(params, "albedo.lips_amp") * lips, lips_color)
    albedo = (albedo + albedo.flip(-1)) / 2  # bit-exact symmetric part
    if not symmetric_only:
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


def background_image(params: dict, size: int) -> torch.Tensor:
    """Random smooth background ``B x 3 x S x S`` in [0, 1] (not shaded, does not move with the object)."""
    b = lambda k: params[f"background.{k}"]
    x, y = _grid(size)
    ang = b("angle")[:, :1, None]
    t = ((x * ang.cos() + y * ang.sin()) / 2**0.5 + 1) / 2  # in [0, 1]
    img = b("color0").view(-1, 3, 1, 1) * (1 - t.unsqueeze(1)) + b("color1").view(-1, 3, 1, 1) * t.unsqueeze(
        1
    )
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


# ----------------------------------------------------------------------------- rendering


def _make_renderer(cfg: SyntheticConfig, size: int):
    from unsup3d.renderer import Renderer

    return Renderer(
        image_size=size,
        fov=cfg.fov,
        min_depth=cfg.min_depth,
        max_depth=cfg.max_depth,
        rot_center_depth=cfg.rot_center_depth,
        backend="torch",
    )


@torch.no_grad()
def render_samples(params: dict, cfg: SyntheticConfig | None = None, renderer=None) -> dict:
    """Render samples from their parameters, as the model forms images.

    Returns:
        dict with ``"image"`` ``B x 3 x S x S`` in [0, 1], ``"depth"`` ``B x S x S`` ground truth in
        ``[min_depth, max_depth]`` (background ``max_depth``), ``"mask"`` ``B x S x S`` foreground
        coverage in [0, 1], and the canonical factors at ``C = S * canonical_supersample`` (by
        default the output size, like the model's canonical maps): ``"canon_depth"`` ``B x C x C``,
        ``"canon_albedo"`` / ``"canon_image"`` ``B x 3 x C x C``, ``"canon_mask"`` ``B x C x C``.
    """
    cfg = cfg or SyntheticConfig()
    ss = int(cfg.supersample)
    size = cfg.image_size * ss  # render resolution
    csize = cfg.image_size * cfg.canonical_supersample  # canonical maps and mesh resolution
    renderer = renderer or _make_renderer(cfg, size)
    depth, head = canonical_shape(params, csize, cfg.min_depth, cfg.max_depth)
    albedo = canonical_albedo(params, csize)
    light = params["light"]
    normal = renderer.normals(depth)  # B x R x R x 3
    lambert = shading.lambertian(normal, shading.light_direction(light[:, 2:4]))
    canon_image = shading.shade(albedo, shading.shading_map(light[:, 0], light[:, 1], lambert)).clamp(0, 1)

    # One rasterization gives both the depth seen and, per pixel, the canonical position of the
    # visible surface point (perspective-correct), i.e. an exact render of the mesh. The model's
    # inverse warp (renderer.inverse_warp_grid) approximates the same lookup from the depth.
    frags = renderer.rasterize_view(depth, params["view"], image_size=size)
    faces = grid_faces(csize, csize)
    uv = pixel_grid(csize, csize).view(-1, 2)[faces]  # F x 3 x 2 canonical pixel of each corner
    grid = pixels_to_normalized(interpolate_face_attributes(frags, uv), csize, csize)
    far = torch.full_like(frags.zbuf, renderer.background_depth)
    recon_depth = torch.where(frags.mask, frags.zbuf, far)
    warped = F.grid_sample(canon_image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    # foreground: the visible surface point lies on the head (analytic ellipse test, antialiased
    # by the supersampling)
    gx, gy = grid.unbind(-1)
    r2 = (gx / _g(params, "shape.head_ax")) ** 2 + (
        (gy - _g(params, "shape.head_cy")) / _g(params, "shape.head_ay")
    ) ** 2
    alpha = ((r2 < 1) & frags.mask).unsqueeze(1).float()
    image = warped * alpha + background_image(params, size) * (1 - alpha)
    gt = torch.where(alpha[:, 0] > 0.5, recon_depth, torch.full_like(recon_depth, cfg.max_depth))
    gt = gt.clamp(cfg.min_depth, cfg.max_depth)
    if ss > 1:
        image = F.avg_pool2d(image, ss)
        gt = F.avg_pool2d(gt.unsqueeze(1), ss)[:, 0]
        alpha = F.avg_pool2d(alpha, ss)
    return {
        "image": image.clamp(0, 1),
        "depth": gt,
        "mask": alpha[:, 0],
        "canon_depth": depth,
        "canon_albedo": albedo,
        "canon_image": canon_image,
        "canon_mask": head,
    }


# ----------------------------------------------------------------------------- files


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """``3 x H x W`` in [0, 1] -> ``H x W x 3`` uint8 (round to nearest)."""
    return (image.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


def _write(path_img: Path, path_depth: Path, img: np.ndarray, dep: np.ndarray) -> None:
    Image.fromarray(img).save(path_img, compress_level=1)
    if not cv2.imwrite(str(path_depth), dep, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"cannot write '{path_depth}'")


def _dump_meta(meta: dict) -> str:
    """JSON with one line per sample (readable, compact)."""
    head = json.dumps({k: v for k, v in meta.items() if k != "samples"}, indent=1)
    lines = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in meta["samples"])
    return head[:-2] + ',\n "samples": [\n' + lines + "\n ]\n}\n"


def split_seed(seed: int, split: str) -> int:
    return int(seed) * 1000 + SPLIT_SEED_OFFSETS.get(split, 3)


def generate_split(
    output: str | Path,
    split: str,
    num: int,
    seed: int = 0,
    cfg: SyntheticConfig | None = None,
    chunk_size: int = 256,
    progress: bool = False,
) -> Path:
    """Write ``num`` samples of ``split`` under ``<output>/<split>`` (see module docstring).

    Returns:
        The split folder.
    """
    cfg = cfg or SyntheticConfig()
    folder = Path(output) / split
    (folder / "image").mkdir(parents=True, exist_ok=True)
    (folder / "depth").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(split_seed(seed, split))
    params = sample_params(num, generator, cfg)
    records = params_to_records(params)
    renderer = _make_renderer(cfg, cfg.image_size * cfg.supersample)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = []
        for start in range(0, num, chunk_size):
            idx = slice(start, min(start + chunk_size, num))
            out = render_samples({k: v[idx] for k, v in params.items()}, cfg, renderer)
            for j in range(out["image"].shape[0]):
                i = start + j
                name_img, name_dep = f"image/{i:06d}_image.png", f"depth/{i:06d}_depth.png"
                records[i].update(
                    index=i,
                    image=name_img,
                    depth=name_dep,
                    mask_coverage=round(float(out["mask"][j].mean()), 4),
                )
                img = image_to_uint8(out["image"][j])
                dep = depth_to_uint16(out["depth"][j], cfg.min_depth, cfg.max_depth)
                futures.append(pool.submit(_write, folder / name_img, folder / name_dep, img, dep))
            if progress:
                print(f"  {split}: {idx.stop}/{num}", flush=True)
        for f in futures:
            f.result()
    meta = {
        "format_version": FORMAT_VERSION,
        "split": split,
        "seed": int(seed),
        "generator_seed": split_seed(seed, split),
        "num_samples": num,
        "settings": asdict(cfg),
        "conventions": {
            "view": "[rx, ry, rz, tx, ty, tz], radians, R = Rz @ Ry @ Rx about (0, 0, rot_center_depth)",
            "light": "shading = ambient + diffuse * max(0, n . normalize(dx, dy, 1))",
            "depth_png": "16-bit, v = value / 65535, depth = max_depth - (max_depth - min_depth) * v",
            "shape_albedo_units": "u = x / head_ax, v = (y - head_cy) / head_ay, x right, y down in [-1, 1]",
        },
        "samples": records,
    }
    (folder / "params.json").write_text(_dump_meta(meta))
    return folder


def generate_dataset(
    output: str | Path,
    num_train: int = 1000,
    num_val: int = 100,
    num_test: int = 100,
    seed: int = 0,
    cfg: SyntheticConfig | None = None,
    chunk_size: int = 256,
    progress: bool = False,
) -> Path:
    """Write the train/val/test splits of the synthetic dataset under ``output``."""
    for split, n in (("train", num_train), ("val", num_val), ("test", num_test)):
        generate_split(output, split, n, seed, cfg, chunk_size, progress)
    return Path(output)


def load_split_params(split_dir: str | Path) -> tuple[SyntheticConfig, list[dict]]:
    """Settings and per-sample records saved by :func:`generate_split`."""
    meta = json.loads((Path(split_dir) / "params.json").read_text())
    settings = dict(meta["settings"])
    for k in ("ambient_range", "diffuse_range"):
        settings[k] = tuple(settings[k])
    return SyntheticConfig(**settings), meta["samples"]


def regenerate_sample(split_dir: str | Path, index: int) -> dict:
    """Re-render sample ``index`` of a generated split from its saved parameters.

    Returns:
        ``{"image": H x W x 3 uint8, "depth": H x W uint16}``: the values written to its PNG files
        (up to float rounding of a different batch composition).
    """
    cfg, records = load_split_params(split_dir)
    out = render_samples(params_from_records([records[index]]), cfg)
    return {
        "image": image_to_uint8(out["image"][0]),
        "depth": depth_to_uint16(out["depth"][0], cfg.min_depth, cfg.max_depth),
    }
