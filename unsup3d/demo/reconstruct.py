"""The demo's work, without any UI: one photo reconstructed into a result folder, and the relit and posed
views re-rendered from its factors. The page (:mod:`.app`) and its API call these functions.

A reconstruction is an export of one photo (:mod:`unsup3d.export`: the same loading, crop, model pass,
meshes, maps, videos and ``params.json``, see :mod:`unsup3d.export.item` for the files) plus a zip of
the meshes and maps, written atomically into its own folder ``<work_dir>/<stem>-<id>/``. Its canonical
factors are kept as a :class:`Scene`, from which :func:`relit_view` and :func:`posed_view` render single
frames through the model's renderer (:func:`unsup3d.visualize.relight_images`,
:func:`unsup3d.visualize.render_views`).
"""

from __future__ import annotations

import io
import math
import os
import re
import shutil
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unsup3d.core import core_of
from unsup3d.data.crops import model_batch, prepare_input
from unsup3d.export import ExportOptions, export_factors
from unsup3d.files.atomic import atomic_dir, atomic_save_bytes
from unsup3d.files.video import VIDEO_EXTENSIONS
from unsup3d.visualize import relight_images, render_views, to_uint8

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAP_FILES",
    "Reconstruction",
    "Scene",
    "demo_export_options",
    "posed_view",
    "prune_results",
    "reconstruct",
    "relit_view",
]

#: Largest photo the demo accepts, in pixels (checked from the header, before decoding): 40 megapixels.
DEFAULT_MAX_PIXELS = 40_000_000
#: The maps of a reconstruction shown on the page, as written by the export (``<name>.png``).
MAP_FILES = ("input", "albedo", "depth", "normal", "shading", "canonical_image")


def demo_export_options(**changes: Any) -> ExportOptions:
    """The demo's :class:`~unsup3d.export.ExportOptions`: OBJ and GLB, shaded canonical texture, the
    textured turntable (24 frames of 256 px at 12 fps), no progress bar; ``changes`` override any field."""
    settings: dict[str, Any] = dict(formats=("obj", "glb"), video=True, videos=("turntable",), num_frames=24,
                                    fps=12.0, output_size=256, batch_size=1, progress=False)
    settings.update(changes)
    return ExportOptions(**settings)


@dataclass
class Scene:
    """The canonical factors of one reconstruction, batch of one, float32 on the CPU: what the relit and
    posed views are rendered from.

    Attributes:
        canon_depth: ``1 x H x W`` canonical depth.
        canon_albedo: ``1 x 3 x H x W`` canonical albedo in ``[-1, 1]``.
        texture: ``1 x 3 x H x W`` in ``[0, 1]``: the mesh texture (the shaded canonical image, or the
            albedo with ``ExportOptions.texture="albedo"``).
        light_ambient, light_diffuse: ``1`` light strengths.
        light_dxdy: ``1 x 2`` the predicted light direction as netL's ``(dx, dy)``
            (``direction = normalize(dx, dy, 1)``).
        view: ``1 x 6`` the predicted viewpoint ``(rx, ry, rz, tx, ty, tz)``, radians.
    """

    canon_depth: torch.Tensor
    canon_albedo: torch.Tensor
    texture: torch.Tensor
    light_ambient: torch.Tensor
    light_diffuse: torch.Tensor
    light_dxdy: torch.Tensor
    view: torch.Tensor

    @classmethod
    def from_factors(cls, factors, index: int = 0, texture: str = "canonical") -> Scene:
        """Item ``index`` of a batch of :class:`~unsup3d.factors.Factors`; ``texture`` as
        :attr:`ExportOptions.texture <unsup3d.export.ExportOptions>`."""
        i = slice(index, index + 1)

        def cpu(t: torch.Tensor) -> torch.Tensor:
            return t[i].detach().float().cpu().clone()

        tex = factors.canon_albedo if texture == "albedo" else factors.canon_image
        direction = cpu(factors.light_direction)  # 1 x 3, (dx, dy, 1) / norm
        return cls(
            canon_depth=cpu(factors.canon_depth),
            canon_albedo=cpu(factors.canon_albedo),
            texture=(cpu(tex).clamp(-1, 1) / 2 + 0.5),
            light_ambient=cpu(factors.light_ambient),
            light_diffuse=cpu(factors.light_diffuse),
            light_dxdy=direction[:, :2] / direction[:, 2:],
            view=cpu(factors.view),
        )

    @property
    def light(self) -> tuple[float, float]:
        """The predicted light ``(dx, dy)``."""
        dx, dy = (float(v) for v in self.light_dxdy[0])
        return dx, dy

    @property
    def yaw_deg(self) -> float:
        """The predicted yaw (rotation about the vertical axis, ``ry``) in degrees."""
        return math.degrees(float(self.view[0, 1]))


