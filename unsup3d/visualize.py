"""Visualisations of the model's factors: image grids, the symmetry line, turntables, relighting, videos.

Pure functions: tensors in, tensors (or numpy arrays) out; nothing here keeps state. ``B`` is the batch
size, ``T`` the number of video frames, ``H x W`` the model's image size. Unless said otherwise images
returned here are in ``[0, 1]`` (the model's factors are in ``[-1, 1]``, see :mod:`unsup3d.factors`).
The renderer conventions (viewpoint ``(rx, ry, rz, tx, ty, tz)``, ``R = Rz Ry Rx``) are those of
:mod:`unsup3d.renderer.camera`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unsup3d.depth_encoding import depth_to_unit
from unsup3d.factors import Factors
from unsup3d.io import atomic_save_bytes
from unsup3d.renderer import Renderer, shading

__all__ = [
    "VIDEO_EXTENSIONS",
    "confidence_to_image",
    "depth_to_image",
    "factor_panels",
    "frames_to_grids",
    "make_grid",
    "normal_shaded",
    "normal_to_image",
    "relight_frames",
    "symmetry_line",
    "to_uint8",
    "turntable_frames",
    "write_video",
    "yaw_views",
]

VIDEO_EXTENSIONS = (".mp4", ".gif")

# Light of the shape-only renders: from the upper left and mostly frontal. In the renderer's frame
# (y down, normals of a surface facing the camera are (0, 0, 1)), n . l > 0 lights a surface, so
# positive dx, dy light the left and top sides.
_SHAPE_LIGHT = (0.4, 0.4, 1.0)


# ---------------------------------------------------------------------------------------------- grids
def make_grid(
    images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 0.0
) -> torch.Tensor:
    """Tile a batch of images into one image, like ``torchvision.utils.make_grid``.

    Args:
        images: ``B x C x H x W`` (a single ``C x H x W`` image is treated as ``B = 1``).
        nrow: images per row; default ``ceil(sqrt(B))`` (a square-ish grid).
        padding: pixels between images and around the border.
        pad_value: value of the padding.

    Returns:
        ``C x H' x W'`` with ``H' = rows (H + padding) + padding``, ``W' = cols (W + padding) + padding``,
        ``cols = min(nrow, B)``, ``rows = ceil(B / cols)``; image ``i`` is at row ``i // cols``, column
        ``i % cols``. Unlike torchvision, channels are kept as they are (1-channel stays 1-channel)
        and a single image is padded too.
    """
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape B x C x H x W, got {tuple(images.shape)}")
    b, c, h, w = images.shape
    if b == 0:
        raise ValueError("make_grid needs at least one image")
    if padding < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    nrow = math.ceil(math.sqrt(b)) if nrow is None else int(nrow)
    if nrow < 1:
        raise ValueError(f"nrow must be positive, got {nrow}")
    cols = min(nrow, b)
    rows = math.ceil(b / cols)
    grid = images.new_full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value)
    for i in range(b):
        y = (i // cols) * (h + padding) + padding
        x = (i % cols) * (w + padding) + padding
        grid[:, y:y + h, x:x + w] = images[i]
    return grid


def frames_to_grids(
    frames: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 0.0
) -> torch.Tensor:
    """Tile the batch of every frame: ``T x B x C x H x W`` -> ``T x C x H' x W'`` (see :func:`make_grid`)."""
    if frames.ndim != 5:
        raise ValueError(f"expected frames of shape T x B x C x H x W, got {tuple(frames.shape)}")
    return torch.stack([make_grid(f, nrow=nrow, padding=padding, pad_value=pad_value) for f in frames])


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """Convert images in ``[0, 1]`` to channel-last 8-bit arrays (values are clipped, then rounded).

    Args:
        image: ``C x H x W`` or ``B x C x H x W`` float tensor in ``[0, 1]``.

    Returns:
        numpy ``H x W x C`` (or ``B x H x W x C``) ``uint8``.
    """
    if image.ndim not in (3, 4):
        raise ValueError(f"expected C x H x W or B x C x H x W, got {tuple(image.shape)}")
    x = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    x = x.movedim(-3, -1)
    return x.cpu().numpy()


# ---------------------------------------------------------------------------------------- factor maps
def _renderer_of(model_or_renderer) -> Renderer:
    if isinstance(model_or_renderer, Renderer):
        return model_or_renderer
    renderer = getattr(model_or_renderer, "renderer", None)
    if renderer is None:
        raise TypeError(f"expected a Renderer or a model with a .renderer, got {type(model_or_renderer).__name__}")
    return renderer


def symmetry_line(model_or_renderer, factors: Factors) -> torch.Tensor:
    """The input image with the canonical symmetry axis drawn in green, as in the original method.

    A canonical map with ones on the columns ``w//2 - 1 : w//2 + 1`` is warped into the input view with
    the reconstructed depth (``grid_sample(axis, inverse_warp_grid(recon_depth, view))``), masked by
    ``recon_mask`` and blended: ``0.5 axis green + (1 - 0.5 axis) input`` with ``green = (-1, 1, -1)``.

    Args:
        model_or_renderer: :class:`~unsup3d.renderer.Renderer` or a model with ``.renderer``.
        factors: the model's output for ``B`` images of size ``H x W``.

    Returns:
        ``B x 3 x H x W`` in ``[0, 1]``.
    """
    renderer = _renderer_of(model_or_renderer)
    x = factors.input.detach()
    b, _, h, w = x.shape
    axis = x.new_zeros(b, 1, h, w)
    axis[..., w // 2 - 1:w // 2 + 1] = 1
    grid = renderer.inverse_warp_grid(factors.recon_depth.detach(), factors.view.detach())
    axis = F.grid_sample(axis, grid, mode="bilinear", align_corners=True) * factors.recon_mask.detach().to(x)
    green = x.new_tensor([-1.0, 1.0, -1.0]).view(1, 3, 1, 1)
    out = 0.5 * axis * green + (1 - 0.5 * axis) * x
    return (out / 2 + 0.5).clamp(0, 1)


def depth_to_image(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Depth as a grey image, nearer is brighter (:func:`unsup3d.depth_encoding.depth_to_unit`, the
    rule of the depth PNGs): ``clip((max_depth - d) / (max_depth - min_depth), 0, 1)``.

    Args:
        depth: ``B x H x W`` (or ``B x 1 x H x W``).

    Returns:
        ``B x 1 x H x W`` in ``[0, 1]``.
    """
    if depth.ndim == 3:
        depth = depth.unsqueeze(1)
    if depth.ndim != 4 or depth.shape[1] != 1:
        raise ValueError(f"expected depth of shape B x H x W, got {tuple(depth.shape)}")
    return depth_to_unit(depth.detach(), min_depth, max_depth)


