"""Writing one item: everything the export makes of one image's factors, in one folder.

Per image ``<output>/<name>/`` (``name`` is the file stem, made unique when two inputs share it) holds:

==========================  ==========================================================================
``mesh.obj/.mtl/.png``      canonical grid mesh (``H W`` vertices, ``2 (H-1)(W-1)`` faces before
                            ``--crop-border``), texture = canonical image or albedo (``--texture``)
``mesh.glb``                the same mesh as binary glTF with the texture embedded
``mesh.ply``                with per-vertex colours (``--formats ...,ply``)
``mesh_posed.*``            the mesh in the input view's pose (``--posed``), same faces, UVs and texture
                            (``mesh_posed.obj`` uses ``mesh.mtl``)
``depth.npy``               canonical depth, ``H x W`` float32, exactly the model's output
``depth.png``               16-bit: ``v = round(clip((max_depth - d) / (max_depth - min_depth), 0, 1) * 65535)``
                            (nearer is brighter; recorded in ``params.json``)
``normal.png``              canonical normals as colours ``(n + 1) / 2`` (model camera frame: x right,
                            y down; a surface facing the camera has ``n = (0, 0, 1)``: (128, 128, 255))
``albedo.png``              canonical albedo
``shading.png``             canonical diffuse shading ``max(0, n . l)``; the full shading is
                            ``ambient + diffuse * shading`` with the values in ``params.json``
``canonical_image.png``     shaded canonical image
``input.png``               the ``S x S`` crop the model saw
``params.json``             viewpoint, light, checkpoint, camera, depth mapping, mesh stats, options
``turntable.mp4``           (``--video``) textured yaw sweep -90..90 degrees; ``turntable_shape.mp4``
                            the shape alone (grey Lambertian); ``relight.mp4`` a light circling the face;
                            ``.gif`` instead with ``--gif``; ``ExportOptions.videos`` picks some
==========================  ==========================================================================

Mesh frame (see :mod:`unsup3d.files.mesh`): y up, the face towards +z (common viewers show it upright and
frontal), x/y centred, z = 0 at the model's rotation centre. The posed mesh is the canonical one warped
by the predicted view, ``P' = R (P - c) + c + t``, in the same axes with the origin at the rotation
centre ``c`` (no x/y centring, so the translation is kept; the camera is at ``(0, 0, rot_center_depth)``
looking along -z).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unsup3d.core import core_of
from unsup3d.files.atomic import atomic_save_json, atomic_save_npy
from unsup3d.files.depth_encoding import DEPTH_PNG_MAPPING, depth_to_uint16
from unsup3d.files.images import atomic_save_image
from unsup3d.files.mesh import (
    grid_faces,
    grid_uvs,
    grid_vertex_colors,
    grid_vertices,
    write_glb,
    write_obj,
    write_ply,
)
from unsup3d.files.video import write_video
from unsup3d.visualize import factor_images, normal_shaded, relight_frames, to_uint8, turntable_frames

from .options import ExportOptions

__all__ = ["FactorArrays", "export_factors"]


class FactorArrays:
    """CPU numpy views of one batch of factors, converted once for all its items.

    The mesh vertices of the whole batch are computed here, in torch, through the renderer
    (:func:`unsup3d.files.mesh.grid_vertices`), and converted to numpy once.
    """

    def __init__(self, factors, model, options: ExportOptions) -> None:
        f = factors
        r = core_of(model).renderer
        depth = f.canon_depth.detach().float()
        with torch.no_grad():
            self.vertices = grid_vertices(r, depth, crop_border=options.crop_border, center=True).cpu().numpy()
            self.posed_vertices = (
                grid_vertices(r, depth, f.view.detach().float(), crop_border=options.crop_border).cpu().numpy()
                if options.posed else None)
        self.depth = depth.cpu().numpy()  # B x H x W
        self.view = f.view.detach().double().cpu().numpy()  # B x 6
        self.ambient = f.light_ambient.detach().double().cpu().numpy()
        self.diffuse = f.light_diffuse.detach().double().cpu().numpy()
        self.direction = f.light_direction.detach().double().cpu().numpy()
        images = factor_images(f, r.min_depth, r.max_depth,
                               ("canon_image", "canon_albedo", "canon_normal", "canon_diffuse_shading", "input"))
        self.canonical = to_uint8(images["canon_image"])  # B x H x W x 3
        self.albedo = to_uint8(images["canon_albedo"])
        self.normal = to_uint8(images["canon_normal"])
        self.shading = to_uint8(images["canon_diffuse_shading"])[..., 0]  # B x H x W
        self.input = to_uint8(images["input"])


def _float_list(a) -> list[float]:
    return [float(v) for v in np.asarray(a).ravel()]


def _mesh_stats(vertices: np.ndarray, faces: np.ndarray) -> dict[str, Any]:
    return {
        "vertices": len(vertices),
        "faces": len(faces),
        "bounds_min": _float_list(vertices.min(0)),
        "bounds_max": _float_list(vertices.max(0)),
    }


def _write_meshes(
    out_dir: Path, stem: str, vertices, faces, uvs, texture: np.ndarray, options: ExportOptions,
    material_file: str | None = None,
) -> list[str]:
    """Write ``stem.obj`` (+ ``stem.mtl`` + ``stem.png`` unless ``material_file`` names an existing material),
    ``stem.glb`` and ``stem.ply`` as ``options.formats`` asks, without per-file fsyncs (``out_dir`` is
    the folder :func:`unsup3d.files.atomic.atomic_dir` is building). Returns the file names."""
    files = []
    if "obj" in options.formats:
        written = write_obj(out_dir / f"{stem}.obj", vertices, faces, uvs, texture, options.texture_size,
                            material_file=material_file, durable=False)
        files += [p.name for p in written]
    if "glb" in options.formats:
        files.append(write_glb(out_dir / f"{stem}.glb", vertices, faces, uvs, texture, options.texture_size,
                               durable=False).name)
    if "ply" in options.formats:
        colors = grid_vertex_colors(texture, options.crop_border)
        files.append(write_ply(out_dir / f"{stem}.ply", vertices, faces, colors, durable=False).name)
    return files


def _write_videos(model, factors, index: int, out_dir: Path, options: ExportOptions) -> list[str]:
    """The turntable (textured and shape-only) and relighting videos of item ``index`` (those in
    ``options.videos``). Returns the file names."""
    core = core_of(model)
    r = core.renderer
    i = slice(index, index + 1)
    depth = factors.canon_depth[i].detach().float()
    tex = (factors.canon_image[i].detach().float().clamp(-1, 1) / 2 + 0.5)
    if options.texture == "albedo":
        tex = factors.canon_albedo[i].detach().float().clamp(-1, 1) / 2 + 0.5
    ext, n, size = options.video_ext, int(options.num_frames), int(options.output_size)
    render = int(options.render_size or min(size, 2 * core.image_size))

    def resized(frames: torch.Tensor) -> torch.Tensor:  # T x 3 x R x R -> T x 3 x S x S
        if frames.shape[-1] == size:
            return frames
        return F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)

    files = []
    with torch.no_grad():
        clips = {}
        turntables = [v for v in ("turntable", "turntable_shape") if v in options.videos]
        if turntables:
            # Both turntables share their views: one rasterization per frame, the two textures as channels.
            textures = {"turntable": tex, "turntable_shape": normal_shaded(r, depth)}
            frames = turntable_frames(r, torch.cat([textures[v] for v in turntables], 1), depth, n, 90.0,
                                      image_size=render)
            clips.update({v: frames[:, 0, 3 * k:3 * k + 3] for k, v in enumerate(turntables)})
        if "relight" in options.videos:
            clips["relight"] = relight_frames(
                r, factors.canon_albedo[i].detach().float(), depth, factors.light_ambient[i].detach().float(),
                factors.light_diffuse[i].detach().float(), n, image_size=render)[:, 0]
        # Each video is encoded by its own ffmpeg process: run them side by side (the threads only wait
        # on the processes' pipes).
        with ThreadPoolExecutor(max_workers=len(options.videos) or 1) as pool:
            jobs = [pool.submit(write_video, out_dir / f"{name}{ext}", resized(clips[name]).clamp(0, 1).cpu(),
                                fps=options.fps, durable=False) for name in options.videos]
            files += [job.result().name for job in jobs]
    return files


def export_factors(
    factors,
    index: int,
    out_dir: str | os.PathLike,
    options: ExportOptions,
    model,
    info: dict[str, Any] | None = None,
    batch: FactorArrays | None = None,
) -> dict[str, Any]:
    """Write every output of item ``index`` of a batch of factors into ``out_dir``.

    Args:
        factors: :class:`~unsup3d.factors.Factors` of a batch (``B`` items, ``H x W`` maps).
        index: the item.
        out_dir: folder to write into (created if missing). Each file is written atomically but not
            fsynced (``durable=False``): :func:`export_images` passes the temporary folder of
            :func:`unsup3d.files.atomic.atomic_dir`, which makes the whole folder appear at once.
        options: what to write.
        model: the :class:`~unsup3d.core.Unsup3DCore` (or training module) that produced ``factors`` (camera, depth range and
            renderer; it is not run again).
        info: extra entries for ``params.json`` (``input``, ``checkpoint``...).
        batch: the factors already converted to numpy (an internal speed-up for whole batches).

    Returns:
        The ``params.json`` content (also written).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    b = batch if batch is not None else FactorArrays(factors, model, options)
    core = core_of(model)
    depth = b.depth[index]
    texture = b.albedo[index] if options.texture == "albedo" else b.canonical[index]
    files: list[str] = []

    h, w = depth.shape
    verts, uvs = b.vertices[index], grid_uvs(h, w, options.crop_border)
    faces = grid_faces(h - 2 * options.crop_border, w - 2 * options.crop_border)
    files += _write_meshes(out_dir, "mesh", verts, faces, uvs, texture, options)
    mesh_info = {
        "frame": "y up, facing +z (towards the viewer), x/y centred, z = 0 at the rotation centre",
        "grid": [int(depth.shape[0] - 2 * options.crop_border), int(depth.shape[1] - 2 * options.crop_border)],
        "crop_border": int(options.crop_border),
        "texture": options.texture,
        "texture_size": int(options.texture_size or depth.shape[-1]),
        "uv": "u = (j + 0.5) / W, v = 1 - (i + 0.5) / H (texel centres of the full map)",
        **_mesh_stats(verts, faces),
    }
    if options.posed:
        pverts = b.posed_vertices[index]
        files += _write_meshes(out_dir, "mesh_posed", pverts, faces, uvs, texture, options,
                               material_file="mesh.mtl")
        mesh_info["posed"] = {
            "frame": "canonical mesh warped by the view, P' = R (P - c) + c + t, in the export axes with "
                     "the origin at c = (0, 0, rot_center_depth); camera at (0, 0, rot_center_depth) "
                     "looking along -z",
            **_mesh_stats(pverts, faces),
        }

    min_d, max_d = core.min_depth, core.max_depth
    atomic_save_npy(out_dir / "depth.npy", np.ascontiguousarray(depth, dtype=np.float32), durable=False)
    atomic_save_image(out_dir / "depth.png", depth_to_uint16(depth, min_d, max_d), format="PNG", durable=False)
    files += ["depth.npy", "depth.png"]
    for name, arr in (("normal", b.normal), ("albedo", b.albedo), ("shading", b.shading),
                      ("canonical_image", b.canonical), ("input", b.input)):
        atomic_save_image(out_dir / f"{name}.png", arr[index], format="PNG", durable=False)
        files.append(f"{name}.png")
    if options.video:
        files += _write_videos(model, factors, index, out_dir, options)

    rx, ry, rz, tx, ty, tz = (float(v) for v in b.view[index])
    params: dict[str, Any] = {
        **(info or {}),
        "view": {
            "rx_deg": math.degrees(rx), "ry_deg": math.degrees(ry), "rz_deg": math.degrees(rz),
            "rx_rad": rx, "ry_rad": ry, "rz_rad": rz, "tx": tx, "ty": ty, "tz": tz,
            "convention": "R = Rz Ry Rx; P' = R (P - c) + c + t with c = (0, 0, rot_center_depth); "
                          "camera frame x right, y down, z forward",
        },
        "light": {
            "ambient": float(b.ambient[index]),
            "diffuse": float(b.diffuse[index]),
            "direction": _float_list(b.direction[index]),
            "shading": "ambient + diffuse * max(0, n . direction)",
        },
        "camera": {
            "image_size": core.image_size,
            "fov_deg": core.fov,
            "min_depth": min_d,
            "max_depth": max_d,
            "rot_center_depth": core.rot_center_depth,
            "border_depth": core.border_depth,
        },
        "depth": {
            "npy": "canonical depth, float32 H x W, as the model produced it",
            "png_mapping": DEPTH_PNG_MAPPING,
            "png_dtype": "uint16",
            "nearer_is_brighter": True,
            "min": float(depth.min()), "max": float(depth.max()), "mean": float(depth.mean()),
        },
        "mesh": mesh_info,
        "options": options.to_json(),
    }
    params["files"] = sorted([*files, "params.json"])
    atomic_save_json(out_dir / "params.json", params, durable=False)
    return params
