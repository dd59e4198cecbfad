"""Grid meshes from canonical depth maps, and OBJ (+MTL+PNG), GLB and PLY writers.

The model predicts a canonical depth map ``D`` (``H x W``, values around ``[0.9, 1.1]``) and an albedo
texture of the same size. Every pixel ``(i, j)`` (row, column) becomes a vertex, lifted with the model's
pinhole camera (:mod:`unsup3d.renderer.camera`: OpenCV frame, x right, y down, z forward), and every
grid cell becomes two triangles.

Export frame: meshes are written y-up, facing +z (the viewer looks at them along -z, as in glTF/OBJ
viewers): ``x' = x``, ``y' = -y``, ``z' = -(z - z_c)`` -- a 180 degree rotation about x, so handedness
and face orientation are preserved. With ``center=True`` the x/y centroid is subtracted and
``z_c = rot_center_depth`` (1.0, the model's rotation centre); otherwise ``z_c = 0``. Triangles are
counter-clockwise seen from +z, i.e. their normals point towards the viewer.

Texture coordinates put each vertex at the centre of its texel: ``u = (j + 0.5) / W``,
``v = 1 - (i + 0.5) / H`` (OBJ/trimesh convention: v up, the image's first row at the top; trimesh
flips v for glTF itself). ``(i, j)`` index the full, uncropped map, so the full texture is used as is
even when ``crop_border`` trims the mesh.

All writers are atomic (:mod:`unsup3d.files.atomic`); their ``durable`` keyword is that of
:func:`unsup3d.files.atomic.atomic_write` (pass False inside a folder built by
:func:`unsup3d.files.atomic.atomic_dir`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
from PIL import Image

from unsup3d.files.atomic import as_numpy, atomic_save_bytes, atomic_save_text
from unsup3d.files.images import atomic_save_image, to_pil
from unsup3d.renderer import Renderer
from unsup3d.renderer import grid_faces as render_grid_faces
from unsup3d.shape_check import check_shape

__all__ = [
    "MATERIAL_NAME",
    "glb_bytes",
    "grid_faces",
    "grid_mesh",
    "grid_vertices",
    "grid_uvs",
    "grid_vertex_colors",
    "obj_text",
    "texture_to_uint8",
    "to_export_frame",
    "write_glb",
    "write_obj",
    "write_ply",
]

#: Name of the material of OBJ/MTL and GLB files.
MATERIAL_NAME = "material_0"


def _check_border(h: int, w: int, crop_border: int) -> None:
    if crop_border < 0 or h - 2 * crop_border < 2 or w - 2 * crop_border < 2:
        raise ValueError(f"crop_border={crop_border} leaves no grid cell of a {h}x{w} map")


def grid_faces(h: int, w: int) -> np.ndarray:
    """Triangles of an ``h x w`` vertex grid as numpy: exactly :func:`unsup3d.renderer.grid_faces`,
    the faces the renderer rasterizes (the original's triangulation, in its order).

    Vertex ``(i, j)`` has index ``i * w + j``; each cell gives ``(tl, bl, tr)`` and ``(tr, bl, br)``,
    counter-clockwise seen from +z once rows go downwards (-y) in the export frame.

    Returns:
        ``2 (h-1)(w-1) x 3`` int64, an array of the caller's own (not a view of the renderer's table).
    """
    return render_grid_faces(h, w).numpy()


def grid_uvs(h: int, w: int, crop_border: int = 0) -> np.ndarray:
    """Texel-centre UVs of the vertices of an ``h x w`` map trimmed by ``crop_border``.

    Returns:
        ``(h - 2b)(w - 2b) x 2`` float32, ``u = (j + 0.5) / w``, ``v = 1 - (i + 0.5) / h``, in (0, 1).
    """
    b = crop_border
    i, j = np.meshgrid(np.arange(b, h - b), np.arange(b, w - b), indexing="ij")
    uv = np.stack([(j + 0.5) / w, 1.0 - (i + 0.5) / h], axis=-1)
    return uv.reshape(-1, 2).astype(np.float32)


def to_export_frame(points: torch.Tensor, origin: torch.Tensor | None = None) -> torch.Tensor:
    """OpenCV-camera points to the export frame (y up, facing +z): ``(P - origin) * (1, -1, -1)``.

    A 180 degree rotation about x (handedness and face orientation are preserved).

    Args:
        points: ``B x N x 3`` camera-space points.
        origin: ``B x 3`` (or ``3``) point that becomes the origin; default ``0``.

    Returns:
        ``B x N x 3``.
    """
    flip = points.new_tensor([1.0, -1.0, -1.0])
    if origin is None:
        return points * flip
    return (points - origin.reshape(-1, 1, 3)) * flip


def grid_vertices(
    renderer: Renderer,
    depth: torch.Tensor,
    view: torch.Tensor | None = None,
    crop_border: int = 0,
    center: bool = True,
) -> torch.Tensor:
    """Vertices of the grid meshes of a batch of canonical depth maps, in the export frame.

    The points are the renderer's own (:meth:`~unsup3d.renderer.Renderer.depth_to_points`, or
    :meth:`~unsup3d.renderer.Renderer.view_points` for a posed mesh), so an exported mesh is the
    mesh the model rendered.

    Args:
        renderer: the model's renderer (camera and rotation centre).
        depth: ``B x H x W`` canonical depth.
        view: optional ``B x 6`` viewpoint: the canonical mesh moved into that view (the posed mesh;
            its origin is the rotation centre ``(0, 0, rot_center_depth)``, the camera looking
            along -z from ``(0, 0, rot_center_depth)``).
        crop_border: rows/columns trimmed on every side before meshing (the model pins a 2-px border
            at a fixed depth). The camera is that of the full map.
        center: for the canonical mesh, put the x/y centroid at 0 and ``rot_center_depth`` at
            ``z = 0``; otherwise the camera centre is the origin. (Posed meshes are always
            relative to the rotation centre.)

    Returns:
        ``B x V x 3`` with ``V = h w``, ``h = H - 2 b``, ``w = W - 2 b``; vertex ``(i, j)`` of the
        trimmed grid is row ``i * w + j``.
    """
    check_shape(depth, "B x H x W", "depth maps")
    b_, H, W = depth.shape
    b = int(crop_border)
    _check_border(H, W, b)
    pts = renderer.depth_to_points(depth) if view is None else renderer.view_points(depth, view)
    pts = pts[:, b:H - b, b:W - b].reshape(b_, -1, 3)
    zc = renderer.rot_center_depth
    if view is not None:
        origin = pts.new_tensor([0.0, 0.0, zc])
    elif center:
        origin = torch.cat([pts[..., :2].mean(1), pts.new_full((b_, 1), zc)], -1)
    else:
        origin = None
    return to_export_frame(pts, origin)


def grid_mesh(
    depth: Any, fov: float = 10.0, crop_border: int = 0, center: bool = True, rot_center_depth: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical-view grid mesh of one depth map, in the export frame, as numpy.

    A convenience over :func:`grid_vertices` for a single map (a renderer with this ``fov`` and
    ``rot_center_depth``).

    Args:
        depth: ``H x W`` canonical depth (numpy or torch; leading singleton dims are dropped).
        fov: camera field of view in degrees.
        crop_border, center: see :func:`grid_vertices`.

    Returns:
        ``(vertices, faces, uvs)``: ``V x 3`` float32, ``F x 3`` int64, ``V x 2`` float32 with
        ``V = h w``, ``F = 2 (h-1)(w-1)``, ``h = H - 2 b``, ``w = W - 2 b``.
    """
    d = torch.as_tensor(as_numpy(depth), dtype=torch.float32)
    while d.ndim > 2 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2:
        raise ValueError(f"expected a depth map of shape H x W, got {tuple(as_numpy(depth).shape)}")
    H, W = d.shape
    b = int(crop_border)
    _check_border(H, W, b)
    renderer = Renderer(image_size=max(H, W, 2), fov=fov, rot_center_depth=rot_center_depth)
    verts = grid_vertices(renderer, d[None], crop_border=b, center=center)[0].numpy()
    return verts, grid_faces(H - 2 * b, W - 2 * b), grid_uvs(H, W, b)


