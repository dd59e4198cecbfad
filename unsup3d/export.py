"""Export meshes, factor maps and videos for photos with a trained model (``unsup3d-export``).

    unsup3d-export --checkpoint ckpt.ckpt --output out/ photos/ more/*.jpg one.png [--video] [--posed]
    python scripts/export.py --help

Library functions (the CLI :func:`main` is a thin layer over them):

* :func:`collect_inputs` expands files, folders (recursively) and glob patterns into image paths.
* :func:`prepare_input` / :func:`prepare_image` load one photo robustly (:mod:`unsup3d.images`) and crop
  it to the model's ``S x S`` input, optionally around the largest detected face.
* :func:`export_factors` writes everything for one item of a batch of :class:`~unsup3d.factors.Factors`.
* :func:`export_images` runs the model over many photos in batches, each result written into its own
  folder atomically, and returns an :class:`ExportSummary`.

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
                            ``.gif`` instead with ``--gif``
==========================  ==========================================================================

Mesh frame (see :mod:`unsup3d.mesh`): y up, the face towards +z (common viewers show it upright and
frontal), x/y centred, z = 0 at the model's rotation centre. The posed mesh is the canonical one warped
by the predicted view, ``P' = R (P - c) + c + t``, in the same axes with the origin at the rotation
centre ``c`` (no x/y centring, so the translation is kept; the camera is at ``(0, 0, rot_center_depth)``
looking along -z).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import glob
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unsup3d.depth_encoding import DEPTH_PNG_MAPPING, depth_to_uint16
from unsup3d.images import (
    FACE_SCALE,
    FACE_SHIFT,
    IMAGE_EXTENSIONS,
    FaceNotFoundError,
    center_crop_square,
    center_square_box,
    crop_face,
    detect_face_box,
    face_crop_box,
    find_images,
    is_image_file,
    load_image,
    oriented_size,
    resize_for_model,
)
from unsup3d.io import atomic_save_image, atomic_save_json, atomic_save_npy
from unsup3d.mesh import grid_faces, grid_uvs, grid_vertices

__all__ = [
    "DEPTH_PNG_MAPPING",
    "IMAGE_EXTENSIONS",
    "ExportOptions",
    "ExportSummary",
    "ImageResult",
    "InputError",
    "OutputDirError",
    "PreparedInput",
    "WandbLogger",
    "assign_output_names",
    "build_parser",
    "check_output_dir",
    "collect_inputs",
    "export_factors",
    "export_images",
    "main",
    "prepare_image",
    "prepare_input",
]

MESH_FORMATS = ("obj", "glb", "ply")
TEXTURES = ("canonical", "albedo")
_GLOB_CHARS = frozenset("*?[")


class InputError(ValueError):
    """An input argument names nothing usable (missing path, empty folder, pattern without matches)."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{reason}: {self.path!r}")


class OutputDirError(OSError):
    """The output folder cannot be created or written."""


