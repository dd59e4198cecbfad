"""The parameters of the procedural synthetic faces: settings, what is drawn, and their JSON records.

Everything is drawn from one seeded :class:`torch.Generator` per split (:func:`split_seed`), all
parameters of a split up front (:func:`sample_params`), so the data does not depend on the rendering
chunk size; :func:`params_to_records` / :func:`params_from_records` are the bit-exact float32 round trip
through ``<split>/params.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "ALBEDO_DETAILS",
    "BACKGROUNDS",
    "FOREGROUNDS",
    "FACE_ELLIPSE",
    "PARAM_SPEC",
    "SPLIT_SEED_OFFSETS",
    "SyntheticConfig",
    "VARIANTS",
    "foreground_height",
    "variant_config",
    "params_from_records",
    "params_to_records",
    "sample_params",
    "split_seed",
]

SPLIT_SEED_OFFSETS = {"train": 0, "val": 1, "test": 2}

#: ``foreground``: ``"head"`` (the whole head, with hair) or ``"face"`` (the face only: no hair, ears or
#: neck; the rest of the head is not rendered, so the background shows around the face).
FOREGROUNDS = ("head", "face")
#: ``background``: ``"blobs"`` (a two-colour gradient with three soft blobs), ``"smooth"`` (the gradient
#: only) or ``"noise"`` (multi-octave colour noise over the gradient: fine clutter).
BACKGROUNDS = ("blobs", "smooth", "noise")
#: ``albedo_detail``: ``"plain"`` (skin with faint features, no asymmetric marks), ``"standard"``, or
#: ``"detailed"`` (plus skin texture and asymmetric freckles).
ALBEDO_DETAILS = ("plain", "standard", "detailed")
#: The face region of a ``"face"`` foreground in head coordinates: ``(u / a)^2 + ((v - c) / b)^2 < 1``
#: with ``(a, b, c)``: from the forehead above the brows to below the chin, cheek to cheek.
FACE_ELLIPSE = (0.8, 0.82, 0.08)


@dataclass
class SyntheticConfig:
    """Rendering and sampling settings (saved with every split).

    Angles are in degrees here; the saved per-sample ``view`` is in radians like the model's.
    The viewpoint ranges stay inside what the model can represent (rotations within +-60 degrees,
    translation within 0.1); the light may go beyond it (``light_max_angle`` 60 degrees) on purpose.

    The defaults are the ``head`` variant (:data:`VARIANTS`); the variant settings are:

    * ``foreground`` (:data:`FOREGROUNDS`), ``background`` (:data:`BACKGROUNDS`), ``albedo_detail``
      (:data:`ALBEDO_DETAILS`);
    * ``relief_scale``: ``(low, high)`` factor drawn per sample for the head's relief and every facial
      feature's depth (1 is the ``head`` variant's relief); the rim moves back by half the added relief
      so that the face stays centred in the depth range;
    * ``size_range``: ``(low, high)`` height of the foreground (head or face) as a fraction of the image
      height, drawn per sample (the head's proportions kept); ``None`` keeps the head's own draw
      (74-90 % of the image);
    * ``light_max_angle``: light directions drawn uniformly over the cone of this half-angle (degrees)
      around the camera axis; ``None`` draws ``dx, dy`` uniformly in ``+-light_xy_range`` (up to 52
      degrees off axis in the corners).
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
    light_max_angle: float | None = None
    variant: str = "head"
    foreground: str = "head"
    background: str = "blobs"
    albedo_detail: str = "standard"
    relief_scale: tuple[float, float] = (1.0, 1.0)
    size_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("foreground", FOREGROUNDS), ("background", BACKGROUNDS),
                              ("albedo_detail", ALBEDO_DETAILS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"SyntheticConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("ambient_range", "diffuse_range", "relief_scale", "size_range"):
            rng = getattr(self, name)
            if rng is None and name == "size_range":
                continue
            rng = tuple(float(v) for v in rng)
            if len(rng) != 2 or not 0 <= rng[0] <= rng[1]:
                raise ValueError(f"SyntheticConfig.{name} must be (low, high) with 0 <= low <= high, got {rng}")
            setattr(self, name, rng)
        if self.size_range is not None and not 0 < self.size_range[0] <= self.size_range[1] <= 1:
            raise ValueError(f"SyntheticConfig.size_range must lie in (0, 1], got {self.size_range}")
        if self.light_max_angle is not None and not 0 <= self.light_max_angle < 80:
            raise ValueError(f"SyntheticConfig.light_max_angle must be in [0, 80) degrees, got {self.light_max_angle}")


#: Named variants of the synthetic faces, each a set of :class:`SyntheticConfig` settings over the
#: defaults (``head``), spanning what face collections differ in: whole head or face only; blob, smooth
#: and noise backgrounds; relief from 0.5x to 2x; pose up to yaw +-50, pitch +-20, roll +-15 degrees;
#: light up to 60 degrees off axis with wide ambient / diffuse ranges; foreground height 60-90 % of the
#: image; plain, standard and detailed albedo. ``README.md`` (Results) says which variants the
#: ``synthetic_cpu`` recipe was tuned on and which are held out.
VARIANTS: dict[str, dict] = {
    # whole head with hair, blob backgrounds: the original generator (tuned)
    "head": {},
    # the face only, smooth gradient backgrounds, flatter relief, moderate pose and frontal light (tuned)
    "face": dict(foreground="face", background="smooth", relief_scale=(0.6, 0.9), size_range=(0.7, 0.8),
                 yaw_range=40.0, pitch_range=15.0, roll_range=10.0, light_max_angle=45.0,
                 ambient_range=(0.25, 0.55), diffuse_range=(0.45, 0.75)),
    # deep relief, small heads on noise backgrounds, detailed albedo (tuned)
    "deep": dict(background="noise", albedo_detail="detailed", relief_scale=(1.5, 2.0), size_range=(0.6, 0.7),
                 yaw_range=35.0, pitch_range=15.0, roll_range=10.0, light_max_angle=45.0),
    # large flat faces with plain albedo, wide pose, blob backgrounds (held out)
    "flat": dict(foreground="face", albedo_detail="plain", relief_scale=(0.5, 0.7), size_range=(0.8, 0.9),
                 yaw_range=45.0, pitch_range=20.0, roll_range=15.0, light_max_angle=30.0,
                 ambient_range=(0.3, 0.7), diffuse_range=(0.3, 0.6)),
    # whole heads, wide pose, strong side light with wide ambient / diffuse ranges, smooth backgrounds
    # (held out)
    "wide": dict(background="smooth", relief_scale=(0.8, 1.2), size_range=(0.65, 0.85), yaw_range=45.0,
                 pitch_range=20.0, roll_range=15.0, light_max_angle=60.0, ambient_range=(0.1, 0.7),
                 diffuse_range=(0.2, 0.9)),
    # small faces on noise, detailed albedo, deeper relief, wide pose and light (held out)
    "clutter": dict(foreground="face", background="noise", albedo_detail="detailed", relief_scale=(1.0, 1.5),
                    size_range=(0.6, 0.75), yaw_range=45.0, pitch_range=20.0, roll_range=15.0,
                    light_max_angle=60.0, ambient_range=(0.1, 0.7), diffuse_range=(0.2, 0.9)),
}


def variant_config(name: str, **overrides) -> SyntheticConfig:
    """The :class:`SyntheticConfig` of variant ``name`` (:data:`VARIANTS`), with ``overrides`` on top
    (e.g. ``image_size=32``)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown synthetic variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return SyntheticConfig(**{**VARIANTS[name], "variant": name, **overrides})


def foreground_height(head_ay: torch.Tensor, foreground: str) -> torch.Tensor:
    """Height of the foreground as a fraction of the image height, from the head's vertical semi-axis
    (``head_ay``, in half-image units): the whole head, or the face region (:data:`FACE_ELLIPSE`)."""
    return head_ay * (FACE_ELLIPSE[1] if foreground == "face" else 1.0)


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


def split_seed(seed: int, split: str) -> int:
    return int(seed) * 1000 + SPLIT_SEED_OFFSETS.get(split, 3)


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
    ambient, diffuse = uniform(1, *cfg.ambient_range), uniform(1, *cfg.diffuse_range)
    if cfg.light_max_angle is None:
        light_xy = uniform(2, -cfg.light_xy_range, cfg.light_xy_range)
    else:  # uniform over the cone of directions within light_max_angle of the camera axis
        t = uniform(2, 0.0, 1.0)
        cos_max = math.cos(cfg.light_max_angle * deg)
        theta = torch.acos(1 - t[:, :1] * (1 - cos_max))
        phi = t[:, 1:] * 2 * math.pi
        light_xy = theta.tan() * torch.cat([phi.cos(), phi.sin()], 1)
    light = torch.cat([ambient, diffuse, light_xy], 1)
    params = {"view": view, "light": light}
    for group, name, size, low, high in PARAM_SPEC:
        params[f"{group}.{name}"] = uniform(size, low, high)
    # Variant draws come last, so that the head variant's parameters are those of the original generator.
    relief = uniform(1, *cfg.relief_scale)
    params["variant.relief_scale"] = relief
    for name in RELIEF_KEYS:
        params[f"shape.{name}"] = params[f"shape.{name}"] * relief
    params["shape.rim_depth"] = params["shape.rim_depth"] + (relief - 1) * params["shape.relief"] / relief / 2
    if cfg.size_range is not None:
        height = uniform(1, *cfg.size_range)
        scale = height / foreground_height(params["shape.head_ay"], cfg.foreground)
        params["shape.head_ax"] = params["shape.head_ax"] * scale
        params["shape.head_ay"] = params["shape.head_ay"] * scale
    params["variant.seed"] = torch.randint(0, 2**24, (n, 1), generator=generator).float()
    return params


#: The shape parameters scaled by ``relief_scale``: the head's relief and every feature's depth.
RELIEF_KEYS = tuple(name for group, name, *_ in PARAM_SPEC if group == "shape" and (name == "relief" or name.endswith("_amp")))


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
    # splits written before the variants have no "variant" record: relief 1, seed 0
    params["variant.relief_scale"] = col(lambda r: r.get("variant", {}).get("relief_scale", 1.0))
    params["variant.seed"] = col(lambda r: r.get("variant", {}).get("seed", 0.0))
    return params