def texture_to_uint8(texture: Any) -> np.ndarray:
    """``H x W x 3`` uint8 from a texture: ``3 x H x W`` / ``H x W x 3`` float in [0, 1] or uint8, or PIL."""
    return np.asarray(to_pil(texture).convert("RGB"))


def grid_vertex_colors(texture: Any, crop_border: int = 0) -> np.ndarray:
    """Per-vertex colours of a grid mesh: the texture's pixels, trimmed like the mesh.

    Args:
        texture: ``H x W`` texture of the same size as the depth map (see :func:`texture_to_uint8`).

    Returns:
        ``V x 3`` uint8, in the vertex order of :func:`grid_mesh`.
    """
    tex = texture_to_uint8(texture)
    b = int(crop_border)
    _check_border(tex.shape[0], tex.shape[1], b)
    return np.ascontiguousarray(tex[b : tex.shape[0] - b, b : tex.shape[1] - b].reshape(-1, 3))


def _texture_pil(texture: Any, texture_size: int | tuple[int, int] | None = None):
    pil = to_pil(texture).convert("RGB")
    if texture_size is not None:
        size = (texture_size, texture_size) if isinstance(texture_size, int) else tuple(texture_size)
        if pil.size != size:
            pil = pil.resize(size, Image.Resampling.BICUBIC)
    return pil