def normal_to_image(normals: torch.Tensor) -> torch.Tensor:
    """Normal map as colours ``(n + 1) / 2``.

    Args:
        normals: ``B x H x W x 3`` unit normals.

    Returns:
        ``B x 3 x H x W`` in ``[0, 1]``.
    """
    if normals.ndim != 4 or normals.shape[-1] != 3:
        raise ValueError(f"expected normals of shape B x H x W x 3, got {tuple(normals.shape)}")
    return (normals.detach().permute(0, 3, 1, 2) / 2 + 0.5).clamp(0, 1)


def confidence_to_image(sigma: torch.Tensor) -> torch.Tensor:
    """Confidence ``1 / (1 + sigma)`` of a predicted uncertainty map (bright = confident).

    Args:
        sigma: ``B x C x h x w`` (any shape), positive.

    Returns:
        Tensor of the same shape in ``(0, 1]``.
    """
    return 1.0 / (1.0 + sigma.detach().clamp_min(0))


def factor_panels(model, factors: Factors, max_items: int = 16, nrow: int | None = None) -> dict[str, torch.Tensor]:
    """Grids of every factor of the first ``max_items`` images, for logging.

    Args:
        model: the :class:`~unsup3d.model.Unsup3D` model (or its renderer) that produced ``factors``.
        factors: forward output for ``B`` images.
        max_items: at most this many images per grid.
        nrow: images per grid row (default ``ceil(sqrt(n))``).

    Returns:
        Ordered dict name -> ``C x H' x W'`` grid in ``[0, 1]`` (``C`` is 3 or 1, see
        :func:`make_grid`): ``input``, ``input_symline``, ``canon_albedo``, ``canon_image``,
        ``canon_depth``, ``canon_normal``, ``canon_diffuse_shading``, ``recon_image``,
        ``recon_image_flip`` (with the flip branch), ``conf_map_l1``, ``conf_map_l1_flip``,
        ``conf_map_percl``, ``conf_map_percl_flip`` (with confidence maps; the perceptual ones are
        ``H/4 x W/4`` per image), ``recon_depth``, ``recon_normal``.
    """
    renderer = _renderer_of(model)
    n = max(1, int(max_items))
    with torch.no_grad():
        f = factors.select(slice(0, n)).detach()
        lo, hi = renderer.min_depth, renderer.max_depth

        def grid(x: torch.Tensor) -> torch.Tensor:
            return make_grid(x.float(), nrow=nrow)

        panels: dict[str, torch.Tensor] = {
            "input": grid((f.input / 2 + 0.5).clamp(0, 1)),
            "input_symline": grid(symmetry_line(renderer, f)),
            "canon_albedo": grid((f.canon_albedo / 2 + 0.5).clamp(0, 1)),
            "canon_image": grid((f.canon_image / 2 + 0.5).clamp(0, 1)),
            "canon_depth": grid(depth_to_image(f.canon_depth, lo, hi)),
            "canon_normal": grid(normal_to_image(f.canon_normal)),
            "canon_diffuse_shading": grid(f.canon_diffuse_shading.clamp(0, 1)),
            "recon_image": grid((f.recon_image / 2 + 0.5).clamp(0, 1)),
        }
        if f.recon_image_flip is not None:
            panels["recon_image_flip"] = grid((f.recon_image_flip / 2 + 0.5).clamp(0, 1))
        for name, sigma in (("conf_map_l1", f.conf_sigma_l1), ("conf_map_percl", f.conf_sigma_percl)):
            if sigma is None:
                continue
            panels[name] = grid(confidence_to_image(sigma[:, :1]))
            if sigma.shape[1] > 1:
                panels[f"{name}_flip"] = grid(confidence_to_image(sigma[:, 1:2]))
        panels["recon_depth"] = grid(depth_to_image(f.recon_depth, lo, hi))
        panels["recon_normal"] = grid(normal_to_image(f.recon_normal))
    return panels


