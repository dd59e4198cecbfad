"""Differentiable rendering of depth-map meshes with the original method's camera conventions.

Modules, one concept each (PyTorch3D's split): :mod:`.camera` (intrinsics, lift/project,
rotations, the viewpoint warp and mirror, normals), :mod:`.rasterize` (the general reference
rasterizer: triangle meshes to fragments), :mod:`.grid` (the grid triangulation of depth maps and its
specialised rasterizer, with the winner interpolation that :mod:`unsup3d.fused` compiles), :mod:`.shading`
(Lambertian light), :mod:`.precision` (geometry in full precision under autocast),
:mod:`.renderer` (the :class:`Renderer` that composes them) and the optional
:mod:`.pytorch3d_backend`.

This namespace is the renderer's public face: code outside ``unsup3d/renderer/`` imports from
``unsup3d.renderer`` only (the camera ops below, or the ``camera`` and ``shading`` modules as a
whole), never from its files.
"""

from . import camera, shading
from .camera import (
    VIEW_MIRROR_SIGNS,
    depth_tilt,
    ellipsoid_depth,
    euler_to_rotation_matrix,
    fit_plane,
    intrinsics,
    intrinsics_values,
    inverse_transform_points,
    lift_depth,
    mirror_view,
    normal_cross_products,
    normals_from_points,
    pixel_grid,
    pixels_to_normalized,
    project,
    shift_view,
    split_view,
    transform_points,
    turn_about,
)
from .grid import grid_face_vertices, grid_faces, rasterize_grid
from .precision import full_precision, geometry_precision, to_full
from .rasterize import (
    Fragments,
    interpolate_face_attributes,
    perspective_correct,
    rasterize,
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
    "VIEW_MIRROR_SIGNS",
    "depth_tilt",
    "ellipsoid_depth",
    "fit_plane",
    "euler_to_rotation_matrix",
    "intrinsics",
    "intrinsics_values",
    "inverse_transform_points",
    "shift_view",
    "turn_about",
    "lift_depth",
    "mirror_view",
    "normal_cross_products",
    "normals_from_points",
    "pixel_grid",
    "pixels_to_normalized",
    "project",
    "split_view",
    "transform_points",
]