def _check_mesh(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray | None = None) -> None:
    v = check_shape(vertices, "V x 3", "vertices")["V"]
    check_shape(faces, "F x 3", "faces")
    if faces.size and (faces.min() < 0 or faces.max() >= v):
        raise ValueError("face indices out of range")
    if uvs is not None:
        check_shape(uvs, "V x 2", "uvs", V=v)


def _rows(prefix: str, arr: np.ndarray, fmt: str) -> str:
    """``prefix <fmt % row>`` lines for every row of ``arr`` (``fmt`` covers a whole row).

    The same text as ``numpy.savetxt(buf, arr, fmt=f"{prefix} {fmt}")``, formatted in one ``%`` call
    (several times faster).
    """
    return (f"{prefix} {fmt}\n" * len(arr)) % tuple(np.asarray(arr).ravel().tolist())


def _vt_rows(uvs: np.ndarray) -> str:
    return _rows("vt", uvs, "%.6f %.6f")


def _f_rows(faces: np.ndarray) -> str:
    return _rows("f", np.repeat(faces.astype(np.int64) + 1, 2, axis=1), "%d/%d %d/%d %d/%d")


#: ``(kind, shape, dtype) -> (array, text)`` of recent ``vt`` / ``f`` blocks: every grid mesh of a
#: given size and crop has the same UVs and faces, so exporting many images formats them once.
_ROWS_CACHE: dict[tuple, tuple[np.ndarray, str]] = {}
_ROWS_CACHE_SIZE = 8


def _cached_rows(kind: str, arr: np.ndarray, build) -> str:
    """``build(arr)``, reused while ``arr`` equals the array of the last call with its shape and dtype."""
    key = (kind, arr.shape, arr.dtype.str)
    hit = _ROWS_CACHE.get(key)
    if hit is not None and np.array_equal(hit[0], arr):
        return hit[1]
    text = build(arr)
    if len(_ROWS_CACHE) >= _ROWS_CACHE_SIZE:
        _ROWS_CACHE.clear()
    _ROWS_CACHE[key] = (arr.copy(), text)
    return text


def obj_text(
    vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, mtl_name: str, material: str = MATERIAL_NAME
) -> str:
    """OBJ file content with per-vertex UVs (``f a/a b/b c/c``, 1-based)."""
    vertices, faces, uvs = np.asarray(vertices), np.asarray(faces), np.asarray(uvs)
    header = f"# unsup3d grid mesh: {len(vertices)} vertices, {len(faces)} faces\nmtllib {mtl_name}\n"
    return "".join([
        header,
        _rows("v", vertices, "%.6f %.6f %.6f"),
        _cached_rows("vt", uvs, _vt_rows),
        f"usemtl {material}\n",
        _cached_rows("f", faces, _f_rows),
    ])


def _mtl_text(stem: str, texture_name: str, material: str = MATERIAL_NAME) -> str:
    return (
        f"# unsup3d material for {stem}\nnewmtl {material}\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\n"
        f"Ks 0.000 0.000 0.000\nd 1.0\nillum 1\nmap_Kd {texture_name}\n"
    )