@dataclass
class Reconstruction:
    """One photo reconstructed by :func:`reconstruct`.

    Attributes:
        name: the result folder's name, ``<stem>-<id>``.
        folder: the result folder (the export's files, the zip).
        params: the export's ``params.json`` content.
        scene: the canonical factors, for :func:`relit_view` and :func:`posed_view`.
        glb: ``mesh.glb``, the textured mesh as binary glTF.
        zip: ``<name>.zip``: the OBJ + MTL + texture, the GLB, the maps, ``depth.npy`` and ``params.json``.
        maps: each of :data:`MAP_FILES` -> its PNG (``depth.png`` is 16-bit, nearer is brighter).
        videos: video stem (``turntable``, ``turntable_shape``, ``relight``) -> file; empty without videos.
    """

    name: str
    folder: Path
    params: dict[str, Any]
    scene: Scene
    glb: Path
    zip: Path
    maps: dict[str, Path] = field(default_factory=dict)
    videos: dict[str, Path] = field(default_factory=dict)


def _result_name(photo: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", photo.stem).strip("._")[:40] or "photo"
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def _zip_bytes(folder: Path, arcname: str) -> bytes:
    """The files of ``folder`` (not its videos) zipped under ``arcname/``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() not in VIDEO_EXTENSIONS:
                zf.write(p, f"{arcname}/{p.name}")
    return buf.getvalue()


def reconstruct(
    model,
    photo: str | os.PathLike,
    work_dir: str | os.PathLike,
    *,
    detect_face: bool = False,
    options: ExportOptions | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    checkpoint: str | None = None,
) -> Reconstruction:
    """Reconstruct one photo: load and crop it, run the model, write the export's files and a zip.

    Args:
        model: an :class:`~unsup3d.core.Unsup3DCore` or the training module holding one, in eval mode (run on its device; safe to call from
            several threads at once).
        photo: an image file in any format the exporter reads (:func:`unsup3d.files.images.load_image`).
        work_dir: where the result folder ``<stem>-<id>`` is created (atomically: it appears complete
            or not at all).
        detect_face: crop around the largest human face instead of the centre square.
        options: what to write (default :func:`demo_export_options`; ``options.detect_face`` is ignored
            for ``detect_face``).
        max_pixels: larger photos are refused from their header, before decoding (None: no limit of the
            demo's own; Pillow's decompression-bomb guard, twice ``Image.MAX_IMAGE_PIXELS``, still applies).
        checkpoint: recorded in ``params.json``.

    Returns:
        The :class:`Reconstruction`.

    Raises:
        unsup3d.files.images.ImageLoadError: not an image, corrupt or truncated, too small or too large (the
            message names the file and the reason).
        unsup3d.data.crops.FaceNotFoundError: ``detect_face`` and no face was found.
    """
    options = options or demo_export_options()
    photo = Path(photo)
    core = core_of(model)
    size = core.image_size
    prep = prepare_input(photo, size, detect_face, options.background, max_pixels=max_pixels)
    device = next(core.parameters()).device
    with torch.inference_mode():
        factors = core(model_batch([prep.image], device), reconstruct=False)
    name = _result_name(photo)
    target = Path(work_dir) / name
    info = {"input": {**prep.record(photo, name), "original_name": photo.name}, "checkpoint": checkpoint}
    with atomic_dir(target, durable=False) as tmp:
        params = export_factors(factors, 0, tmp, options, model, info)
        atomic_save_bytes(tmp / f"{name}.zip", _zip_bytes(tmp, name), durable=False)
    videos = {p.stem: p for p in sorted(target.iterdir()) if p.suffix.lower() in VIDEO_EXTENSIONS}
    return Reconstruction(
        name=name, folder=target, params=params, scene=Scene.from_factors(factors, 0, options.texture),
        glb=target / "mesh.glb", zip=target / f"{name}.zip",
        maps={m: target / f"{m}.png" for m in MAP_FILES}, videos=videos,
    )


def relit_view(renderer, scene: Scene, dx: float, dy: float, image_size: int = 256) -> np.ndarray:
    """The canonical face relit from ``(dx, dy)`` (light direction ``normalize(dx, dy, 1)``, netL's units;
    ``scene.light`` gives the predicted image), seen from the canonical view, as the model shades it.

    Returns:
        ``image_size x image_size x 3`` uint8 RGB.
    """
    dxdy = torch.tensor([[float(dx), float(dy)]])  # T=1 x 2
    frames = relight_images(renderer, scene.canon_albedo, scene.canon_depth, scene.light_ambient,
                            scene.light_diffuse, dxdy, image_size=int(image_size))  # 1 x 1 x 3 x S' x S'
    return to_uint8(frames[0, 0])


def posed_view(renderer, scene: Scene, yaw_deg: float, image_size: int = 256) -> np.ndarray:
    """The textured mesh in the predicted view with its yaw (``ry``) replaced by ``yaw_deg`` degrees
    (``scene.yaw_deg`` gives the input's own pose).

    Returns:
        ``image_size x image_size x 3`` uint8 RGB.
    """
    view = scene.view.clone()  # 1 x 6 = T x 6 (T = 1 view)
    view[:, 1] = math.radians(float(yaw_deg))
    frames = render_views(renderer, scene.texture, scene.canon_depth, view, image_size=int(image_size))
    return to_uint8(frames[0, 0])


def prune_results(work_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete the oldest result folders of ``work_dir`` beyond the newest ``keep`` (by modification time;
    hidden folders, such as results still being written, are left alone). Returns the deleted folders."""
    folder = Path(work_dir)
    if keep < 0 or not folder.is_dir():
        return []
    done = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    done.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    removed = done[keep:]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed
