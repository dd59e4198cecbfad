"""Differentiable rendering of depth-map meshes with the original method's camera conventions.

Modules, one concept each (PyTorch3D's split): :mod:`.camera` (intrinsics, lift/project,
rotations), :mod:`.rasterize` (meshes to fragments, the grid triangulation), :mod:`.shading`
(Lambertian light), :mod:`.precision` (geometry in full precision under autocast),
:mod:`.renderer` (the :class:`Renderer` that composes them) and the optional
:mod:`.pytorch3d_backend`.
"""

from . import camera, shading
from .precision import full_precision, geometry_precision, to_full
from .rasterize import (
    Fragments,
    grid_face_vertices,
    grid_faces,
    interpolate_face_attributes,
    perspective_correct,
    rasterize,
    rasterize_grid,
    screen_barycentrics,
)
from .renderer import Renderer

__all__ = [
    "Renderer",
    "Fragments",
    "rasterize",
    "rasterize_grid",
    "grid_face_vertices",
    "interpolate_face_attributes",
    "grid_faces",
    "screen_barycentrics",
    "perspective_correct",
    "full_precision",
    "geometry_precision",
    "to_full",
    "camera",
    "shading",
]