def write_obj(
    path_obj: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    texture_image: Any,
    texture_size: int | tuple[int, int] | None = None,
    *,
    material_file: str | None = None,
    durable: bool = True,
) -> tuple[Path, ...]:
    """Write a textured mesh as ``stem.obj`` + ``stem.mtl`` + ``stem.png`` (same folder).

    Args:
        path_obj: the ``.obj`` path.
        vertices, faces, uvs: ``V x 3``, ``F x 3`` (0-based), ``V x 2`` (v up) as from :func:`grid_mesh`.
        texture_image: ``3 x H x W`` / ``H x W x 3`` float in [0, 1] or uint8, or a PIL image.
        texture_size: resize the texture to this side (int) or ``(width, height)``; None keeps it.
        material_file: name (relative to the OBJ) of an existing ``.mtl`` file with material
            :data:`MATERIAL_NAME` to use instead: only the ``.obj`` is written and ``texture_image``
            is ignored (may be None). For several meshes sharing one texture.
        durable: see :func:`unsup3d.files.atomic.atomic_write`.

    Returns:
        ``(obj, mtl, png)`` paths, or ``(obj,)`` with ``material_file``. The texture and material are
        written before the OBJ, each atomically.
    """
    vertices, faces, uvs = np.asarray(vertices), np.asarray(faces), np.asarray(uvs)
    _check_mesh(vertices, faces, uvs)
    path_obj = Path(path_obj)
    if material_file is not None:
        atomic_save_text(path_obj, obj_text(vertices, faces, uvs, material_file), durable=durable)
        return (path_obj,)
    mtl, png = path_obj.with_suffix(".mtl"), path_obj.with_suffix(".png")
    text = obj_text(vertices, faces, uvs, mtl.name)
    atomic_save_image(png, _texture_pil(texture_image, texture_size), format="PNG", durable=durable)
    atomic_save_text(mtl, _mtl_text(path_obj.stem, png.name), durable=durable)
    atomic_save_text(path_obj, text, durable=durable)
    return path_obj, mtl, png


def glb_bytes(
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    texture_image: Any,
    texture_size: int | tuple[int, int] | None = None,
) -> bytes:
    """The content of the ``.glb`` file :func:`write_glb` writes (arguments as there)."""
    vertices, faces, uvs = np.asarray(vertices), np.asarray(faces), np.asarray(uvs)
    _check_mesh(vertices, faces, uvs)
    material = trimesh.visual.material.PBRMaterial(
        name=MATERIAL_NAME,
        baseColorTexture=_texture_pil(texture_image, texture_size),
        metallicFactor=0.0,
        roughnessFactor=1.0,
    )
    visual = trimesh.visual.TextureVisuals(uv=uvs, material=material)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False)
    return mesh.export(file_type="glb")


def write_glb(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    texture_image: Any,
    texture_size: int | tuple[int, int] | None = None,
    *,
    durable: bool = True,
) -> Path:
    """Write a textured mesh as a single binary glTF (``.glb``) with an embedded PNG texture.

    Unlit-looking PBR material (metallic 0, roughness 1). Vertex count and order are preserved.
    Arguments as :func:`write_obj`. Returns the path.
    """
    return atomic_save_bytes(path, glb_bytes(vertices, faces, uvs, texture_image, texture_size), durable=durable)


def write_ply(
    path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, vertex_colors: Any, *, durable: bool = True
) -> Path:
    """Write a binary PLY with per-vertex RGB colours.

    Args:
        vertex_colors: ``V x 3`` (or ``V x 4``) uint8, or float in [0, 1]; see :func:`grid_vertex_colors`.
        durable: see :func:`unsup3d.files.atomic.atomic_write`.

    Returns:
        The path.
    """
    vertices, faces = np.asarray(vertices), np.asarray(faces)
    _check_mesh(vertices, faces)
    colors = as_numpy(vertex_colors)
    if np.issubdtype(colors.dtype, np.floating):
        colors = np.round(np.clip(colors, 0.0, 1.0) * 255.0)
    colors = colors.astype(np.uint8)
    check_shape(colors, "V x 3 or V x 4", "vertex_colors", V=len(vertices))
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colors, process=False)
    return atomic_save_bytes(path, mesh.export(file_type="ply"), durable=durable)
