"""Differentiable rendering of depth-map meshes with the original method's camera conventions."""

from .rasterize import Fragments, grid_faces, interpolate_face_attributes, rasterize
from .renderer import Renderer

__all__ = ["Renderer", "Fragments", "rasterize", "interpolate_face_attributes", "grid_faces"]
