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
    "PARAM_SPEC",
    "SPLIT_SEED_OFFSETS",
    "SyntheticConfig",
    "params_from_records",
    "params_to_records",
    "sample_params",
    "split_seed",
]

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
