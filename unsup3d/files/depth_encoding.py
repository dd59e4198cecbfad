"""Depth as grey values: one rule, nearer is brighter, for PNG files and every depth image shown.

``v = clip((max_depth - d) / (max_depth - min_depth), 0, 1)``: ``min_depth`` (and nearer) is white,
``max_depth`` (and farther) black. This is the synface/BFM convention of the original data (their
16-bit depth PNGs store ``v``), so the same rule encodes the ground truth written by the synthetic
generator, decodes the datasets' depth files, draws the logged and evaluation depth panels and
writes the exported ``depth.png``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["DEPTH_PNG_MAPPING", "depth_to_unit", "unit_to_depth", "depth_to_uint16"]

#: The mapping, as written into exported ``params.json`` files.
DEPTH_PNG_MAPPING = "v = round(clip((max_depth - d) / (max_depth - min_depth), 0, 1) * 65535)"


def depth_to_unit(depth, min_depth: float, max_depth: float):
    """Grey value ``v = clip((max - d) / (max - min), 0, 1)`` of a depth map (nearer is brighter).

    Args:
        depth: depth of any shape, numpy or torch (torch stays torch: device and dtype kept).

    Returns:
        ``v`` of the same shape and kind, in ``[0, 1]``.
    """
    rng = float(max_depth) - float(min_depth)
    if not rng > 0:
        raise ValueError(f"depth range must satisfy min_depth < max_depth, got {min_depth}, {max_depth}")
    if torch.is_tensor(depth):
        return ((float(max_depth) - depth) / rng).clamp(0.0, 1.0)
    return np.clip((float(max_depth) - np.asarray(depth)) / rng, 0.0, 1.0)


def unit_to_depth(v, min_depth: float, max_depth: float):
    """Inverse of :func:`depth_to_unit` on ``[0, 1]``: ``d = max - (max - min) v``."""
    return float(max_depth) - (float(max_depth) - float(min_depth)) * v


def depth_to_uint16(depth, min_depth: float, max_depth: float) -> np.ndarray:
    """16-bit PNG values ``round(65535 v)`` of a depth map (``v`` from :func:`depth_to_unit`).

    Computed in float64; decoded by :func:`unit_to_depth` after dividing by 65535.

    Args:
        depth: ``H x W`` depth, numpy or torch.

    Returns:
        ``H x W`` uint16.
    """
    if torch.is_tensor(depth):
        depth = depth.detach().cpu().numpy()
    v = depth_to_unit(np.asarray(depth, dtype=np.float64), min_depth, max_depth)
    return np.round(v * 65535.0).astype(np.uint16)