# -------------------------------------------------------------------------------- turntable / relight
def yaw_views(
    num_frames: int,
    max_yaw_deg: float = 90.0,
    pitch_deg: float = -6.0,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Viewpoints of a yaw sweep from ``-max_yaw_deg`` to ``+max_yaw_deg`` at a fixed pitch.

    The original's ``render_yaw`` first tilted the mesh by ``-0.1 * 60`` degrees about x
    (``v_before``), then swept the yaw over ``[-90, 90]`` degrees; with ``R = Rz Ry Rx`` (rotations
    about the same centre) the view ``(pitch, yaw, 0, 0, 0, 0)`` is exactly that composition.

    Args:
        num_frames: ``T`` (1 gives yaw 0).

    Returns:
        ``T x 6`` viewpoints ``(pitch, yaw, 0, 0, 0, 0)`` in radians; yaw increases with the frame
        index, and the middle frame of an odd ``T`` has yaw 0.
    """
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    t = int(num_frames)
    views = torch.zeros(t, 6, device=device, dtype=dtype)
    if t > 1:
        views[:, 1] = torch.linspace(-max_yaw_deg, max_yaw_deg, t, device=device, dtype=dtype) * (math.pi / 180)
    views[:, 0] = pitch_deg * math.pi / 180
    return views


def _render_many(
    renderer: Renderer,
    texture: torch.Tensor,
    canon_depth: torch.Tensor,
    views: torch.Tensor,
    image_size,
    background,
    max_batch: int,
) -> torch.Tensor:
    """Render ``texture[i]`` (``B x C x H x W``) on ``canon_depth[i]`` for every view ``views[t]``
    (``T x B x 6``), ``max(1, max_batch // B)`` frames per renderer call. Returns ``T x B x C x H' x W'``."""
    t, b = views.shape[:2]
    per_call = max(1, int(max_batch) // max(b, 1))
    out = []
    for s in range(0, t, per_call):
        v = views[s:s + per_call]
        k = v.shape[0]
        img = renderer.render_view(
            texture.repeat(k, 1, 1, 1), canon_depth.repeat(k, 1, 1), v.reshape(k * b, 6),
            background=background, image_size=image_size,
        )
        out.append(img.view(k, b, *img.shape[1:]))
    return torch.cat(out, 0)


def turntable_frames(
    renderer: Renderer,
    texture: torch.Tensor,
    canon_depth: torch.Tensor,
    num_frames: int = 15,
    max_yaw_deg: float = 90.0,
    pitch_deg: float = -6.0,
    image_size: int | tuple[int, int] | None = None,
    background: float | torch.Tensor = 0.0,
    max_batch: int = 256,
) -> torch.Tensor:
    """Render the textured canonical meshes rotating about the vertical axis (see :func:`yaw_views`).

    Args:
        renderer: the model's renderer.
        texture: ``B x C x H x W`` texture in the canonical frame (e.g. the canonical image mapped to
            ``[0, 1]``, or :func:`normal_shaded`).
        canon_depth: ``B x H x W`` canonical depth.
        num_frames: ``T``.
        max_yaw_deg, pitch_deg: sweep range and fixed pitch (degrees).
        image_size: output size ``S'`` or ``(H', W')``; default ``H x W``.
        background: value of uncovered pixels (float or tensor broadcastable to ``N x C x H' x W'``).
        max_batch: at most this many images per renderer call (the frames are batched).

    Returns:
        ``T x B x C x H' x W'``, values from ``texture`` and ``background``.
    """
    if canon_depth.ndim != 3 or texture.ndim != 4 or texture.shape[0] != canon_depth.shape[0]:
        raise ValueError(f"expected texture B x C x H x W and canon_depth B x H x W, got "
                         f"{tuple(texture.shape)} and {tuple(canon_depth.shape)}")
    b = texture.shape[0]
    views = yaw_views(num_frames, max_yaw_deg, pitch_deg, device=canon_depth.device, dtype=canon_depth.dtype)
    views = views.unsqueeze(1).expand(-1, b, -1)
    with torch.no_grad():
        return _render_many(renderer, texture.detach(), canon_depth.detach(), views, image_size, background,
                            max_batch)


def relight_frames(
    renderer: Renderer,
    albedo: torch.Tensor,
    canon_depth: torch.Tensor,
    ambient: torch.Tensor,
    diffuse: torch.Tensor,
    num_frames: int = 30,
    radius: float = 0.8,
    view: torch.Tensor | None = None,
    image_size: int | tuple[int, int] | None = None,
    background: float | torch.Tensor = 0.0,
    max_batch: int = 256,
) -> torch.Tensor:
    """Relight the canonical albedo with a light moving on a circle.

    The light direction of frame ``t`` is ``(r cos a_t, r sin a_t, 1)`` normalised,
    ``a_t = 2 pi t / T``, and the shading is the model's:
    ``img = (albedo / 2 + 0.5) (ambient + diffuse max(0, n . l))`` clipped to ``[0, 1]``, with the
    normals ``renderer.normals(canon_depth)``.

    Args:
        renderer: the model's renderer.
        albedo: ``B x 3 x H x W`` canonical albedo in ``[-1, 1]``.
        canon_depth: ``B x H x W``.
        ambient, diffuse: ``B`` light strengths (``Factors.light_ambient``, ``light_diffuse``).
        num_frames: ``T``.
        radius: radius of the circle of ``(dx, dy)``.
        view: optional ``B x 6`` viewpoint: render the relit canonical image into it (e.g.
            ``Factors.view`` to relight the input as seen). When ``view`` is None and ``image_size`` is
            None, the canonical images are returned as they are; with only ``image_size``, they are
            rendered from the canonical view at that size.
        image_size, background, max_batch: as in :func:`turntable_frames` (used when rendering).

    Returns:
        ``T x B x 3 x H' x W'`` in ``[0, 1]`` (``H' x W' = H x W`` unless rendered at ``image_size``).
    """
    if albedo.ndim != 4 or canon_depth.ndim != 3 or albedo.shape[0] != canon_depth.shape[0]:
        raise ValueError(f"expected albedo B x 3 x H x W and canon_depth B x H x W, got "
                         f"{tuple(albedo.shape)} and {tuple(canon_depth.shape)}")
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    b = albedo.shape[0]
    t = int(num_frames)
    with torch.no_grad():
        depth = canon_depth.detach()
        normal = renderer.normals(depth)  # B x H x W x 3
        ang = torch.arange(t, device=depth.device, dtype=depth.dtype) * (2 * math.pi / t)
        light = shading.light_direction(torch.stack([radius * ang.cos(), radius * ang.sin()], -1))  # T x 3
        lambert = shading.lambertian(normal.unsqueeze(0), light.unsqueeze(1))  # T x B x H x W
        shade_map = shading.shading_map(ambient.detach().view(1, b), diffuse.detach().view(1, b), lambert)
        frames = shading.shade((albedo.detach() / 2 + 0.5).unsqueeze(0), shade_map).clamp(0, 1)
        if view is None and image_size is None:
            return frames
        views = depth.new_zeros(b, 6) if view is None else view.detach()
        out = []
        for i in range(t):  # each frame has its own texture
            out.append(_render_many(renderer, frames[i], depth, views.unsqueeze(0), image_size, background,
                                    max_batch))
        return torch.cat(out, 0).clamp(0, 1)


def normal_shaded(
    renderer: Renderer,
    canon_depth: torch.Tensor,
    mode: str = "lambertian",
    light: tuple[float, float, float] = _SHAPE_LIGHT,
    ambient: float = 0.25,
    diffuse: float = 0.75,
) -> torch.Tensor:
    """A shape-only texture of the canonical depth, for the untextured turntable.

    Args:
        renderer: the model's renderer.
        canon_depth: ``B x H x W``.
        mode: ``"lambertian"``: grey ``ambient + diffuse max(0, n . l)`` with the fixed light ``light``
            (normalised; the default lights from the upper left); ``"normal"``: the normal map
            ``(n + 1) / 2`` (what the original's turntable used).

    Returns:
        ``B x 3 x H x W`` in ``[0, 1]``.
    """
    with torch.no_grad():
        normal = renderer.normals(canon_depth.detach())
        if mode == "normal":
            return normal_to_image(normal)
        if mode != "lambertian":
            raise ValueError(f"mode must be 'lambertian' or 'normal', got {mode!r}")
        l_dir = normal.new_tensor(light)
        l_dir = l_dir / l_dir.norm()
        grey = shading.shading_map(ambient, diffuse, shading.lambertian(normal, l_dir)).clamp(0, 1)  # B x H x W
        return grey.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


# ------------------------------------------------------------------------------------------ videos
def _frames_uint8(frames) -> np.ndarray:
    """``T x H x W x C`` uint8 or ``T x C x H x W`` float in [0, 1] (tensor or array) -> ``T x H x W x 3`` uint8."""
    if torch.is_tensor(frames):
        frames = frames.detach().cpu()
        frames = frames.numpy() if frames.dtype == torch.uint8 else frames.float().numpy()
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[0] < 1:
        raise ValueError(f"expected video frames T x H x W x 3 (uint8) or T x 3 x H x W (float), got {arr.shape}")
    chans = (1, 3, 4)
    if arr.dtype == np.uint8:
        channel_last = arr.shape[-1] in chans or arr.shape[1] not in chans
    else:
        channel_last = arr.shape[1] not in chans and arr.shape[-1] in chans
    if not channel_last:
        arr = np.moveaxis(arr, 1, -1)
    if arr.shape[-1] not in chans:
        raise ValueError(f"video frames must have 1, 3 or 4 channels, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def _require_ffmpeg() -> None:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # ImportError, or RuntimeError when no binary is found
        raise RuntimeError(
            f"writing .mp4 videos needs ffmpeg, which is not available ({type(exc).__name__}: {exc}). "
            "Install it with `pip install imageio-ffmpeg` (or point IMAGEIO_FFMPEG_EXE at an ffmpeg "
            "binary), or write a .gif instead."
        ) from exc


def write_video(path: str | os.PathLike, frames, fps: float = 10, *, durable: bool = True) -> Path:
    """Write a video atomically: ``.mp4`` (H.264 via imageio-ffmpeg) or ``.gif`` (Pillow).

    The video is encoded in memory, then written to a temporary sibling file and moved onto ``path``
    (:func:`unsup3d.io.atomic_save_bytes`), so an interrupted run never leaves a broken video.
    Odd frame sizes are padded (edge pixels repeated) to even sizes for H.264's ``yuv420p``.

    Args:
        path: target file, ``.mp4`` or ``.gif`` (parent folders are created).
        frames: ``T x H x W x 3`` uint8, or ``T x 3 x H x W`` float in ``[0, 1]`` (tensor or array;
            1-channel frames are shown grey).
        fps: frames per second.
        durable: see :func:`unsup3d.io.atomic_write`.

    Returns:
        The path.

    Raises:
        RuntimeError: ``.mp4`` requested but ffmpeg is unavailable (the message says what to install).
        ValueError: unsupported extension or frame layout.
    """
    import imageio.v3 as iio

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in VIDEO_EXTENSIONS:
        raise ValueError(f"unsupported video extension {ext!r} in {str(path)!r}; use one of {VIDEO_EXTENSIONS}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    arr = _frames_uint8(frames)
    if ext == ".gif":
        data = iio.imwrite("<bytes>", arr, extension=".gif", plugin="pillow", duration=1000.0 / fps, loop=0)
    else:
        _require_ffmpeg()
        _, h, w, _ = arr.shape
        if h % 2 or w % 2:
            arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        data = iio.imwrite(
            "<bytes>", arr, extension=".mp4", plugin="FFMPEG", fps=fps, codec="libx264",
            macro_block_size=1, pixelformat="yuv420p", quality=8, ffmpeg_log_level="error",
        )
        if not data:
            raise RuntimeError(f"ffmpeg produced no data for {str(path)!r} (frames {arr.shape})")
    atomic_save_bytes(path, data, durable=durable)
    return path