# ============================================================================================== options
@dataclass
class ExportOptions:
    """What to write and how (the CLI flags of the same names).

    Attributes:
        formats: mesh formats, any of ``obj``, ``glb``, ``ply``.
        texture: ``"canonical"`` (shaded canonical image) or ``"albedo"`` (unlit).
        texture_size: side of the texture PNGs (None: the model's image size).
        crop_border: rows/columns trimmed on every side of the mesh grid.
        posed: also write ``mesh_posed.*`` in the input view's pose.
        detect_face: crop around the largest human face (OpenCV Haar cascade) before resizing.
        background: RGB (0..255) behind transparent pixels of RGBA inputs.
        video: write the turntable and relighting videos; ``gif`` writes them as GIFs.
        num_frames, fps, output_size: video frames per clip, frame rate and frame side in pixels.
        batch_size: images per model call.
        overwrite: replace existing output folders (otherwise those images are skipped).
        progress: show a progress bar (stderr).
    """

    formats: tuple[str, ...] = ("obj", "glb")
    texture: str = "canonical"
    texture_size: int | None = None
    crop_border: int = 0
    posed: bool = False
    detect_face: bool = False
    background: tuple[int, int, int] = (255, 255, 255)
    video: bool = False
    gif: bool = False
    num_frames: int = 30
    fps: float = 15.0
    output_size: int = 256
    batch_size: int = 16
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.formats = tuple(dict.fromkeys(f.strip().lower() for f in self.formats if f.strip()))
        bad = [f for f in self.formats if f not in MESH_FORMATS]
        if bad:
            raise ValueError(f"unknown mesh format(s) {bad}; choose from {list(MESH_FORMATS)}")
        if self.texture not in TEXTURES:
            raise ValueError(f"texture must be one of {list(TEXTURES)}, got {self.texture!r}")
        if self.texture_size is not None and int(self.texture_size) < 1:
            raise ValueError(f"texture size must be positive, got {self.texture_size}")
        if int(self.crop_border) < 0:
            raise ValueError(f"crop border must be >= 0, got {self.crop_border}")
        for name in ("num_frames", "output_size", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be positive, got {getattr(self, name)}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if len(self.background) != 3 or not all(0 <= int(c) <= 255 for c in self.background):
            raise ValueError(f"background must be three values in 0..255, got {self.background}")
        self.background = tuple(int(c) for c in self.background)
        if self.gif:
            self.video = True

    @property
    def video_ext(self) -> str:
        return ".gif" if self.gif else ".mp4"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["formats"], d["background"] = list(self.formats), list(self.background)
        return d


# =============================================================================================== inputs
def _expand_one(arg: str) -> list[Path]:
    """The image files named by one argument (a file, a folder or a glob pattern)."""
    path = Path(arg).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = find_images(path)
        if not found:
            raise InputError(arg, f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder")
        return found
    if path.exists():
        raise InputError(arg, "not a regular file or folder")
    if _GLOB_CHARS & set(arg):
        found = sorted(
            Path(p) for p in glob.glob(os.path.expanduser(arg), recursive=True)
            if Path(p).is_file() and is_image_file(p)
        )
        if not found:
            raise InputError(arg, "no image files match the pattern")
        return found
    raise InputError(arg, "input not found")


def collect_inputs(
    paths: Iterable[str | os.PathLike],
    errors: list[tuple[str, str]] | None = None,
    exclude: str | os.PathLike | None = None,
) -> list[Path]:
    """Expand inputs into a list of image files.

    Files are kept whatever their extension (loading reports non-images); folders are searched
    recursively and glob patterns (``*``, ``?``, ``[...]``, ``**``) expanded, both keeping files with a
    common image extension (:data:`IMAGE_EXTENSIONS`, case-insensitive) and, for folders, skipping
    hidden files and folders. Order: the arguments' order, sorted within a folder or pattern; a file
    reached twice is kept once.

    Args:
        paths: files, folders and patterns.
        errors: when given, arguments naming nothing usable are appended as ``(argument, message)``
            and skipped; otherwise the first one raises.
        exclude: a folder whose files are never picked up by folder/pattern expansion (the output
            folder, so re-running on a parent folder does not export the exports).

    Returns:
        Image paths.

    Raises:
        InputError: a missing path, a folder without images or a pattern without matches (only
            when ``errors`` is None).
    """
    excl = Path(exclude).resolve() if exclude is not None else None
    out: list[Path] = []
    seen: set[Path] = set()
    for arg in paths:
        arg = os.fspath(arg)
        try:
            found = _expand_one(arg)
        except InputError as exc:
            if errors is None:
                raise
            errors.append((arg, str(exc)))
            continue
        explicit = len(found) == 1 and Path(arg).expanduser().is_file()
        for p in found:
            key = p.resolve()
            if key in seen:
                continue
            if not explicit and excl is not None and key.is_relative_to(excl):
                continue
            seen.add(key)
            out.append(p)
    return out


def _clean_stem(stem: str) -> str:
    name = "".join("_" if (c in '/\\:\0' or ord(c) < 32) else c for c in stem).strip(" .")
    return name or "image"


def assign_output_names(paths: Sequence[Path]) -> list[str]:
    """Unique output folder names: the file stem, ``stem_2``, ``stem_3``... for repeated stems.

    Names are compared case-insensitively (for case-insensitive file systems), and a suffixed name
    never takes another input's plain stem. Leading/trailing dots and spaces and path separators are
    removed (a file ``..png`` cannot write into the output folder itself).
    """
    stems = [_clean_stem(Path(p).stem) for p in paths]
    taken = {s.lower() for s in stems}
    used: set[str] = set()
    names = []
    for stem in stems:
        name, k = stem, 2
        while name.lower() in used or (name != stem and name.lower() in taken):
            name, k = f"{stem}_{k}", k + 1
        used.add(name.lower())
        names.append(name)
    return names


@dataclass
class PreparedInput:
    """One photo ready for the model.

    Attributes:
        image: ``S x S x 3`` uint8 RGB, the model's input.
        source_size: ``(width, height)`` of the photo as viewers show it (after EXIF orientation).
        crop_box: ``(x0, y0, x1, y1)`` of the square that was resized to ``S x S``, in ``source_size``
            pixels (may extend past the photo where a face crop was edge-padded).
        face_box: ``(x, y, w, h)`` of the detected face (source pixels), or None.
    """

    image: np.ndarray
    source_size: tuple[int, int]
    crop_box: tuple[float, float, float, float]
    face_box: tuple[float, float, float, float] | None = None


def prepare_input(
    path: str | os.PathLike,
    size: int,
    detect_face: bool = False,
    background: tuple[int, int, int] = (255, 255, 255),
) -> PreparedInput:
    """Load a photo and turn it into the model's ``size x size`` input.

    Without ``detect_face``: centre square crop, then the demo's resize (halving with area averaging
    while more than twice the target, then bilinear); huge JPEGs are downscaled while decoding. With
    ``detect_face``: the largest frontal face (OpenCV Haar cascade, on a copy whose shorter side is at
    most ~1024 px) is cropped with the original demo's margins (a square of about 1.1x the detection,
    shifted down, edge-replicated where it leaves the photo) before resizing.

    Raises:
        unsup3d.images.ImageLoadError: unreadable, not an image, truncated, too small or too large.
        unsup3d.images.FaceNotFoundError: ``detect_face`` and no face was found.
    """
    path = Path(path)
    img = load_image(path, background=background, draft_size=1024 if detect_face else 2 * size)
    h, w = img.shape[:2]
    src = oriented_size(path, (w, h))
    scale = src[0] / w
    face = None
    if detect_face:
        box = detect_face_box(img)
        if box is None:
            raise FaceNotFoundError(str(path), "no human face detected (OpenCV Haar cascade)")
        square = crop_face(img, box, scale=FACE_SCALE, shift=FACE_SHIFT)
        crop = face_crop_box(box, scale=FACE_SCALE, shift=FACE_SHIFT)  # the square crop_face cut
        face = tuple(float(v * scale) for v in box)
    else:
        square = center_crop_square(img)
        crop = center_square_box(h, w)  # the square center_crop_square cut
    image = resize_for_model(square, size)
    return PreparedInput(
        image=np.ascontiguousarray(image, dtype=np.uint8),
        source_size=src,
        crop_box=tuple(float(v * scale) for v in crop),
        face_box=face,
    )


def prepare_image(
    path: str | os.PathLike, size: int, detect_face: bool = False, background: tuple[int, int, int] = (255, 255, 255)
) -> np.ndarray:
    """The model input of a photo: ``size x size x 3`` uint8 RGB (see :func:`prepare_input`)."""
    return prepare_input(path, size, detect_face, background).image


# ============================================================================================== outputs
def check_output_dir(path: str | os.PathLike) -> Path:
    """Create the output folder if needed and check that files can be created in it.

    Raises:
        OutputDirError: it is a file, cannot be created, or is not writable (message names it).
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputDirError(errno.ENOTDIR, f"output path {str(path)!r} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(exc.errno, f"cannot create output folder {str(path)!r}: "
                                        f"{exc.strerror or exc}") from exc
    try:
        fd, tmp = tempfile.mkstemp(prefix=".unsup3d-write-test-", dir=path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OutputDirError(exc.errno, f"output folder {str(path)!r} is not writable: "
                                        f"{exc.strerror or exc}") from exc
    return path


def _to_u8(x) -> np.ndarray:
    """``B x C x H x W`` tensor in [0, 1] -> ``B x H x W x C`` uint8 numpy."""

    x = torch.as_tensor(x).detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


class _Batch:
    """CPU numpy views of one batch of factors, converted once for all its items.

    The mesh vertices of the whole batch are computed here, in torch, through the renderer
    (:func:`unsup3d.mesh.grid_vertices`), and converted to numpy once.
    """

    def __init__(self, factors, model, options: ExportOptions) -> None:
        f = factors
        r = model.renderer
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
        self.canonical = _to_u8(f.canon_image.clamp(-1, 1) / 2 + 0.5)  # B x H x W x 3
        self.albedo = _to_u8(f.canon_albedo.clamp(-1, 1) / 2 + 0.5)
        self.normal = _to_u8(f.canon_normal.permute(0, 3, 1, 2) / 2 + 0.5)
        self.shading = _to_u8(f.canon_diffuse_shading)[..., 0]  # B x H x W
        self.input = _to_u8(f.input / 2 + 0.5)


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
    the folder :func:`unsup3d.io.atomic_dir` is building). Returns the file names."""
    from unsup3d.mesh import grid_vertex_colors, write_glb, write_obj, write_ply

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
    from unsup3d.io import write_video
    from unsup3d.visualize import normal_shaded, relight_frames, turntable_frames

    r = model.renderer
    i = slice(index, index + 1)
    depth = factors.canon_depth[i].detach().float()
    tex = (factors.canon_image[i].detach().float().clamp(-1, 1) / 2 + 0.5)
    if options.texture == "albedo":
        tex = factors.canon_albedo[i].detach().float().clamp(-1, 1) / 2 + 0.5
    ext, n, size = options.video_ext, int(options.num_frames), int(options.output_size)
    files = []
    with torch.no_grad():
        clips = {
            "turntable": lambda: turntable_frames(r, tex, depth, n, 90.0, image_size=size),
            "turntable_shape": lambda: turntable_frames(r, normal_shaded(r, depth), depth, n, 90.0,
                                                        image_size=size),
            "relight": lambda: relight_frames(
                r, factors.canon_albedo[i].detach().float(), depth, factors.light_ambient[i].detach().float(),
                factors.light_diffuse[i].detach().float(), n, image_size=size),
        }
        for name, render in clips.items():
            frames = render()[:, 0].clamp(0, 1)  # T x 3 x S' x S'
            files.append(write_video(out_dir / f"{name}{ext}", frames.cpu(), fps=options.fps, durable=False).name)
    return files


def export_factors(
    factors,
    index: int,
    out_dir: str | os.PathLike,
    options: ExportOptions,
    model,
    info: dict[str, Any] | None = None,
    batch: _Batch | None = None,
) -> dict[str, Any]:
    """Write every output of item ``index`` of a batch of factors into ``out_dir``.

    Args:
        factors: :class:`~unsup3d.factors.Factors` of a batch (``B`` items, ``H x W`` maps).
        index: the item.
        out_dir: folder to write into (created if missing). Each file is written atomically but not
            fsynced (``durable=False``): :func:`export_images` passes the temporary folder of
            :func:`unsup3d.io.atomic_dir`, which makes the whole folder appear at once.
        options: what to write.
        model: the :class:`~unsup3d.model.Unsup3D` that produced ``factors`` (camera, depth range and
            renderer; it is not run again).
        info: extra entries for ``params.json`` (``input``, ``checkpoint``...).
        batch: the factors already converted to numpy (an internal speed-up for whole batches).

    Returns:
        The ``params.json`` content (also written).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    b = batch if batch is not None else _Batch(factors, model, options)
    hp = model.hparams
    r = model.renderer
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

    min_d, max_d = float(hp.min_depth), float(hp.max_depth)
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
            "image_size": int(hp.image_size),
            "fov_deg": float(hp.fov),
            "min_depth": min_d,
            "max_depth": max_d,
            "rot_center_depth": float(r.rot_center_depth),
            "border_depth": float(getattr(model, "border_depth", float("nan"))),
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


# ============================================================================================= running
@dataclass
class ImageResult:
    """Outcome of one input: ``status`` is ``"ok"``, ``"failed"`` or ``"skipped"``."""

    input: str
    status: str
    message: str = ""
    output: str | None = None


@dataclass
class ExportSummary:
    """All outcomes of an export run, in input order."""

    results: list[ImageResult] = field(default_factory=list)
    seconds: float = 0.0

    def _with(self, status: str) -> list[ImageResult]:
        return [r for r in self.results if r.status == status]

    @property
    def ok(self) -> list[ImageResult]:
        return self._with("ok")

    @property
    def failed(self) -> list[ImageResult]:
        return self._with("failed")

    @property
    def skipped(self) -> list[ImageResult]:
        return self._with("skipped")

    @property
    def exit_code(self) -> int:
        """0 when nothing failed (skipped images are not failures), else 1."""
        return 1 if self.failed else 0

    def report(self) -> str:
        """Human-readable summary: counts, then one line per failure and skip."""
        head = (f"{len(self.ok)} ok, {len(self.failed)} failed, {len(self.skipped)} skipped "
                f"({len(self.results)} inputs, {self.seconds:.1f} s)")
        lines = [head]
        lines += [f"  FAILED  {r.input}: {r.message}" for r in self.failed]
        lines += [f"  skipped {r.input}: {r.message}" for r in self.skipped]
        return "\n".join(lines)


def _error_message(exc: BaseException) -> str:
    from unsup3d.images import FaceNotFoundError, ImageLoadError

    if isinstance(exc, (ImageLoadError, FaceNotFoundError, InputError)):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot write outputs: {exc}"
    return f"{type(exc).__name__}: {exc}"


def export_images(
    model,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    options: ExportOptions | None = None,
    checkpoint: str | None = None,
    input_errors: Sequence[tuple[str, str]] = (),
    logger=None,
) -> ExportSummary:
    """Export every image: load, run the model in batches, write each result folder atomically.

    Per image the folder ``out_dir/<name>`` (:func:`assign_output_names`) is built in a temporary
    sibling and renamed into place when complete, so an interrupted run leaves no half folder. An
    existing folder is skipped unless ``options.overwrite``. A failing image (unreadable, no face,
    write error) is recorded and the others continue.

    Args:
        model: an :class:`~unsup3d.model.Unsup3D` (put in eval mode; run on its current device).
        paths: image files (see :func:`collect_inputs`).
        out_dir: output folder (created).
        options: :class:`ExportOptions` (defaults when None).
        checkpoint: recorded in ``params.json``.
        input_errors: ``(argument, message)`` of inputs that could not be expanded, reported as failed.
        logger: optional callable ``logger(name, folder, params)`` called after each successful image.

    Returns:
        :class:`ExportSummary` in input order (input errors first).
    """
    from unsup3d.io import atomic_dir

    options = options or ExportOptions()
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary([ImageResult(arg, "failed", msg) for arg, msg in input_errors])
    paths = [Path(p) for p in paths]
    names = assign_output_names(paths)
    size = int(model.hparams.image_size)
    device = next(model.parameters()).device
    model.eval()
    bar = _progress(len(paths), options.progress)

    def note(result: ImageResult) -> None:
        summary.results.append(result)
        if result.status != "ok":
            bar.write(f"{result.status}: {result.input}: {result.message}", file=sys.stderr)
        bar.update(1)

    try:
        for s in range(0, len(paths), options.batch_size):
            items = []
            for path, name in zip(paths[s:s + options.batch_size], names[s:s + options.batch_size]):
                target = out_dir / name
                if target.exists() and not options.overwrite:
                    note(ImageResult(str(path), "skipped", f"output folder {str(target)!r} exists "
                                                           "(use --overwrite to replace it)", str(target)))
                    continue
                try:
                    items.append((path, target, prepare_input(path, size, options.detect_face, options.background)))
                except Exception as exc:  # noqa: BLE001 - one bad image must not stop the others
                    note(ImageResult(str(path), "failed", _error_message(exc)))
            if not items:
                continue
            # B x 3 x S x S in [0, 1]; made contiguous: a permuted (channels-last) input sends the convolutions
            # down a slower path at small batch sizes
            batch = torch.from_numpy(np.stack([it[2].image for it in items])).permute(0, 3, 1, 2).contiguous()
            batch = batch.to(device=device, dtype=torch.float32).div_(255.0)
            try:
                with torch.inference_mode():
                    factors = model(batch)
                arrays = _Batch(factors, model, options)
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory: fail this batch only
                for path, _, _ in items:
                    note(ImageResult(str(path), "failed", f"model failed on this batch: {_error_message(exc)}"))
                continue
            for i, (path, target, prep) in enumerate(items):
                info = {
                    "input": {
                        "path": str(path.resolve()),
                        "name": target.name,
                        "source_size": list(prep.source_size),
                        "crop_box": list(prep.crop_box),
                        "face_detection": bool(options.detect_face),
                        "face_box": list(prep.face_box) if prep.face_box is not None else None,
                    },
                    "checkpoint": checkpoint,
                }
                try:
                    # files inside are written without per-file fsyncs, and none for the folder either:
                    # it appears whole or not at all, and fsyncs would cost more than the model pass
                    with atomic_dir(target, overwrite=options.overwrite, durable=False) as tmp:
                        params = export_factors(factors, i, tmp, options, model, info, batch=arrays)
                except FileExistsError as exc:
                    note(ImageResult(str(path), "skipped", f"{exc.strerror or exc} (use --overwrite)", str(target)))
                    continue
                except Exception as exc:  # noqa: BLE001
                    note(ImageResult(str(path), "failed", _error_message(exc)))
                    continue
                if logger is not None:
                    try:
                        logger(target.name, target, params)
                    except Exception as exc:  # noqa: BLE001 - logging must not lose exported results
                        bar.write(f"warning: W&B logging failed for {path}: {exc}", file=sys.stderr)
                note(ImageResult(str(path), "ok", "", str(target)))
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
    return summary


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="export", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


# ================================================================================================ W&B
class WandbLogger:
    """Log each exported folder to a W&B run: the maps as images, ``mesh.glb`` as a 3D object, videos.

    The run is offline unless ``WANDB_API_KEY`` is set (an explicit ``WANDB_MODE`` wins). Its files go
    to ``$WANDB_DIR`` if set, else to ``dir`` (the export folder), passed explicitly because wandb keeps
    process-wide settings from an earlier run.
    """

    def __init__(self, project: str = "unsup3d-export", name: str | None = None, config: dict | None = None,
                 dir: str | os.PathLike | None = None):
        try:
            import wandb
        except ImportError as exc:  # pragma: no cover - wandb is a dependency
            raise RuntimeError("--wandb needs the wandb package (pip install wandb)") from exc
        self.wandb = wandb
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        run_dir = os.environ.get("WANDB_DIR") or (str(dir) if dir is not None else None)
        self.run = wandb.init(project=project, name=name, mode=mode, config=config or {}, job_type="export",
                              dir=run_dir)
        self.step = 0

    def __call__(self, name: str, folder: Path, params: dict[str, Any]) -> None:
        wb = self.wandb
        folder = Path(folder)
        data: dict[str, Any] = {}
        for key in ("input", "canonical_image", "albedo", "shading", "normal", "depth"):
            p = folder / f"{key}.png"
            if p.is_file():
                img = np.asarray(_read_png(p))
                if img.dtype == np.uint16:
                    img = (img // 257).astype(np.uint8)
                data[f"export/{key}"] = wb.Image(img, caption=name)
        if (folder / "mesh.glb").is_file():
            data["export/mesh"] = wb.Object3D(str(folder / "mesh.glb"), caption=name)
        for p in sorted(folder.glob("*.mp4")) + sorted(folder.glob("*.gif")):
            data[f"export/{p.stem}"] = wb.Video(str(p), caption=name, format=p.suffix[1:])
        data["export/ambient"] = params["light"]["ambient"]
        data["export/diffuse"] = params["light"]["diffuse"]
        data["export/yaw_deg"] = params["view"]["ry_deg"]
        self.run.log(data, step=self.step)
        self.step += 1

    def finish(self, summary: ExportSummary | None = None) -> None:
        if summary is not None:
            self.run.summary.update({"ok": len(summary.ok), "failed": len(summary.failed),
                                     "skipped": len(summary.skipped)})
        self.run.finish()


def _read_png(path: Path):
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        return img.copy()


# ================================================================================================= CLI
def _formats(text: str) -> tuple[str, ...]:
    fmts = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    bad = [f for f in fmts if f not in MESH_FORMATS]
    if not fmts or bad:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(MESH_FORMATS)}, got {text!r}")
    return fmts


def _rgb(text: str) -> tuple[int, int, int]:
    named = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), "grey": (128, 128, 128)}
    if text.lower() in named:
        return named[text.lower()]
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or not all(0 <= v <= 255 for v in vals):
        raise argparse.ArgumentTypeError(f"expected R,G,B in 0..255 or white/black/gray, got {text!r}")
    return vals


def _int_at_least(minimum: int, expected: str):
    """argparse ``type`` for an integer ``>= minimum`` (the error says ``expected <expected>``)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = minimum - 1
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return v

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unsup3d-export",
        description="Reconstruct photos with a trained unsup3d model: textured meshes (OBJ/GLB/PLY), depth, "
                    "normal, albedo and shading maps, viewpoint and light (params.json), optional videos. "
                    "Each image gets its own folder <output>/<image stem>/, written atomically.",
        epilog="Exit status: 0 when every image succeeded (or was skipped), 1 when any failed, 2 for a bad "
               "checkpoint, output folder or option.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (searched recursively) or glob patterns (quote them)")
    p.add_argument("-c", "--checkpoint", required=True,
                   help="Lightning checkpoint of this project (.ckpt) or original-release checkpoint (.pth)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a checkpoint that needs full unpickling (can run arbitrary code)")
    g = p.add_argument_group("input")
    g.add_argument("--detect-face", action="store_true",
                   help="crop around the largest human face (OpenCV Haar cascade); images without one fail")
    g.add_argument("--background", type=_rgb, default=(255, 255, 255), metavar="R,G,B",
                   help="colour behind transparent pixels (default white)")
    g = p.add_argument_group("mesh")
    g.add_argument("--formats", type=_formats, default=("obj", "glb"), metavar="LIST",
                   help="mesh formats, comma-separated from obj,glb,ply (default obj,glb)")
    g.add_argument("--texture", choices=TEXTURES, default="canonical",
                   help="mesh texture: shaded canonical image (default) or unlit albedo")
    g.add_argument("--texture-size", type=_positive_int, default=None, metavar="N",
                   help="side of the texture PNG in pixels (default: the model's image size)")
    g.add_argument("--crop-border", type=_non_negative_int, default=0, metavar="N",
                   help="trim N rows/columns on each side of the mesh grid (default 0)")
    g.add_argument("--posed", action="store_true", help="also write the mesh in the input view's pose")
    g = p.add_argument_group("video")
    g.add_argument("--video", action="store_true",
                   help="write turntable (textured and shape-only) and relighting mp4 videos")
    g.add_argument("--gif", action="store_true", help="write the videos as GIFs (implies --video)")
    g.add_argument("--output-size", type=_positive_int, default=256, metavar="N",
                   help="video frame size in pixels (default 256)")
    g.add_argument("--num-frames", type=_positive_int, default=30, metavar="N", help="frames per video (default 30)")
    g.add_argument("--fps", type=float, default=15.0, help="video frame rate (default 15)")
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", type=_positive_int, default=16, metavar="N", help="images per model call (16)")
    g.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N] (default auto)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace existing output folders (default: skip those images)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--wandb", action="store_true",
                   help="log each result to a W&B run (offline unless WANDB_API_KEY is set)")
    g.add_argument("--wandb-project", default="unsup3d-export", help="W&B project (default unsup3d-export)")
    g.add_argument("--wandb-name", default=None, help="W&B run name")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (see ``--help``)."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def fail(msg: str, code: int = 2) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return code

    from unsup3d.checkpoint import CheckpointError, load_model, resolve_device

    try:
        options = ExportOptions(
            formats=args.formats, texture=args.texture, texture_size=args.texture_size,
            crop_border=args.crop_border, posed=args.posed, detect_face=args.detect_face,
            background=args.background, video=args.video or args.gif, gif=args.gif,
            num_frames=args.num_frames, fps=args.fps, output_size=args.output_size,
            batch_size=args.batch_size, overwrite=args.overwrite, progress=not args.no_progress,
        )
        device = resolve_device(args.device)
    except ValueError as exc:
        return fail(str(exc))

    try:
        out_dir = check_output_dir(args.output)
    except OutputDirError as exc:
        return fail(str(exc))
    input_errors: list[tuple[str, str]] = []
    paths = collect_inputs(args.inputs, errors=input_errors, exclude=out_dir)
    if not paths and not input_errors:
        return fail("no input images (the output folder's own files are never used as inputs)", 1)
    try:
        model = load_model(args.checkpoint, trust=args.trust_checkpoint, map_location="cpu")
    except CheckpointError as exc:
        return fail(str(exc))
    size = int(model.hparams.image_size)
    if options.crop_border and size - 2 * options.crop_border < 2:
        return fail(f"--crop-border {options.crop_border} leaves no mesh of a {size}x{size} depth map")
    model = model.to(device).eval()

    logger = None
    if args.wandb:
        try:
            logger = WandbLogger(args.wandb_project, args.wandb_name,
                                 {"checkpoint": str(args.checkpoint), **options.to_json()}, dir=out_dir)
        except Exception as exc:  # noqa: BLE001 - wandb raises its own error types
            return fail(f"could not start a W&B run: {exc}")
    if options.progress:
        print(f"exporting {len(paths)} image(s) with '{args.checkpoint}' on {device} into '{out_dir}'",
              file=sys.stderr)
    summary = ExportSummary()
    try:
        summary = export_images(model, paths, out_dir, options, checkpoint=str(Path(args.checkpoint).resolve()),
                                input_errors=input_errors, logger=logger)
    except KeyboardInterrupt:
        print("interrupted: finished folders are kept, the one in progress was discarded", file=sys.stderr)
        return 130
    finally:
        if logger is not None:
            with contextlib.suppress(Exception):
                logger.finish(summary)
    print(summary.report(), file=sys.stderr if summary.failed else sys.stdout)
    return summary.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
