"""Visualisations of the model's factors: image panels (:mod:`.panels`) and animations (:mod:`.animation`).

Videos are written by :func:`unsup3d.files.video.write_video`, beside the other file writers.
"""

from .animation import (
    normal_shaded,
    relight_frames,
    relight_images,
    render_views,
    turntable_frames,
    yaw_views,
)
from .panels import (
    FACTOR_IMAGES,
    confidence_to_image,
    depth_to_image,
    factor_images,
    factor_panels,
    frames_to_grids,
    make_grid,
    normal_to_image,
    symmetry_line,
    to_uint8,
)

__all__ = [
    "FACTOR_IMAGES",
    "confidence_to_image",
    "depth_to_image",
    "factor_images",
    "factor_panels",
    "frames_to_grids",
    "make_grid",
    "normal_shaded",
    "normal_to_image",
    "relight_frames",
    "relight_images",
    "render_views",
    "symmetry_line",
    "to_uint8",
    "turntable_frames",
    "yaw_views",
]
